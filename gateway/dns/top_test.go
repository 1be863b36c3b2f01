package dns

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestSpaceSaving: under its capacity the summary counts exactly; past
// it, a name asked often keeps its place and its count is at most its
// error too high, while rare names come and go.
func TestSpaceSaving(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cap    int
		stream func(add func(string))
		want   map[string]uint64 // exact (error 0) or a lower bound with the error
	}{
		{"exact under capacity", 4, func(add func(string)) {
			for i := range 10 {
				add("a")
				if i%2 == 0 {
					add("b")
				}
			}
			add("c")
		}, map[string]uint64{"a": 10, "b": 5, "c": 1}},
		{"heavy hitter among many rare names", 8, func(add func(string)) {
			for i := range 1000 {
				add("heavy")
				add(fmt.Sprintf("rare-%d", i))
			}
		}, map[string]uint64{"heavy": 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSpaceSaving[string](tc.cap)
			tc.stream(func(k string) { s.add(k, 1) })
			if len(s.items) > tc.cap || len(s.slot) != len(s.items) || len(s.heap) != len(s.items) {
				t.Fatalf("%d counters, %d keys, %d in the heap, capacity %d", len(s.items), len(s.slot), len(s.heap), tc.cap)
			}
			for i, slot := range s.heap {
				it := s.items[slot]
				if it.at != i || s.slot[it.key] != slot {
					t.Fatalf("%q: heap %d says slot %d, item says %d, map %d", it.key, i, slot, it.at, s.slot[it.key])
				}
				if l := 2*i + 1; l < len(s.heap) && s.items[s.heap[l]].count < it.count {
					t.Fatalf("heap order broken at %d", i)
				}
			}
			for k, want := range tc.want {
				i, ok := s.slot[k]
				if !ok {
					t.Fatalf("%q not tracked", k)
				}
				it := s.items[i]
				if it.count-it.err > want || it.count < want {
					t.Errorf("%q: count %d error %d, true count %d", k, it.count, it.err, want)
				}
			}
		})
	}
}

// TestTopWindows: counts move to the previous window after TopWindow and
// are gone after two; per user, the queries, blocks and names are the
// user's own.
func TestTopWindows(t *testing.T) {
	tc := newTopCounts()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 3 {
		tc.add(t0, "a.example", "alice@corp.example", false)
	}
	tc.add(t0, "ads.example", "alice@corp.example", true)
	tc.add(t0.Add(time.Minute), "b.example", "bob@corp.example", false)
	tc.add(t0.Add(TopWindow+time.Second), "a.example", "", false)

	top := tc.snapshot(t0.Add(TopWindow+2*time.Second), 10, "", false)
	if top.Queries != 6 || top.Blocked != 1 || !top.Since.Equal(t0) {
		t.Fatalf("queries %d blocked %d since %v", top.Queries, top.Blocked, top.Since)
	}
	if d := top.Domains[0]; d.Name != "a.example" || d.Count != 4 {
		t.Errorf("top domain %+v", d)
	}
	if len(top.Blocks) != 1 || top.Blocks[0].Name != "ads.example" {
		t.Errorf("blocked %+v", top.Blocks)
	}
	if len(top.Users) != 3 || top.Users[0].User != "alice@corp.example" || top.Users[0].Queries != 4 || top.Users[0].Blocked != 1 {
		t.Fatalf("users %+v", top.Users)
	}
	bob := tc.snapshot(t0.Add(TopWindow+2*time.Second), 10, "bob@corp.example", true)
	if len(bob.Users) != 1 || len(bob.Users[0].Domains) != 1 || bob.Users[0].Domains[0].Name != "b.example" {
		t.Errorf("bob's view %+v", bob.Users)
	}
	// Two windows on, the first window's counts are gone.
	tc.add(t0.Add(2*TopWindow+2*time.Second), "c.example", "", false)
	top = tc.snapshot(t0.Add(2*TopWindow+3*time.Second), 10, "", false)
	if top.Queries != 2 || top.Blocked != 0 {
		t.Errorf("after two windows: %d queries, %d blocked", top.Queries, top.Blocked)
	}
	top = tc.snapshot(t0.Add(10*TopWindow), 10, "", false)
	if top.Queries != 0 || len(top.Domains) != 0 {
		t.Errorf("long after: %+v", top)
	}
}

// TestTopAddAllocates: counting a name already tracked allocates
// nothing, so the cache-hit path's allocations do not change.
func TestTopAddAllocates(t *testing.T) {
	tc := newTopCounts()
	now := time.Now()
	tc.add(now, "a.example", "alice@corp.example", false)
	if n := testing.AllocsPerRun(1000, func() { tc.add(now, "a.example", "alice@corp.example", true) }); n != 0 {
		t.Errorf("%.1f allocations a query", n)
	}
}

// TestTopThroughServer: queries answered by a running resolver, one
// blocked by a policy, from an identified client, show in Server.Top.
func TestTopThroughServer(t *testing.T) {
	up := newTestUpstream(t)
	ids := staticIDs{netip.MustParseAddr("127.0.0.1"): {Email: "bob@corp.example", Interface: "lo"}}
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}, Policies: []Policy{
		{ID: "ads", Expression: `dns.fqdn == "b.test"`, Action: "block"},
	}}, Options{IdentitySource: ids})
	for range 3 {
		ask(t, addr, "udp", "a.test", mdns.TypeA)
	}
	ask(t, addr, "tcp", "b.test", mdns.TypeA)
	var top Top
	eventually(t, 5*time.Second, "4 queries counted", func() bool {
		top = s.Top(10, "bob@corp.example")
		return top.Queries == 4
	})
	if top.Blocked != 1 || len(top.Blocks) != 1 || top.Blocks[0].Name != "b.test" {
		t.Errorf("blocked %d %+v", top.Blocked, top.Blocks)
	}
	if len(top.Domains) != 2 || top.Domains[0] != (TopEntry{Name: "a.test", Count: 3}) {
		t.Errorf("domains %+v", top.Domains)
	}
	if len(top.Users) != 1 || top.Users[0].User != "bob@corp.example" || top.Users[0].Queries != 4 || top.Users[0].Blocked != 1 {
		t.Errorf("users %+v", top.Users)
	}
	if other := s.Top(10, "nobody@corp.example"); len(other.Users) != 0 {
		t.Errorf("another user's view %+v", other.Users)
	}
}

// BenchmarkTopAdd is what each answered query pays for the console's
// top names: "tracked" asks names the tables hold (steady traffic),
// "1000" dnsperf's query set (more names than the 512 counters, so each
// takes over the smallest one), "churn" a new name every time. "shared"
// counts into the summaries (TCP, DoT, DoH and upstream-waiting
// answers); "reader" is a UDP reader's topLocal, with the merges it
// makes (the lock is taken once per batch of 32, as serve does).
func BenchmarkTopAdd(b *testing.B) {
	for _, path := range []string{"shared", "reader"} {
		for _, bc := range []struct {
			name  string
			names int
		}{{"tracked", 12}, {"1000", 1000}, {"churn", 100_000}} {
			b.Run(path+"/"+bc.name, func(b *testing.B) {
				tc := newTopCounts()
				l := tc.newLocal()
				now := time.Now()
				names := make([]string, bc.names)
				for i := range names {
					names[i] = fmt.Sprintf("host-%d.example", i)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if path == "shared" {
						tc.add(now, names[i%len(names)], "alice@corp.example", false)
					} else {
						if i%32 == 0 {
							l.mu.Lock()
						}
						l.add(now, names[i%len(names)], "alice@corp.example", false)
						if i%32 == 31 {
							if l.due(now) {
								l.flushLocked()
							}
							l.mu.Unlock()
						}
					}
					i++
					if i%100_000 == 0 {
						now = now.Add(topLocalAge) // as the clock moves on under load
					}
				}
				if i%32 != 0 && path == "reader" {
					l.mu.Unlock()
				}
			})
		}
	}
}

// TestTopLocal: counts a UDP reader keeps in its topLocal and merges
// (by age, past topLocalKeys names, when Top drains them and when the
// reader stops) give the same tables as counting each query into the
// summaries: exact under capacity, and the same heavy hitters with
// bounded error past it.
func TestTopLocal(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type ask struct {
		name, user string
		blocked    bool
	}
	var stream []ask
	for i := range 3 * topLocalKeys {
		stream = append(stream, ask{"heavy.example", "alice@corp.example", false})
		stream = append(stream, ask{fmt.Sprintf("rare-%d.example", i), "", i%7 == 0})
		if i%3 == 0 {
			stream = append(stream, ask{"ads.example", "bob@corp.example", true})
		}
	}
	direct, merged := newTopCounts(), newTopCounts()
	l := merged.newLocal()
	for i, a := range stream {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		direct.add(now, a.name, a.user, a.blocked)
		l.mu.Lock()
		l.add(now, a.name, a.user, a.blocked)
		if i%32 == 31 && i < len(stream)-100 && l.due(now) {
			l.flushLocked()
		}
		if len(l.counts) > topLocalKeys {
			t.Fatalf("%d pending keys, bound %d", len(l.counts), topLocalKeys)
		}
		l.mu.Unlock()
	}
	if len(l.counts) == 0 {
		t.Fatal("nothing pending: the test does not cover the drain")
	}
	at := t0.Add(time.Duration(len(stream)) * time.Millisecond)
	want, got := direct.snapshot(at, 20, "", false), merged.snapshot(at, 20, "", false)
	if len(l.counts) != 0 {
		t.Errorf("snapshot left %d pending keys", len(l.counts))
	}
	if got.Queries != want.Queries || got.Blocked != want.Blocked || got.Queries != uint64(len(stream)) {
		t.Errorf("queries %d blocked %d, counted one by one %d and %d (%d asked)",
			got.Queries, got.Blocked, want.Queries, want.Blocked, len(stream))
	}
	for _, name := range []string{"heavy.example", "ads.example"} {
		g, w := find(got.Domains, name), find(want.Domains, name)
		if g.Count < w.Count-w.Error || g.Count-g.Error > w.Count {
			t.Errorf("%s: merged %+v, one by one %+v", name, g, w)
		}
	}
	if b := find(got.Blocks, "ads.example"); b.Count < uint64(topLocalKeys) {
		t.Errorf("blocked ads.example %+v", b)
	}
	// alice ties with the unidentified queries and sorts after them.
	if u := got.Users; len(u) != 3 || u[1].User != "alice@corp.example" || u[1].Queries != 3*topLocalKeys || u[1].Blocked != 0 ||
		u[1].Domains[0] != (TopEntry{Name: "heavy.example", Count: 3 * topLocalKeys}) ||
		u[2].User != "bob@corp.example" || u[2].Blocked != u[2].Queries || u[2].Queries != uint64(topLocalKeys) {
		t.Errorf("users %+v", got.Users)
	}

	// A reader that stops merges what it holds and is drained no more.
	l.mu.Lock()
	l.add(at, "last.example", "", false)
	l.mu.Unlock()
	merged.drop(l)
	if len(merged.locals) != 0 {
		t.Errorf("%d readers still drained", len(merged.locals))
	}
	if top := merged.snapshot(at, 100, "", false); top.Queries != uint64(len(stream))+1 {
		t.Errorf("after the reader stopped: %d queries, want %d", top.Queries, len(stream)+1)
	}
}

func find(es []TopEntry, name string) TopEntry {
	for _, e := range es {
		if e.Name == name {
			return e
		}
	}
	return TopEntry{}
}

// TestTopLocalAllocates: a reader counting names it already holds
// allocates nothing, nor does it once its map has grown.
func TestTopLocalAllocates(t *testing.T) {
	tc := newTopCounts()
	l := tc.newLocal()
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(now, "a.example", "alice@corp.example", false)
	if n := testing.AllocsPerRun(1000, func() { l.add(now, "a.example", "alice@corp.example", false) }); n != 0 {
		t.Errorf("%.1f allocations a query", n)
	}
}
