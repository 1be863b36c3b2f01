//go:build linux

package gre

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

var (
	benchRuns  = flag.Int("gre.runs", 3, "BenchmarkIperf3: rounds over the paths")
	benchSecs  = flag.Int("gre.secs", 5, "BenchmarkIperf3: seconds per iperf3 run")
	benchPaths = flag.String("gre.paths", "veth,gre,wireguard,gre-kernel", "BenchmarkIperf3: paths to measure, for profiling one")
	benchNAPI  = flag.Bool("gre.napi", true, "BenchmarkIperf3: give the WAN veths a NIC's receive path (threaded NAPI with GRO)")
)

// iperfResult is what one iperf3 run reports.
type iperfResult struct {
	bps         float64
	retransmits int
	cpuSecs     float64 // iperf3 client and server CPU (their own report)
}

// iperf3 runs a TCP test from client to server's address for secs seconds.
func iperf3(ctx context.Context, client *netlab.NS, server string, secs int) (iperfResult, error) {
	out, err := client.Exec(ctx, "iperf3", "-c", server, "-t", fmt.Sprint(secs), "-J", "--connect-timeout", "2000")
	if err != nil {
		return iperfResult{}, err
	}
	var r struct {
		End struct {
			SumSent     struct{ Retransmits int } `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Seconds       float64 `json:"seconds"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 output: %w", err)
	}
	e := r.End
	return iperfResult{
		bps:         e.SumReceived.BitsPerSecond,
		retransmits: e.SumSent.Retransmits,
		cpuSecs:     (e.CPU.Host + e.CPU.Remote) / 100 * e.SumReceived.Seconds,
	}, nil
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIperf3 measures iperf3 TCP between two namespaces joined by a
// veth (the "WAN") over three paths in the same run, alternating:
//
//   - veth: no tunnel, the topology's ceiling;
//   - gre: one userspace GRE tunnel (this package), both ends in this
//     process;
//   - wireguard: edgegw's WireGuard device (tunnel/wireguard, wireguard-go
//     with its TUN offloads), both ends in this process;
//   - gre-kernel: the ip_gre backend, where the kernel has it (the
//     appliance image), in a second pair of namespaces of the same shape.
//
// With -gre.napi (the default) the WAN veths receive like a NIC: through
// threaded NAPI with GRO, as a real interface's interrupt path does, instead
// of veth's default of processing each packet in the sender's system call.
// That is what lets the kernel coalesce GRE segments before the raw socket
// (see gro.go); it applies to every path alike.
//
// Per path it reports the median Gbit/s, the CPU this process (the tunnel
// ends) used per Gbit, and the CPU of the whole path per Gbit: this process,
// the NAPI threads of the two veths and iperf3's own client and server.
// It runs only when asked for; on an idle box:
//
//	go test -run '^$' -bench Iperf3 -benchtime 1x ./tunnel/gre/
func BenchmarkIperf3(b *testing.B) {
	testkit.NeedTool(b, "iperf3", "iperf3")
	p := newPair(b)
	// The kernel's ip_gre, where there is one, in a second pair of the
	// same shape: in one namespace it would take the userspace tunnel's
	// packets too.
	pk := newPair(b)
	var napi []int
	if *benchNAPI {
		napi = nicReceive(b, p.a, p.b, pk.a, pk.b)
	}
	ta := open(b, p.a, cfg("bgre-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31"), nil)
	tb := open(b, p.b, cfg("bgre-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31"), nil)
	wireGuardPair(b, p)
	type path struct {
		name   string
		client *netlab.NS
		addr   string
	}
	all := []path{{"veth", p.a, "192.0.2.2"}, {"gre", p.a, "10.200.1.1"}, {"wireguard", p.a, "10.202.0.2"}}
	if err := kernelPair(b, pk); err == nil {
		all = append(all, path{"gre-kernel", pk.a, "10.200.1.1"})
	} else {
		b.Logf("no gre-kernel path: %v", err)
	}
	for _, srvNS := range []*netlab.NS{p.b, pk.b} {
		srv, err := srvNS.Start("iperf3", "-s")
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Stop()
	}
	var paths []path
	for _, path := range all {
		if contains(strings.Split(*benchPaths, ","), path.name) {
			paths = append(paths, path)
		}
	}
	for _, path := range paths {
		netlab.Eventually(b, 10*time.Second, path.name+" path up", func() error { return path.client.Ping(path.addr) })
	}
	results := map[string][]float64{}
	cpu := map[string][]float64{}
	pathCPU := map[string][]float64{}
	retr := map[string]int{}
	secs := *benchSecs
	for range b.N {
		for range *benchRuns {
			for _, path := range paths {
				c0, k0 := cpuSelf(), threadsCPU(napi)
				var r iperfResult
				var err error
				for try := 0; try < 3; try++ { // the server may not listen yet
					if r, err = iperf3(b.Context(), path.client, path.addr, secs); err == nil {
						break
					}
					time.Sleep(300 * time.Millisecond)
				}
				if err != nil {
					b.Fatal(err)
				}
				self := (cpuSelf() - c0).Seconds()
				gbit := r.bps * float64(secs) / 1e9
				results[path.name] = append(results[path.name], r.bps/1e9)
				cpu[path.name] = append(cpu[path.name], self/gbit)
				pathCPU[path.name] = append(pathCPU[path.name], (self+threadsCPU(napi)-k0+r.cpuSecs)/gbit)
				retr[path.name] += r.retransmits
			}
		}
	}
	for _, path := range paths {
		name := path.name
		if len(results[name]) == 0 {
			continue
		}
		b.ReportMetric(median(results[name]), name+"-Gbit/s")
		b.ReportMetric(median(cpu[name]), name+"-cpu-s/Gbit")
		b.ReportMetric(median(pathCPU[name]), name+"-path-cpu-s/Gbit")
		b.ReportMetric(float64(retr[name]), name+"-retransmits")
		b.Logf("%s: runs %.2f Gbit/s, tunnel-process CPU %.3f s/Gbit, path CPU %.3f s/Gbit, %d retransmits",
			name, results[name], cpu[name], pathCPU[name], retr[name])
	}
	if len(results["gre"]) > 0 && len(results["wireguard"]) > 0 {
		wg := median(results["wireguard"])
		b.ReportMetric(median(results["gre"])/wg, "gre/wireguard")
	}
	load, _ := os.ReadFile("/proc/loadavg")
	sa, sb := ta.Status(), tb.Status()
	b.Logf("load %s; gre sent %d packets, received %d (after GRO), drops %v / %v",
		strings.TrimSpace(string(load)), sa.TxPackets, sb.RxPackets, nonZero(sa.Drops), nonZero(sb.Drops))
}

// kernelPair opens ip_gre tunnels at both ends of p, if the kernel has it.
func kernelPair(b *testing.B, p *pair) error {
	for _, end := range []struct {
		ns                        *netlab.NS
		name, local, remote, addr string
	}{{p.a, "bkgre-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31"}, {p.b, "bkgre-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31"}} {
		c := cfg(end.name, end.local, end.remote, end.addr)
		c.SetDefaults()
		var tn *Tunnel
		if err := end.ns.Do(func() (err error) {
			tn, err = New(c, Options{Logger: testLogger(b), Backend: BackendKernel})
			return err
		}); err != nil {
			return err
		}
		b.Cleanup(func() { tn.Close() })
	}
	return nil
}

// wireGuardPair runs edgegw's WireGuard device at both ends of p: bwg-a
// (10.202.0.1) in a, bwg-b (10.202.0.2) in b, each the other's only peer.
// The configuration has no peer endpoints (edgegw is the gateway that
// clients dial), so a is pointed at b through the UAPI socket, as `wg set`
// would.
func wireGuardPair(b *testing.B, p *pair) {
	dir := b.TempDir()
	keyA, err := wireguard.LoadOrCreatePrivateKey(filepath.Join(dir, "a.key"))
	if err != nil {
		b.Fatal(err)
	}
	keyB, err := wireguard.LoadOrCreatePrivateKey(filepath.Join(dir, "b.key"))
	if err != nil {
		b.Fatal(err)
	}
	side := func(ns *netlab.NS, ifname, addr, key string, peer wireguard.Key, peerIP string) *wireguard.Device {
		c := wireguard.Config{
			Interface: ifname, ListenPort: 51820, Address: netip.MustParsePrefix(addr), PrivateKeyFile: key,
			Peers: []wireguard.Peer{{Name: "peer", PublicKey: peer, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(peerIP)}}},
		}
		c.SetDefaults()
		var d *wireguard.Device
		if err := ns.Do(func() (err error) {
			d, err = wireguard.New(c, wireguard.Options{Logger: testLogger(b), StateDir: dir, UAPI: ifname == "bwg-a"})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		return d
	}
	side(p.a, "bwg-a", "10.202.0.1/24", filepath.Join(dir, "a.key"), keyB.PublicKey(), "10.202.0.2/32")
	side(p.b, "bwg-b", "10.202.0.2/24", filepath.Join(dir, "b.key"), keyA.PublicKey(), "10.202.0.1/32")
	pub := keyB.PublicKey()
	if err := uapiSet("bwg-a", fmt.Sprintf("public_key=%s\nendpoint=192.0.2.2:51820\n", hex.EncodeToString(pub[:]))); err != nil {
		b.Fatal(err)
	}
}

// uapiSet sends one set operation to a WireGuard device's UAPI socket.
func uapiSet(ifname, body string) error {
	c, err := net.Dial("unix", "/var/run/wireguard/"+ifname+".sock")
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "set=1\n%s\n", body); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("UAPI %s: %w", ifname, err)
	}
	if strings.TrimSpace(line) != "errno=0" {
		return fmt.Errorf("UAPI %s: %s", ifname, line)
	}
	return nil
}

// nicReceive makes each namespace's eth0 receive through a NAPI thread
// with GRO, and returns the pids of the new NAPI threads. veth runs NAPI
// only when GRO is switched on (off and on again, as it starts on but
// unused), and hands locally sent packets to it only when the receiving
// side has rx-udp-gro-forwarding (veth_skb_is_eligible_for_gro).
func nicReceive(b testing.TB, nss ...*netlab.NS) []int {
	before := napiThreads()
	for _, ns := range nss {
		err := ns.Do(func() error {
			return errors.Join(
				ethtoolFeatures("eth0", map[string]bool{"rx-gro": false}),
				ethtoolFeatures("eth0", map[string]bool{"rx-gro": true, "rx-udp-gro-forwarding": true}))
		})
		if err != nil {
			b.Skipf("cannot set veth features: %v", err)
		}
		if out, err := ns.Exec(b.Context(), "sh", "-c", "echo 1 > /sys/class/net/eth0/threaded"); err != nil {
			b.Skipf("threaded NAPI: %v %s", err, out)
		}
		// A NIC's queue: with veth's default of none, a full NAPI ring
		// drops instead of pushing back on the sender.
		if out, err := ns.Exec(b.Context(), "tc", "qdisc", "replace", "dev", "eth0", "root", "pfifo_fast"); err != nil {
			b.Skipf("qdisc: %v %s", err, out)
		}
	}
	var pids []int
	for _, pid := range napiThreads() {
		if !contains(before, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// napiThreads lists the kernel's threaded-NAPI threads for eth0 devices.
func napiThreads() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		if strings.HasPrefix(string(comm), "napi/eth0-") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// threadsCPU sums the CPU time of the given threads.
func threadsCPU(pids []int) float64 {
	var sum float64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		sum += (ut + st) / 100 // clock ticks
	}
	return sum
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
