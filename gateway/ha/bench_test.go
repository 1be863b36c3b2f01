package ha

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// echoFlow is a UDP flow from the LAN host through the pair's masquerade
// to an echo on the WAN server, one datagram every 10 ms; it records when
// each echo came back, so an outage is the longest gap between echoes.
type echoFlow struct {
	mu      sync.Mutex
	replies []time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
	closers []interface{ Close() error }
}

func startEcho(tb testing.TB, p *pairLab) *echoFlow {
	tb.Helper()
	f := &echoFlow{stop: make(chan struct{})}
	srv, err := p.srv.ListenPacket("udp", net.JoinHostPort(srvAddr, "7000"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.lan.DialContext(ctx, "udp", net.JoinHostPort(srvAddr, "7000"))
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	f.closers = []interface{ Close() error }{srv, c}
	f.wg.Add(3)
	go func() { // the server echoes until its socket closes
		defer f.wg.Done()
		buf := make([]byte, 64)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	go func() { // the host sends every 10 ms until stop
		defer f.wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var seq uint64
		b := make([]byte, 8)
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
			}
			seq++
			binary.BigEndian.PutUint64(b, seq)
			c.Write(b) // an unreachable moment is what is measured
		}
	}()
	go func() { // the host records echoes until its socket closes
		defer f.wg.Done()
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				select {
				case <-f.stop:
					return
				default:
					continue // a refused datagram while no node holds the address
				}
			}
			f.mu.Lock()
			f.replies = append(f.replies, time.Now())
			f.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		close(f.stop)
		for _, c := range f.closers {
			c.Close()
		}
		f.wg.Wait()
	})
	return f
}

// gap is the longest time without an echo between from and to (from and
// to count as the edges).
func (f *echoFlow) gap(from, to time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	last, worst := from, time.Duration(0)
	for _, r := range f.replies {
		if r.Before(from) || r.After(to) {
			continue
		}
		worst = max(worst, r.Sub(last))
		last = r
	}
	return max(worst, to.Sub(last))
}

// BenchmarkFailover measures ten failovers of a pair for each VRRP
// setting and each way to fail: "stop", the active node stops (as at
// kill -9 of edgegw: keepalived leaves through its parent-death signal)
// and starts again as backup; "wan-down", the active node's WAN link goes
// down (keepalived FAULT) and comes back up. Each round fails the other
// way. Reported: the time from the failure until the WAN virtual address
// is on the new node, and the longest gap in a 100-datagram-a-second UDP
// flow from the LAN host through the masquerade to a WAN echo (median
// and worst). Run with -benchtime 1x: one run is the ten failovers.
func BenchmarkFailover(b *testing.B) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		wan  bool // pull the WAN link instead of stopping the node
	}{
		{"vrrp2-1s/stop", func(*Config) {}, false},
		{"vrrp3-300ms/stop", func(c *Config) { c.VRRPVersion, c.AdvertInterval = 3, 300*time.Millisecond }, false},
		{"vrrp2-1s/wan-down", func(*Config) {}, true},
		{"vrrp3-300ms/wan-down", func(c *Config) { c.VRRPVersion, c.AdvertInterval = 3, 300*time.Millisecond }, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := newPairLab(b)
			p.logLevel = slog.LevelWarn
			var nodes [2]*Node
			for i := range nodes {
				nodes[i] = p.startConfig(b, i, 0, tc.edit)
			}
			defer func() {
				for _, n := range nodes {
					n.Close()
				}
			}()
			const deadline = 30 * time.Second
			waitFor(b, deadline, wantRole(nodes[0], RoleMaster))
			waitFor(b, deadline, wantRole(nodes[1], RoleBackup))
			flow := startEcho(b, p)
			waitFor(b, deadline, func() error {
				if flow.gap(time.Now().Add(-time.Second), time.Now()) > 100*time.Millisecond {
					return fmt.Errorf("flow not steady")
				}
				return nil
			})
			var moved, outage []time.Duration
			active := 0
			for range 10 {
				standby := 1 - active
				t0 := time.Now()
				failed := make(chan error, 1)
				go func() { // the VIP is watched while the node fails
					if tc.wan {
						_, err := p.nodes[active].IP("link", "set", "wan0", "down")
						failed <- err
						return
					}
					failed <- nodes[active].Close()
				}()
				var t1 time.Time
				waitFor(b, deadline, func() error {
					if err := wantWANVIP(p.nodes[standby], true)(); err != nil {
						return err
					}
					t1 = time.Now()
					return nil
				})
				moved = append(moved, t1.Sub(t0))
				if err := <-failed; err != nil {
					b.Fatal(err)
				}
				// The flow must be back for a second before the gap is read.
				waitFor(b, deadline, func() error {
					if time.Since(t1) < time.Second || flow.gap(time.Now().Add(-time.Second), time.Now()) > 100*time.Millisecond {
						return fmt.Errorf("flow not back")
					}
					return nil
				})
				outage = append(outage, flow.gap(t0, time.Now()))
				// the failed node returns as backup (no preemption)
				i := active
				if tc.wan {
					if _, err := p.nodes[i].IP("link", "set", "wan0", "up"); err != nil {
						b.Fatal(err)
					}
				} else {
					nodes[i] = p.startConfig(b, i, 0, tc.edit)
				}
				waitFor(b, deadline, wantRole(nodes[i], RoleBackup))
				active = standby
			}
			report := func(name string, d []time.Duration) {
				slices.Sort(d)
				b.ReportMetric(float64(d[len(d)/2].Milliseconds()), name+"-median-ms")
				b.ReportMetric(float64(d[len(d)-1].Milliseconds()), name+"-worst-ms")
				b.Logf("%s: %v", name, d)
			}
			report("vip-moved", moved)
			report("flow-gap", outage)
		})
	}
}

// waitFor polls f until it is nil or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, f func() error) {
	tb.Helper()
	end := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
