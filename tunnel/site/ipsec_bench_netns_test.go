//go:build linux

package site

import (
	"context"
	"encoding/json"
	"fmt"
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
)

// procCPU is the user+system CPU a process has used.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIPsecIperf3 measures iperf3 TCP from gw to the branch over
// three paths of the same topology, alternating, in the same run:
//
//   - veth: the WAN addresses, no tunnel;
//   - gre: edgegw's userspace GRE tunnel (both ends in this process);
//   - ipsec: AES-GCM-256 (ecp384) through edgegw's charon and the
//     branch's stock strongSwan, both with kernel-libipsec (ESP in
//     userspace, UDP-encapsulated, through a TUN).
//
// Per path: the median Gbit/s, and CPU seconds per Gbit moved, for the
// tunnel ends (this process and both charons) and for iperf3 itself.
//
//	go test -run '^$' -bench IPsecIperf3 -benchtime 1x ./tunnel/site/
func BenchmarkIPsecIperf3(b *testing.B) {
	testkit.NeedTool(b, "iperf3", "iperf3")
	s := newIPsecSite(b)
	netlab.Eventually(b, 20*time.Second, "IPsec up", func() error {
		for _, ts := range s.gw.m.Status().Tunnels {
			if ts.Name == "ipsec1" && ts.IPsec != nil && ts.IPsec.Up {
				return nil
			}
		}
		return fmt.Errorf("ipsec1 down")
	})
	server, err := s.branchNS.Start("iperf3", "-s", "--forceflush")
	if err != nil {
		b.Fatal(err)
	}
	defer server.Stop()
	netlab.Eventually(b, 5*time.Second, "iperf3 server", func() error {
		if !strings.Contains(server.Output(), "Server listening") {
			return fmt.Errorf("%s", server.Output())
		}
		return nil
	})
	pidOf := func(p string) int {
		bs, _ := os.ReadFile(p)
		n, _ := strconv.Atoi(strings.TrimSpace(string(bs)))
		return n
	}
	gwCharon := pidOf(filepath.Join(s.state, "ipsec", "charon.pid"))
	brCharon := s.bc.Proc.Pid()
	ends := func() time.Duration { return selfCPU() + procCPU(gwCharon) + procCPU(brCharon) }

	paths := []struct{ name, dst string }{{"veth", "198.51.100.20"}, {"gre", "10.200.1.1"}, {"ipsec", "10.200.3.1"}}
	type sample struct{ gbps, endsPerGbit, iperfPerGbit float64 }
	res := map[string][]sample{}
	const secs = 5
	for range b.N {
		for round := 0; round < 3; round++ {
			for _, p := range paths {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c0 := ends()
				out, err := s.gwNS.Exec(ctx, "iperf3", "-c", p.dst, "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "2000")
				c1 := ends()
				cancel()
				if err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				var r struct {
					End struct {
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
					b.Fatal(err)
				}
				e := r.End
				gbit := e.SumReceived.BitsPerSecond * e.SumReceived.Seconds / 1e9
				res[p.name] = append(res[p.name], sample{
					gbps:         e.SumReceived.BitsPerSecond / 1e9,
					endsPerGbit:  (c1 - c0).Seconds() / gbit,
					iperfPerGbit: (e.CPU.Host + e.CPU.Remote) / 100 * e.SumReceived.Seconds / gbit,
				})
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("load %s", strings.TrimSpace(string(load)))
	for _, p := range paths {
		v := res[p.name]
		sort.Slice(v, func(i, j int) bool { return v[i].gbps < v[j].gbps })
		m := v[len(v)/2]
		b.ReportMetric(m.gbps, p.name+"-Gbit/s")
		b.ReportMetric(m.endsPerGbit, p.name+"-ends-cpu-s/Gbit")
		b.Logf("%-5s median %.3f Gbit/s (runs %v), tunnel ends %.2f CPU-s/Gbit, iperf3 %.2f CPU-s/Gbit",
			p.name, m.gbps, v, m.endsPerGbit, m.iperfPerGbit)
	}
}
