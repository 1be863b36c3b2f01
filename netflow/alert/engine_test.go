package alert

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/store"
)

var t0 = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func pfx(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func toDst(dst string, at time.Time, bytes, packets uint64) store.Flow {
	return store.Flow{Time: at, Src: netip.MustParseAddr("203.0.113.9"), Dst: netip.MustParseAddr(dst), Protocol: 17, Bytes: bytes, Packets: packets}
}

func TestRuleValidate(t *testing.T) {
	good := Rule{Name: "r", Prefixes: pfx("10.0.0.0/8"), BitsPerSecond: 1, Duration: 10 * time.Second}
	for _, tc := range []struct {
		name string
		edit func(r *Rule)
		err  string
	}{
		{"good", func(r *Rule) {}, ""},
		{"no name", func(r *Rule) { r.Name = " " }, "no name"},
		{"no prefixes", func(r *Rule) { r.Prefixes = nil }, "no prefixes"},
		{"no threshold", func(r *Rule) { r.BitsPerSecond = 0 }, "no threshold"},
		{"too short", func(r *Rule) { r.Duration = 9 * time.Second }, "duration 9s"},
		{"fraction", func(r *Rule) { r.Duration = 10500 * time.Millisecond }, "whole seconds"},
		{"too long", func(r *Rule) { r.Duration = 2 * time.Hour }, "duration"},
	} {
		r := good
		tc.edit(&r)
		err := r.Validate()
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	if _, err := New(Options{Rules: []Rule{good, good}}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate names: %v", err)
	}
	if _, err := New(Options{Webhooks: []Webhook{{URL: "ftp://x"}}}); err == nil {
		t.Error("an ftp webhook was accepted")
	}
}

// step is one second of a scenario: flows observed in it, then the
// events Evaluate must raise at its end (rule/prefix/state).
type step struct {
	flows []store.Flow
	want  []string
}

func TestEvaluate(t *testing.T) {
	perPrefix := Rule{Name: "office", Prefixes: pfx("10.1.0.0/24", "10.2.0.0/24"), BitsPerSecond: 8000, Duration: 10 * time.Second}
	sum := Rule{Name: "both", Prefixes: pfx("10.1.0.0/24", "10.2.0.0/24", "10.0.0.0/8"), PacketsPerSecond: 10, Duration: 10 * time.Second, Sum: true}
	// 1000 bytes/s = 8000 bits/s: 10 s of it reach the per-prefix threshold.
	flood := func(dst string, bytes, packets uint64) func(sec int) []store.Flow {
		return func(sec int) []store.Flow {
			return []store.Flow{toDst(dst, t0.Add(time.Duration(sec)*time.Second), bytes, packets)}
		}
	}
	for _, tc := range []struct {
		name  string
		rules []Rule
		secs  int
		flows func(sec int) []store.Flow
		want  map[int][]string // second → events
	}{
		// Judged 2 s (Lag) late: seconds 0–9 are complete at second 11.
		{"per prefix fires after the duration and resolves", []Rule{perPrefix}, 25,
			func(sec int) []store.Flow {
				if sec < 12 {
					return flood("10.1.0.7", 1000, 1)(sec)
				}
				return nil
			},
			map[int][]string{11: {"office 10.1.0.0/24 firing"}, 14: {"office 10.1.0.0/24 resolved"}}},
		{"under the threshold never fires", []Rule{perPrefix}, 30, flood("10.1.0.7", 999, 1), nil},
		{"one quiet second in the duration holds it off", []Rule{perPrefix}, 20,
			func(sec int) []store.Flow {
				if sec == 5 {
					return nil
				}
				return flood("10.1.0.7", 2000, 1)(sec)
			},
			map[int][]string{17: {"office 10.1.0.0/24 firing"}}},
		{"a dip does not resolve", []Rule{perPrefix}, 30,
			func(sec int) []store.Flow {
				if sec == 15 {
					return nil
				}
				return flood("10.1.0.7", 1500, 1)(sec)
			},
			map[int][]string{11: {"office 10.1.0.0/24 firing"}}},
		{"another prefix's traffic does not add", []Rule{perPrefix}, 30,
			func(sec int) []store.Flow {
				return append(flood("10.1.0.7", 600, 1)(sec), flood("10.2.0.7", 600, 1)(sec)...)
			}, nil},
		{"sum adds prefixes, counts an address once", []Rule{sum}, 15,
			func(sec int) []store.Flow {
				return append(flood("10.1.0.7", 1, 6)(sec), flood("10.2.0.7", 1, 4)(sec)...)
			},
			map[int][]string{11: {"both 10.1.0.0/24,10.2.0.0/24,10.0.0.0/8 firing"}}},
		{"one long flow reported late is spread over its life", []Rule{perPrefix}, 14,
			func(sec int) []store.Flow {
				if sec == 13 { // 14 s at 1100 bytes/s, reported at once
					f := toDst("10.1.0.7", t0.Add(13*time.Second), 14*1100, 14)
					f.Start = t0
					return []store.Flow{f}
				}
				return nil
			}, map[int][]string{13: {"office 10.1.0.0/24 firing"}}},
		{"one burst is not a flood", []Rule{perPrefix}, 14,
			func(sec int) []store.Flow {
				if sec == 2 {
					return []store.Flow{toDst("10.1.0.7", t0.Add(2*time.Second), 1e9, 1)}
				}
				return nil
			}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: t0}
			e, err := New(Options{Rules: tc.rules, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			got := map[int][]string{}
			for sec := range tc.secs {
				c.set(t0.Add(time.Duration(sec)*time.Second + 500*time.Millisecond))
				for _, f := range tc.flows(sec) {
					e.Observe(f)
				}
				for _, ev := range e.Evaluate(c.now()) {
					got[sec] = append(got[sec], ev.Rule+" "+ev.Prefix+" "+string(ev.State))
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %v, want %v", got, tc.want)
			}
			for sec, w := range tc.want {
				if strings.Join(got[sec], ";") != strings.Join(w, ";") {
					t.Errorf("second %d: %v, want %v (all: %v)", sec, got[sec], w, got)
				}
			}
			h := e.History()
			if n := len(tc.want); n > 0 && len(h) == 0 {
				t.Errorf("no history")
			}
			for i := 1; i < len(h); i++ {
				if h[i].State == Resolved && h[i].ID != h[i-1].ID {
					t.Errorf("resolve %v does not carry the firing's id %v", h[i], h[i-1])
				}
			}
		})
	}
}

func TestSetRulesKeepsState(t *testing.T) {
	c := &clock{t: t0}
	r := Rule{Name: "r", Prefixes: pfx("10.1.0.0/24"), PacketsPerSecond: 1, Duration: 10 * time.Second}
	e, _ := New(Options{Rules: []Rule{r}, Now: c.now})
	for sec := range 13 {
		c.set(t0.Add(time.Duration(sec) * time.Second))
		e.Observe(toDst("10.1.0.1", c.now(), 1, 1))
	}
	if evs := e.Evaluate(c.now()); len(evs) != 1 {
		t.Fatalf("events %v", evs)
	}
	r.PacketsPerSecond = 2 // a new threshold keeps the window and the open alert
	if err := e.SetRules([]Rule{r}); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Firing != 1 {
		t.Fatalf("stats %+v", st)
	}
	if evs := e.Evaluate(c.now()); len(evs) != 1 || evs[0].State != Resolved {
		t.Fatalf("after raising the threshold: %v", evs)
	}
	if err := e.SetRules(nil); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Fired != 1 || st.Resolved != 1 || st.Firing != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// receiver is a local webhook endpoint that fails its first failures
// requests with 503.
type receiver struct {
	mu       sync.Mutex
	failures int
	calls    int
	got      []map[string]any
	auth     []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	if rc.failures > 0 {
		rc.failures--
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	rc.got = append(rc.got, m)
	rc.auth = append(rc.auth, r.Header.Get("cf-webhook-auth"))
}

func (rc *receiver) payloads() ([]map[string]any, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]map[string]any(nil), rc.got...), append([]string(nil), rc.auth...)
}

func TestWebhookDelivery(t *testing.T) {
	rc := &receiver{failures: 2}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }))
	defer bad.Close()
	c := &clock{t: t0}
	r := Rule{Name: "lan", Prefixes: pfx("10.1.0.0/24"), BitsPerSecond: 80, Duration: 10 * time.Second}
	e, err := New(Options{Rules: []Rule{r}, Now: c.now, RetryDelay: 10 * time.Millisecond,
		Webhooks: []Webhook{{URL: srv.URL + "/hook", Secret: "s3cret"}, {URL: bad.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for sec := range 13 {
		c.set(t0.Add(time.Duration(sec) * time.Second))
		e.Observe(toDst("10.1.0.1", c.now(), 1000, 10))
	}
	if evs := e.Evaluate(c.now()); len(evs) != 1 {
		t.Fatalf("events %v", evs)
	}
	c.set(t0.Add(time.Minute))
	e.Evaluate(c.now())
	testkit.Eventually(t, 10*time.Second, "firing and resolve delivered", func() error {
		if got, _ := rc.payloads(); len(got) < 2 {
			return errorf("%d payloads; stats %+v", len(got), e.Stats())
		}
		if st := e.Stats(); st.Failed < 2 {
			return errorf("the refusing hook's failures not counted: %+v", st)
		}
		return nil
	})
	got, auth := rc.payloads()
	for i, want := range []string{"ALERT_STATE_EVENT_START", "ALERT_STATE_EVENT_END"} {
		p := got[i]
		data, _ := p["data"].(map[string]any)
		if p["alert_event"] != want || p["alert_type"] != AlertType || p["policy_name"] != "lan" ||
			data["prefix"] != "10.1.0.0/24" || p["alert_correlation_id"] != got[0]["alert_correlation_id"] || auth[i] != "s3cret" {
			t.Errorf("payload %d: %v (auth %q)", i, p, auth[i])
		}
	}
	rc.mu.Lock()
	calls := rc.calls
	rc.mu.Unlock()
	if st := e.Stats(); calls != 4 || st.Delivered != 2 || st.Failed != 2 {
		t.Errorf("%d calls (two 503s retried), stats %+v", calls, st)
	}
}
