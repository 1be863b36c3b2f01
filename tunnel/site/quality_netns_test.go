//go:build linux

package site

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/health"
)

// testHold is the steering hysteresis in these tests (30 s by default).
const testHold = 4 * time.Second

// impairPrimary drops (or stops dropping) pct % of the packets the WAN
// forwards to the branch's primary public address, chosen at random by
// nftables' numgen (this kernel has no netem): gre1 loses that share of
// what gw sends through it, and of its probes.
func (x *siteToSite) impairPrimary(t testing.TB, pct int) {
	t.Helper()
	cmd := "delete table ip impair"
	if pct > 0 {
		cmd = "add table ip impair; add chain ip impair fwd_impair { type filter hook forward priority 0; };" +
			fmt.Sprintf("add rule ip impair fwd_impair ip daddr 198.51.100.20 numgen random mod 100 < %d counter drop", pct)
	}
	if out, err := x.wan.Exec(t.Context(), "nft", cmd); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// newSteeredSiteToSite is newSiteToSite with the gw's branch prefix
// quality-steered (gre1 priority 100, gre2 200) and a short hold.
func newSteeredSiteToSite(t testing.TB) *siteToSite {
	return newSteeredSiteToSiteWith(t, tunnel.SteerOptions{Hold: testHold}, nil)
}

// newSteeredSiteToSiteWith is newSteeredSiteToSite with steer options;
// before is called once the namespaces exist, before the gw's tunnels
// are made again. They are made again, with their checks, once the
// branch's tunnels are up: checks started before their peer count its
// absence as failed probes, and one more failure within 5 minutes
// degrades the tunnel, which would make the health check, not quality
// steering, move the traffic.
func newSteeredSiteToSiteWith(t testing.TB, steer tunnel.SteerOptions, before func(*siteToSite)) *siteToSite {
	testkit.NeedTool(t, "nft", "nftables")
	x := newSiteToSiteWith(t, [2]int{100, 200}, Options{Steer: steer})
	if before != nil {
		before(x)
	}
	for i := range x.gwCfg.Routes {
		x.gwCfg.Routes[i].Steering = tunnel.SteerQuality
	}
	netlab.Eventually(t, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	x.gw.set(t, Config{})
	x.gw.set(t, x.gwCfg)
	netlab.Eventually(t, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	return x
}

// waitSteeredTo waits until the gw's steering has chosen via for the
// branch LAN and the kernel routes it there: after start, a tunnel whose
// health check saw the set-up as failures is degraded until 30 good
// probes, and then held for the hold time.
func (x *siteToSite) waitSteeredTo(t testing.TB, via string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "steered to "+via, func() error {
		c := x.gw.m.Status().Steering["10.20.0.0/16"]
		if dev := x.gw.routeDev("10.20.0.2"); c.Via != via || dev != via {
			return fmt.Errorf("steering %+v, route through %s", c, dev)
		}
		return nil
	})
}

// quality reads a tunnel's quality from the gw's status.
func (e *end) quality(name string) health.QualityStatus {
	if h := e.health(name); h != nil {
		return h.Quality
	}
	return health.QualityStatus{}
}

// TestQualitySteering impairs the primary tunnel with 5 % loss: new flows
// move to the clean backup within 3 s, before the health check calls the
// primary down; the primary's loss and scores show the impairment; flows
// come back only after the hold time once the loss ends.
func TestQualitySteering(t *testing.T) {
	x := newSteeredSiteToSite(t)
	startEcho(t, x)
	// Both tunnels measured and scored, without loss, before the
	// impairment.
	testkit.Eventually(t, 15*time.Second, "both tunnels scored", func() error {
		for _, name := range []string{"gre1", "gre2"} {
			q := x.gw.quality(name)
			if q.Scores == nil || q.Loss != 0 {
				return fmt.Errorf("%s: %+v", name, q)
			}
		}
		return nil
	})
	x.waitSteeredTo(t, "gre1")
	if q := x.gw.quality("gre1"); q.ProbeInterval != health.SteeringQualityInterval {
		t.Errorf("a steered tunnel probes every %v, want %v", q.ProbeInterval, health.SteeringQualityInterval)
	}
	if got := x.branch.quality("bgre1").ProbeInterval; got != health.DefaultQualityInterval {
		t.Errorf("an unsteered tunnel probes every %v, want %v", got, health.DefaultQualityInterval)
	}
	cleanPoints := x.gw.quality("gre1").Scores.VideoCallsPoints

	// 5 % loss on the primary.
	x.impairPrimary(t, 5)
	impaired := time.Now()
	var moved time.Duration
	var stateAtMove tunnel.State
	testkit.Eventually(t, 10*time.Second, "new flows leave the lossy tunnel", func() error {
		if dev := x.gw.routeDev("10.20.0.2"); dev != "gre2" {
			return fmt.Errorf("route through %s", dev)
		}
		moved = time.Since(impaired)
		stateAtMove = x.gw.health("gre1").State
		return nil
	})
	t.Logf("steered away from 5%% loss after %v; gre1's health check says %s", moved, stateAtMove)
	if moved > 3*time.Second {
		t.Errorf("steering took %v, want at most 3 s", moved)
	}
	if stateAtMove == tunnel.Down {
		t.Errorf("gre1 was down when steering moved: health checks did the work")
	}
	steer := x.gw.m.Status().Steering["10.20.0.0/16"]
	if steer.Via != "gre2" || !strings.Contains(steer.Reason, "gre1 lost") {
		t.Errorf("status steering %+v", steer)
	}
	// A new flow takes the clean tunnel, and works.
	before1, before2 := x.gw.tunnel("gre1").TxBytes, x.gw.tunnel("gre2").TxBytes
	tcpEcho(t, x)
	if d1, d2 := x.gw.tunnel("gre1").TxBytes-before1, x.gw.tunnel("gre2").TxBytes-before2; d2 < 4000 || d1 > 2000 {
		// Seen once under CI load (0 and 112: the handshake only): the
		// state then says which way the data went.
		t.Errorf("a new flow after steering: %d bytes through gre1, %d through gre2; now via %s; gre1 %+v; gre2 %+v; routes %v",
			d1, d2, x.gw.routeDev("10.20.0.2"), x.gw.tunnel("gre1"), x.gw.tunnel("gre2"), x.gw.m.Status().Routes)
	}

	// The scores see the loss over the quality window.
	testkit.Eventually(t, 15*time.Second, "gre1's loss and score show the impairment", func() error {
		q1, q2 := x.gw.quality("gre1"), x.gw.quality("gre2")
		if q1.Loss < 0.02 || q1.Loss > 0.12 || q1.Scores == nil || q2.Scores == nil ||
			q1.Scores.VideoCallsPoints >= q2.Scores.VideoCallsPoints || q1.Scores.VideoCallsPoints >= cleanPoints {
			return fmt.Errorf("gre1 %+v, gre2 %+v, clean points %d", q1, q2, cleanPoints)
		}
		return nil
	})
	if dev := x.gw.routeDev("10.20.0.2"); dev != "gre2" {
		t.Fatalf("flapped back to %s while the loss continues", dev)
	}

	// The loss ends: gre2 keeps the prefix for at least the hold time
	// after the move, then gre1 gets it back.
	x.impairPrimary(t, 0)
	restored := time.Now()
	var back time.Time
	testkit.Eventually(t, testHold+15*time.Second, "back on the primary", func() error {
		if dev := x.gw.routeDev("10.20.0.2"); dev != "gre1" {
			return fmt.Errorf("route through %s", dev)
		}
		back = time.Now()
		return nil
	})
	t.Logf("back on gre1 %v after the loss ended (hold %v)", back.Sub(restored), testHold)
	if held := back.Sub(impaired.Add(moved)); held < testHold {
		t.Errorf("back on gre1 %v after moving away, before the hold time %v", held, testHold)
	}
	tcpEcho(t, x)
	testkit.Eventually(t, 15*time.Second, "gre1's loss back to 0", func() error {
		if q := x.gw.quality("gre1"); q.Loss != 0 {
			return fmt.Errorf("%+v", q)
		}
		return nil
	})

	// Metrics: the quality per tunnel, steering's choice and its two
	// moves, all passing promlint.
	problems, err := testutil.CollectAndLint(x.gw.m)
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %+v", err, problems)
	}
	want := `
# HELP edgegw_route_steering_moves_total Times quality steering moved a prefix to another tunnel.
# TYPE edgegw_route_steering_moves_total counter
edgegw_route_steering_moves_total{prefix="10.20.0.0/16"} 2
# HELP edgegw_route_steering_via 1 for the tunnel quality steering chose for a quality-steered prefix (none while no tunnel of the prefix is healthy).
# TYPE edgegw_route_steering_via gauge
edgegw_route_steering_via{prefix="10.20.0.0/16",via="gre1"} 1
`
	if err := testutil.CollectAndCompare(x.gw.m, strings.NewReader(want), "edgegw_route_steering_via", "edgegw_route_steering_moves_total"); err != nil {
		t.Error(err)
	}
	for _, name := range []string{"edgegw_tunnel_latency_seconds", "edgegw_tunnel_jitter_seconds", "edgegw_tunnel_loss_ratio"} {
		if n := testutil.CollectAndCount(x.gw.m, name); n != 2 {
			t.Errorf("%d series of %s, want one per tunnel (2)", n, name)
		}
	}

	// The status as /api/v1/status serves it carries latency, jitter and
	// loss per tunnel.
	b, err := json.Marshal(x.gw.m.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"latency_ns":`, `"jitter_ns":`, `"loss":`, `"video_calls":`, `"steering":{"10.20.0.0/16":{"via":"gre1"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("status lacks %s: %s", key, b)
		}
	}
}

// TestQualityLoadedLatency sends 8 Mbit/s of UDP through the primary:
// its probes during the load measure loaded latency.
func TestQualityLoadedLatency(t *testing.T) {
	x := newSteeredSiteToSite(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	c, err := x.lan.DialContext(ctx, "udp4", "10.20.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1000)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		<-tick.C
		c.Write(payload) // refused datagrams (ICMP port unreachable) are fine
	}
	q := x.gw.quality("gre1")
	t.Logf("gre1 under load: %+v", q.Measurement)
	if q.LoadedSamples == 0 || q.LoadedLatency == 0 || q.Throughput < health.LoadedBitrate {
		t.Errorf("no loaded latency after 3 s at 8 Mbit/s: %+v", q)
	}
}

// TestQualitySteeringLatency delays what the WAN forwards through gre1 by
// 150 ms with a userspace relay: under the health checks' 250 ms timeout,
// so the tunnel stays healthy, but over a 100 ms latency threshold. New
// flows move to gre2, gre1's latency and scores show the delay, and the
// prefix comes back after the hold once the delay ends.
func TestQualitySteeringLatency(t *testing.T) {
	var relay *delayRelay
	x := newSteeredSiteToSiteWith(t, tunnel.SteerOptions{Hold: testHold, MaxLatency: 100 * time.Millisecond}, func(x *siteToSite) {
		relay = newDelayRelay(t, x, "198.51.100.20", "tobr")
	})
	x.waitSteeredTo(t, "gre1")
	testkit.Eventually(t, 15*time.Second, "gre1 scored", func() error {
		if q := x.gw.quality("gre1"); q.Scores == nil || q.Latency > 20*time.Millisecond {
			return fmt.Errorf("%+v", q)
		}
		return nil
	})
	cleanPoints := x.gw.quality("gre1").Scores.VideoCallsPoints

	relay.set(150 * time.Millisecond)
	delayed := time.Now()
	var moved time.Duration
	testkit.Eventually(t, 10*time.Second, "new flows leave the slow tunnel", func() error {
		if dev := x.gw.routeDev("10.20.0.2"); dev != "gre2" {
			return fmt.Errorf("route through %s", dev)
		}
		moved = time.Since(delayed)
		return nil
	})
	h := x.gw.health("gre1")
	t.Logf("steered away from +150 ms after %v; gre1's health check says %s", moved, h.State)
	if h.State == tunnel.Down {
		t.Errorf("gre1 was down: health checks did the work")
	}
	// The move is for gre1's latency: past the threshold, or (under load,
	// when the score moves first) gre2 scoring better than the delayed
	// gre1.
	if c := x.gw.m.Status().Steering["10.20.0.0/16"]; c.Via != "gre2" ||
		!strings.Contains(c.Reason, "gre1 median round trip") && !strings.Contains(c.Reason, "against gre1's") {
		t.Errorf("steering %+v", c)
	}
	testkit.Eventually(t, 15*time.Second, "gre1's latency and score show the delay", func() error {
		q := x.gw.quality("gre1")
		if q.Latency < 150*time.Millisecond || q.Latency > 400*time.Millisecond || q.Scores == nil || q.Scores.VideoCallsPoints >= cleanPoints {
			return fmt.Errorf("%+v (clean points %d)", q, cleanPoints)
		}
		return nil
	})
	startEcho(t, x)
	tcpEcho(t, x)

	relay.set(0)
	var back time.Time
	testkit.Eventually(t, testHold+20*time.Second, "back on the primary", func() error {
		if dev := x.gw.routeDev("10.20.0.2"); dev != "gre1" {
			return fmt.Errorf("route through %s", dev)
		}
		back = time.Now()
		return nil
	})
	if held := back.Sub(delayed.Add(moved)); held < testHold {
		t.Errorf("back on gre1 %v after moving away, before the hold time %v", held, testHold)
	}
	testkit.Eventually(t, 15*time.Second, "gre1's latency back to normal", func() error {
		if q := x.gw.quality("gre1"); q.Latency > 20*time.Millisecond {
			return fmt.Errorf("%+v", q)
		}
		return nil
	})
}
