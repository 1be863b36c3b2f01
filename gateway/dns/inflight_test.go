package dns

import (
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMaxInflight: with max_inflight queries waiting for silent
// upstreams, another query that needs the upstream gets SERVFAIL with an
// Extended DNS Error at once, over UDP and TCP; an expired answer is
// served stale instead; fresh cached answers are served as ever; the
// slots come back when the waiting queries end.
func TestMaxInflight(t *testing.T) {
	// Three upstreams, silent once the cache is warm: a query that
	// waits tries each for tryTimeout, so it holds its slot for about
	// queryTimeout, time enough for the checks on a loaded machine.
	ups := []*testUpstream{newTestUpstream(t), newTestUpstream(t), newTestUpstream(t)}
	clock := &fakeClock{t: time.Now()}
	s, addr := startServer(t, Config{Upstreams: []string{ups[0].addr, ups[1].addr, ups[2].addr}, MaxInflight: 1},
		Options{Now: clock.now})
	for _, name := range []string{"a.test", "short.test"} {
		if r := ask(t, addr, "udp", name, mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: %v", name, r)
		}
		// The slot comes back once the goroutine that wrote the answer
		// ends, a moment after the answer.
		eventually(t, 5*time.Second, "slot free", func() bool { return s.inflight.Load() == 0 })
	}
	for _, up := range ups {
		up.silent.Store(true)
	}
	clock.add(5 * time.Second) // short.test (TTL 2 s) expires, a.test (300 s) does not

	// One query takes the one slot and waits for the silent upstreams.
	var wg sync.WaitGroup
	wg.Go(func() {
		m := new(mdns.Msg)
		m.SetQuestion("wait.test.", mdns.TypeA)
		c := &mdns.Client{Net: "udp", Timeout: 3 * queryTimeout}
		if r, _, err := c.Exchange(m, addr); err != nil || r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("waiting query: %v %v", r, err)
		}
	})
	eventually(t, 5*time.Second, "a query waiting", func() bool { return s.inflight.Load() == 1 })

	for _, proto := range []string{"udp", "tcp"} {
		start := time.Now()
		r := ask(t, addr, proto, "past-cap-"+proto+".test", mdns.TypeA)
		if r.Rcode != mdns.RcodeServerFailure || !hasEDE(r, edeOther) {
			t.Errorf("past the cap over %s: %v", proto, r)
		}
		if d := time.Since(start); d > tryTimeout {
			t.Errorf("past the cap over %s: answered after %v, as if it had waited for the upstream", proto, d)
		}
	}
	if r := ask(t, addr, "udp", "short.test", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || !hasEDE(r, edeStale) ||
		len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
		t.Errorf("expired answer past the cap: %v, want it stale", r)
	}
	if r := ask(t, addr, "udp", "a.test", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("cached answer past the cap: %v", r)
	}
	if n := testutil.ToFloat64(s.m.overloaded); n != 3 {
		t.Errorf("edgegw_dns_overloaded_queries_total = %v, want 3", n)
	}
	wg.Wait()
	eventually(t, 5*time.Second, "slots free", func() bool { return s.inflight.Load() == 0 })
	ups[0].silent.Store(false)
	if r := ask(t, addr, "udp", "a.test", mdns.TypeAAAA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after the waiting queries ended: %v", r)
	}
}
