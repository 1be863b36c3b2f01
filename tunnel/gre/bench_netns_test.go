//go:build linux

package gre

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// iperf3 runs a TCP test from client to server's address for secs seconds
// and returns bits per second received and retransmits.
func iperf3(ctx context.Context, client *netlab.NS, server string, secs int) (float64, int, error) {
	out, err := client.Exec(ctx, "iperf3", "-c", server, "-t", fmt.Sprint(secs), "-J")
	if err != nil {
		return 0, 0, err
	}
	var r struct {
		End struct {
			SumSent     struct{ Retransmits int } `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond, r.End.SumSent.Retransmits, nil
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIperf3 compares iperf3 TCP through one userspace GRE tunnel
// (both ends in this process) with the raw veth path between the same two
// namespaces, alternating runs in one go. Run it alone on an idle box:
//
//	go test -run '^$' -bench Iperf3 -benchtime 1x ./tunnel/gre/
//
// It reports the median of 3 runs of 5 s each and the CPU this process
// (the GRE dataplane of both ends) used per Gbit carried.
func BenchmarkIperf3(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3")
	}
	p := newPair(b)
	ta := open(b, p.a, cfg("bgre-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31"), nil)
	open(b, p.b, cfg("bgre-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31"), nil)
	srv, err := p.b.Start("iperf3", "-s")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	netlab.Eventually(b, 5*time.Second, "tunnel up", func() error { return p.a.Ping("10.200.1.1") })
	const runs, secs = 3, 5
	results := map[string][]float64{}
	cpu := map[string][]float64{}
	retr := map[string]int{}
	for range b.N {
		for range runs {
			for _, path := range []struct{ name, addr string }{{"veth", "192.0.2.2"}, {"gre", "10.200.1.1"}} {
				c0 := cpuSelf()
				var bps float64
				var rt int
				var err error
				for try := 0; try < 3; try++ { // the server may not listen yet
					if bps, rt, err = iperf3(b.Context(), p.a, path.addr, secs); err == nil {
						break
					}
					time.Sleep(300 * time.Millisecond)
				}
				if err != nil {
					b.Fatal(err)
				}
				gbit := bps * secs / 1e9
				results[path.name] = append(results[path.name], bps/1e9)
				cpu[path.name] = append(cpu[path.name], (cpuSelf()-c0).Seconds()/gbit)
				retr[path.name] += rt
			}
		}
	}
	for name, v := range results {
		b.ReportMetric(median(v), name+"-Gbit/s")
		b.ReportMetric(median(cpu[name]), name+"-cpu-s/Gbit")
		b.ReportMetric(float64(retr[name]), name+"-retransmits")
		b.Logf("%s: runs %.2f Gbit/s, edgegw process CPU %.3f s/Gbit, %d retransmits", name, v, cpu[name], retr[name])
	}
	b.Logf("gre tunnel counters: %+v", ta.Status())
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
