package alert

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// pdReceiver checks events as PagerDuty's Events API v2 does (a 32-
// character routing key, trigger or resolve, a trigger's summary, source
// and severity) and answers 202 with the dedup key, or 400; it answers
// 429 to its first throttle requests.
type pdReceiver struct {
	mu       sync.Mutex
	throttle int
	events   []pdEvent
	bad      int
}

func (p *pdReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.throttle > 0 {
		p.throttle--
		http.Error(w, `{"status":"throttle event"}`, http.StatusTooManyRequests)
		return
	}
	var e pdEvent
	err := json.NewDecoder(r.Body).Decode(&e)
	valid := err == nil && r.URL.Path == "/v2/enqueue" && len(e.RoutingKey) == 32 && e.DedupKey != "" &&
		((e.EventAction == "resolve" && e.Payload == nil) ||
			(e.EventAction == "trigger" && e.Payload != nil && e.Payload.Summary != "" && e.Payload.Source != "" &&
				strings.Contains("critical error warning info", e.Payload.Severity)))
	if !valid {
		p.bad++
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"status": "invalid event", "message": "Event object is invalid"})
		return
	}
	p.events = append(p.events, e)
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(map[string]string{"status": "success", "message": "Event processed", "dedup_key": e.DedupKey})
}

func TestPagerDuty(t *testing.T) {
	pd := &pdReceiver{throttle: 1}
	srv := httptest.NewServer(pd)
	defer srv.Close()
	c := &clock{t: t0}
	r := Rule{Name: "lan", Prefixes: pfx("10.1.0.0/24"), PacketsPerSecond: 5, Duration: 10 * time.Second}
	key := strings.Repeat("a", 32)
	e, err := New(Options{Rules: []Rule{r}, Now: c.now, RetryDelay: 10 * time.Millisecond,
		PagerDuty: []PagerDuty{{RoutingKey: key, URL: srv.URL + "/v2/enqueue", Source: "ams-office-1"}, {RoutingKey: key, URL: srv.URL + "/wrong"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for sec := range 13 {
		c.set(t0.Add(time.Duration(sec) * time.Second))
		e.Observe(toDst("10.1.0.9", c.now(), 500, 5))
	}
	e.Evaluate(c.now())
	c.set(t0.Add(time.Minute))
	e.Evaluate(c.now())
	testkit.Eventually(t, 10*time.Second, "trigger and resolve at PagerDuty", func() error {
		pd.mu.Lock()
		defer pd.mu.Unlock()
		if len(pd.events) < 2 || pd.bad < 2 {
			return errorf("%d events, %d refused; stats %+v", len(pd.events), pd.bad, e.Stats())
		}
		return nil
	})
	pd.mu.Lock()
	defer pd.mu.Unlock()
	tr, rs := pd.events[0], pd.events[1]
	if tr.EventAction != "trigger" || rs.EventAction != "resolve" || tr.DedupKey != rs.DedupKey ||
		tr.Payload.Source != "ams-office-1" || tr.Payload.Severity != "critical" || tr.Payload.Component != "10.1.0.0/24" ||
		tr.Payload.CustomDetails.Rule != "lan" || !strings.Contains(tr.Payload.Summary, "10.1.0.0/24") {
		t.Errorf("events %+v %+v", tr, rs)
	}
	// The wrong path's 400s were not retried; the 429 was.
	if st := e.Stats(); st.Delivered != 2 || st.Failed != 2 || pd.bad != 2 {
		t.Errorf("stats %+v, %d refused", st, pd.bad)
	}
}

func TestPagerDutyValidate(t *testing.T) {
	for _, tc := range []struct {
		p   PagerDuty
		err string
	}{
		{PagerDuty{RoutingKey: strings.Repeat("a", 32)}, ""},
		{PagerDuty{RoutingKey: "short"}, "32 characters"},
		{PagerDuty{RoutingKey: strings.Repeat("a", 32), URL: "ftp://x"}, "http or https"},
	} {
		err := tc.p.validate()
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: %v", tc.p, err)
		}
	}
	if s := (&PagerDuty{RoutingKey: strings.Repeat("a", 32)}).String(); strings.Contains(s, "aaaa") || !strings.Contains(s, "events.pagerduty.com") {
		t.Errorf("String %q", s)
	}
}
