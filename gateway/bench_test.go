package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// stockWireGuardGo builds the wireguard-go command from the module version
// in go.mod: the peer edgegw's dataplane is compared with.
var stockWireGuardGo = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "edgegw-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "wireguard-go")
	out, err := exec.Command("go", "build", "-o", bin, "golang.zx2c4.com/wireguard").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build wireguard-go: %v\n%s", err, out)
	}
	return bin, nil
})

// BenchmarkRemoteAccessTCP measures iperf3 TCP from the remote user to the
// office server, one 10-second run per iteration, through three gateways in
// the same topology and the same run:
//
//   - veth: no tunnel, plain routing (the topology's ceiling);
//   - edgegw: the edgegw binary;
//   - stock: the wireguard-go command built from the module version in
//     go.mod, configured with wg(8).
//
// The remote user runs the same stock wireguard-go in both tunnel cases.
// Run with -benchtime 1x, several times (`make bench` loops, so the cases
// interleave: -count would run each case back to back); see BENCHMARKS.md.
func BenchmarkRemoteAccessTCP(b *testing.B) {
	testkit.NeedTool(b, "iperf3", "iperf3")
	wggo, err := stockWireGuardGo()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("veth", func(b *testing.B) {
		s := newSite(b)
		// Plain routing: the internet learns the office prefix.
		must(b, s.ra.WAN.Route("10.0.0.0/24", s.ra.GWWANAddr.String()))
		measure(b, s, nil)
	})
	b.Run("edgegw", func(b *testing.B) {
		s := newSite(b)
		key, pub := wgKey(b, s.ra.User, s.dir, "alice")
		s.addPeer("alice", pub, "100.96.0.10/32")
		s.writeConfig()
		s.start()
		s.clientWith(s.ra.User, s.lab.ID()+"u", "alice", key, wggo)
		measure(b, s, s.proc)
	})
	b.Run("stock", func(b *testing.B) {
		s := newSite(b)
		key, pub := wgKey(b, s.ra.User, s.dir, "alice")
		s.addPeer("alice", pub, "100.96.0.10/32")
		// edgegw writes the gateway key and the client config, then stops;
		// stock wireguard-go takes over with the same key and peer.
		s.writeConfig()
		s.start()
		conf := s.peerConfig("alice", key)
		s.signal(15)
		<-s.proc.Done()
		proc := s.stockGateway(wggo, pub)
		s.upClient(s.ra.User, s.lab.ID()+"u", conf, wggo)
		measure(b, s, proc)
	})
}

// stockGateway runs wireguard-go in the gw namespace with the key edgegw
// generated, configured the way an administrator would with wg(8) and ip(8).
func (s *site) stockGateway(wggo, peerPub string) *netlab.Proc {
	s.t.Helper()
	gw := s.ra.GW
	cmd := gw.Command(wggo, "-f", s.wgIf)
	cmd.Env = append(os.Environ(), "LOG_LEVEL=error")
	p, err := gw.StartCmd(cmd)
	must(s.t, err)
	netlab.Eventually(s.t, 10*time.Second, "stock wireguard-go interface", func() error {
		_, err := gw.IP("link", "show", s.wgIf)
		return err
	})
	key := filepath.Join(s.dir, "state", "wireguard", s.wgIf+".key")
	run(s.t, gw, "wg", "set", s.wgIf, "private-key", key, "listen-port", "51820",
		"peer", peerPub, "allowed-ips", "100.96.0.10/32")
	run(s.t, gw, "ip", "address", "add", "100.96.0.1/12", "dev", s.wgIf)
	run(s.t, gw, "ip", "link", "set", s.wgIf, "mtu", "1420", "up")
	return p
}

// measure runs iperf3 from user to the office server once per iteration
// and reports throughput, and for a gateway process its peak RSS and the
// CPU time it used.
func measure(b *testing.B, s *site, gw *netlab.Proc) {
	// One server for all iterations: iperf3 serves one test at a time and
	// survives clients that fail half-way.
	srv, err := s.ra.LAN.Start("iperf3", "-s", "-p", "5201")
	must(b, err)
	defer srv.Stop()
	netlab.Eventually(b, 15*time.Second, "tunnel and iperf3 server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := s.ra.User.Exec(ctx, "iperf3", "-c", "10.0.0.5", "-p", "5201", "-t", "1", "--connect-timeout", "2000")
		return err
	})
	var cpu0 float64
	if gw != nil {
		cpu0 = cpuSeconds(b, gw.Pid())
	}
	var bps float64
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		out, err := s.ra.User.Exec(ctx, "iperf3", "-c", "10.0.0.5", "-p", "5201", "-t", "10", "-J", "--connect-timeout", "3000")
		cancel()
		if err != nil {
			b.Fatalf("iperf3: %v\n%s", err, out)
		}
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
				SumSent struct {
					Retransmits int `json:"retransmits"`
				} `json:"sum_sent"`
			} `json:"end"`
		}
		must(b, json.Unmarshal(out, &r))
		bps += r.End.SumReceived.BitsPerSecond
		b.ReportMetric(float64(r.End.SumSent.Retransmits), "retransmits")
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bps/float64(b.N)/1e9, "Gbit/s")
	if gw != nil {
		b.ReportMetric((cpuSeconds(b, gw.Pid())-cpu0)/float64(b.N), "cpu-s/op")
		b.ReportMetric(peakRSS(b, gw.Pid()), "peak-RSS-MiB")
	}
}

func cpuSeconds(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(b, err)
	// Fields after the parenthesised command: utime and stime are the 14th
	// and 15th fields of the whole line, in clock ticks (100 a second).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

func peakRSS(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(b, err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
