package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// flood sends UDP datagrams from ns to addr at about rate per second
// until stop is called (or limit passes, a bound for a test that lost
// track of it), and returns how many it sent; sent tells how many so far.
func flood(t testing.TB, ns *netlab.NS, addr string, rate int, limit time.Duration) (stop func() int, sent func() int64) {
	t.Helper()
	var c net.Conn
	must(t, ns.Do(func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	}))
	done := make(chan struct{})
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		defer c.Close()
		const tick = 10 * time.Millisecond
		per := max(1, rate/int(time.Second/tick))
		tk := time.NewTicker(tick)
		defer tk.Stop()
		end := time.After(limit)
		payload := []byte("flood")
		for {
			select {
			case <-done:
				return
			case <-end:
				return
			case <-tk.C:
			}
			for range per {
				// ECONNREFUSED from an ICMP port unreachable is expected
				// while the port is reachable; only sending matters.
				if _, err := c.Write(payload); err == nil {
					n.Add(1)
				}
			}
		}
	})
	var once sync.Once
	stop = func() int {
		once.Do(func() { close(done) })
		wg.Wait()
		return int(n.Load())
	}
	t.Cleanup(func() { stop() })
	return stop, n.Load
}

// TestFailClosedAcrossRestarts floods a port that the rules block on the
// office server, from the WAN side, at about 2,000 packets/s, while the
// real edgegw binary goes through every way of stopping and starting: a
// SIGTERM and a start, a kill -9 and a start, a start with a bad
// configuration (refused) and then a good one, and the fallback (`run
// --fallback`, with forwarding turned back on behind its back) and a
// start. The gateway namespace forwards (ip_forward=1) before the first
// start, as a box that ran a router before. A capture on the server
// (netfilter counters in its own namespace) must see none of the flood
// from the moment the first edgegw is up, while an allowed port keeps
// getting through whenever a gateway runs.
func TestFailClosedAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	s.extras = `firewall:
  rules:
    - id: blocked-port
      expression: udp.dstport == 9999
      action: block
`
	s.writeConfig()
	bad := filepath.Join(s.dir, "bad.yaml")
	must(t, os.WriteFile(bad, []byte("appliance:\n  name: e2e\nbogus_key: 1\n"), 0o600))
	// The WAN side routes the office to the gateway (a routed office
	// prefix, or a neighbour on the uplink's segment).
	must(t, ra.WAN.Route(ra.LANNet.String(), ra.GWWANAddr.String()))
	must(t, ra.GW.Sysctl("net.ipv4.ip_forward", "1"))
	got := capture(t, ra.LAN, map[string]string{
		"blocked": "udp dport 9999",
		"allowed": "udp dport 9998",
	})
	blocked := ra.ServerAddr.String() + ":9999"
	allowed := ra.ServerAddr.String() + ":9998"

	// barrier returns once a datagram sent now to the allowed port has
	// arrived: the flood's datagrams sent before it, on the same path,
	// have landed or been dropped by then.
	barrier := func(t *testing.T, what string) {
		t.Helper()
		before := got("allowed")
		c, err := ra.WAN.DialContext(context.Background(), "udp", allowed)
		must(t, err)
		defer c.Close()
		netlab.Eventually(t, 10*time.Second, what+": a datagram to the allowed port gets through", func() error {
			c.Write([]byte("allowed"))
			if got("allowed") == before {
				return fmt.Errorf("nothing arrived on the allowed port")
			}
			return nil
		})
	}
	var proc *netlab.Proc
	up := func(t *testing.T, args ...string) {
		t.Helper()
		p, err := ra.GW.Start(binary, args...)
		must(t, err)
		proc = p
		s.proc = p
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.WaitOutput(ctx, "edgegw is up"); err != nil {
			t.Fatalf("edgegw %v did not start: %v\n%s", args, err, p.Output())
		}
	}
	exited := func(t *testing.T, what string) {
		t.Helper()
		select {
		case <-proc.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("edgegw did not exit after %s:\n%s", what, proc.Output())
		}
	}
	sysctl := func(t *testing.T, key string) string {
		return strings.TrimSpace(run(t, ra.GW, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/")))
	}
	// forwards checks that a running gateway forwards what the rules
	// allow: the flood's zero is the firewall's, not a broken path.
	forwards := barrier
	tableExists := func() bool {
		_, err := ra.GW.Exec(context.Background(), "nft", "list", "table", "inet", "edgegw")
		return err == nil
	}
	// What the steps share: the flood that runs from the first start to
	// the end (started on whole, the test itself, so that it outlives the
	// step that starts it), and the count of blocked datagrams that
	// arrived before it.
	var (
		stop  func() int
		sent  func() int64
		base  uint64
		whole = t
	)
	// underFlood waits until the flood has sent another 200 datagrams
	// (about 0.1 s), so that every stop and start below happens under it.
	underFlood := func(t *testing.T) {
		t.Helper()
		from := sent()
		netlab.Eventually(t, 20*time.Second, "200 more flood datagrams", func() error {
			if n := sent() - from; n < 200 {
				return fmt.Errorf("%d sent", n)
			}
			return nil
		})
	}

	if !t.Run("control: with no edgegw the flood arrives", func(t *testing.T) {
		// Control: with no edgegw and forwarding on, the flood arrives.
		control, _ := flood(t, ra.WAN, blocked, 2000, 10*time.Second)
		netlab.Eventually(t, 5*time.Second, "the flood reaches the server with no edgegw", func() error {
			if got("blocked") < 100 {
				return fmt.Errorf("%d arrived", got("blocked"))
			}
			return nil
		})
		control()
		barrier(t, "after the control")
		base = got("blocked") // the flood is counted from here
	}) {
		return
	}

	if !t.Run("first start forwards what the rules allow", func(t *testing.T) {
		// The first start, on a box that forwards already.
		up(t, "run", "--config", s.cfg)
		forwards(t, "first start")
		stop, sent = flood(whole, ra.WAN, blocked, 2000, 3*time.Minute)
	}) {
		return
	}

	if !t.Run("SIGTERM leaves forwarding off", func(t *testing.T) {
		// 1. SIGTERM, then a start: the stop turns forwarding off before the
		// table goes, and leaves it off.
		underFlood(t)
		must(t, syscall.Kill(proc.Pid(), syscall.SIGTERM))
		exited(t, "SIGTERM")
		if v := sysctl(t, "net.ipv4.ip_forward"); v != "0" {
			t.Errorf("ip_forward after a clean stop = %s, want 0", v)
		}
		if !strings.Contains(proc.Output(), "forwarding off, and left off") {
			t.Errorf("the clean stop did not say that it left forwarding off:\n%s", proc.Output())
		}
		up(t, "run", "--config", s.cfg)
		forwards(t, "start after SIGTERM")
	}) {
		return
	}

	if !t.Run("kill -9 leaves the table blocking", func(t *testing.T) {
		// 2. kill -9, then a start: the table stays behind and keeps blocking;
		// the start replaces it in one batch.
		underFlood(t)
		must(t, syscall.Kill(proc.Pid(), syscall.SIGKILL))
		exited(t, "kill -9")
		if !tableExists() {
			t.Error("no table left after kill -9")
		}
		up(t, "run", "--config", s.cfg)
		forwards(t, "start after kill -9")
	}) {
		return
	}

	if !t.Run("a bad configuration keeps the leftover table", func(t *testing.T) {
		// 3. kill -9, a start with a bad configuration (refused before it
		// touches the kernel: the leftover table stays), then a good one.
		underFlood(t)
		must(t, syscall.Kill(proc.Pid(), syscall.SIGKILL))
		exited(t, "kill -9")
		p, err := ra.GW.Start(binary, "run", "--config", bad)
		must(t, err)
		proc = p
		exited(t, "a bad configuration")
		if err := p.Wait(); err == nil || !strings.Contains(p.Output(), "bogus_key") {
			t.Errorf("the bad configuration started (%v):\n%s", err, p.Output())
		}
		if !tableExists() {
			t.Error("a start with a bad configuration removed the leftover table")
		}
		up(t, "run", "--config", s.cfg)
		forwards(t, "start after a bad configuration")
	}) {
		return
	}

	if !t.Run("the fallback drops forwarded packets", func(t *testing.T) {
		// 4. The fallback: forwarding off, a table that drops every forwarded
		// packet even when forwarding is turned on behind its back, the admin
		// on loopback, and why at /readyz.
		underFlood(t)
		must(t, syscall.Kill(proc.Pid(), syscall.SIGTERM))
		exited(t, "SIGTERM")
		up(t, "run", "--fallback", "edgegw exited with an error 3 times in a row")
		if v := sysctl(t, "net.ipv4.ip_forward"); v != "0" {
			t.Errorf("ip_forward in the fallback = %s, want 0", v)
		}
		resp, err := ra.GW.HTTPClient().Get("http://127.0.0.1:9100/readyz")
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(body), "3 times in a row") {
			t.Errorf("fallback /readyz = %d %q, want 503 with the reason", resp.StatusCode, body)
		}
		if !strings.Contains(proc.Output(), "FALLBACK") || !strings.Contains(proc.Output(), "3 times in a row") {
			t.Errorf("the fallback's log does not say why:\n%s", proc.Output())
		}
		must(t, ra.GW.Sysctl("net.ipv4.ip_forward", "1"))
		allowedBefore := got("allowed")
		c, err := ra.WAN.DialContext(context.Background(), "udp", allowed)
		must(t, err)
		for range 20 {
			c.Write([]byte("allowed"))
		}
		c.Close()
		// The fallback's deny-forward chain counts what it dropped: the 20
		// datagrams and the flood.
		netlab.Eventually(t, 10*time.Second, "the fallback drops forwarded packets", func() error {
			out := run(t, ra.GW, "nft", "list", "chain", "inet", "edgegw", "deny_forward")
			if m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out); m == nil || len(m[1]) < 2 {
				return fmt.Errorf("deny_forward counted fewer than 10 packets:\n%s", out)
			}
			return nil
		})
		underFlood(t)
		must(t, syscall.Kill(proc.Pid(), syscall.SIGTERM))
		exited(t, "SIGTERM")
		if n := got("allowed") - allowedBefore; n != 0 {
			t.Errorf("the fallback forwarded %d packets with forwarding turned on behind its back", n)
		}
	}) {
		return
	}

	if !t.Run("a start after the fallback forwards", func(t *testing.T) {
		// 5. A start after the fallback.
		up(t, "run", "--config", s.cfg)
		forwards(t, "start after the fallback")
	}) {
		return
	}

	if !t.Run("none of the flood reached the server", func(t *testing.T) {
		// None of the flood reached the server across the restarts.
		underFlood(t)
		total := stop()
		barrier(t, "after the flood")
		if n := got("blocked") - base; n != 0 {
			t.Errorf("%d of %d flood packets to the blocked port reached the server across the restarts", n, total)
		} else {
			t.Logf("0 of %d flood packets to the blocked port reached the server across five restarts", total)
		}
		must(t, syscall.Kill(proc.Pid(), syscall.SIGTERM))
		exited(t, "the end")
	}) {
		return
	}
}
