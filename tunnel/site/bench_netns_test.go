//go:build linux

package site

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel"
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

// BenchmarkQualitySteering impairs the primary of two quality-steered
// tunnels with 5 % random loss (nftables numgen) 10 times and reports the
// median and worst time until new flows are routed through the clean
// tunnel, how many of those moves happened before the primary's health
// check left healthy, and the time back after each impairment ends
// (bounded below by the hold, 4 s here). About 2 minutes:
//
//	go test -run '^$' -bench QualitySteering -benchtime 1x ./tunnel/site/
func BenchmarkQualitySteering(b *testing.B) {
	x := newSteeredSiteToSite(b)
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
	healthy := 0
	for range b.N {
		for range 10 {
			x.waitSteeredTo(b, "gre1")
			// Let the quality window forget the last round's loss.
			poll(30*time.Second, func() error {
				if q := x.gw.quality("gre1"); q.Loss != 0 {
					return fmt.Errorf("loss %v", q.Loss)
				}
				return nil
			})
			x.impairPrimary(b, 5)
			over = append(over, poll(20*time.Second, on("gre2")).Seconds())
			if h := x.gw.health("gre1"); h != nil && h.State == tunnel.Healthy {
				healthy++
			}
			x.impairPrimary(b, 0)
			back = append(back, poll(60*time.Second, on("gre1")).Seconds())
		}
	}
	b.Logf("in order: steered after %.3f s; back after %.2f s", over, back)
	sort.Float64s(over)
	b.ReportMetric(median(over), "steer-median-s")
	b.ReportMetric(over[len(over)-1], "steer-worst-s")
	b.ReportMetric(float64(healthy)/float64(len(over)), "moved-while-healthy")
	b.ReportMetric(median(back), "back-median-s")
}
