//go:build linux

package site

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// BenchmarkFailover cuts the primary of two tunnels (priorities 100 and
// 200, health checks at rate high) 10 times and reports the median and
// worst time until the gateway routes through the backup, and the time
// back to the primary after each restore. About 100 s:
//
//	go test -run '^$' -bench Failover -benchtime 1x ./tunnel/gre/
func BenchmarkFailover(b *testing.B) {
	x := newSiteToSite(b, [2]int{100, 200})
	netlab.Eventually(b, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	on := func(dev string) func() error {
		return func() error {
			if got := x.gw.routeDev("10.20.0.2"); got != dev {
				return fmt.Errorf("route through %s", got)
			}
			return nil
		}
	}
	poll := func(timeout time.Duration, f func() error) time.Duration {
		start := time.Now()
		for f() != nil {
			if time.Since(start) > timeout {
				b.Fatalf("no change after %v", timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(start)
	}
	var over, back []float64
	for range b.N {
		for range 10 {
			poll(30*time.Second, on("gre1"))
			x.cutPrimary(b, true)
			over = append(over, poll(10*time.Second, on("gre2")).Seconds())
			x.cutPrimary(b, false)
			back = append(back, poll(30*time.Second, on("gre1")).Seconds())
		}
	}
	sort.Float64s(over)
	sort.Float64s(back)
	b.ReportMetric(median(over), "failover-median-s")
	b.ReportMetric(over[len(over)-1], "failover-worst-s")
	b.ReportMetric(median(back), "failback-median-s")
	b.Logf("failover %.3f s, failback %.2f s", over, back)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
