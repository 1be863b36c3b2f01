package alert

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// TestOnEventRecords raises and resolves an alert with an OnEvent hook
// that keeps flow_alerts records, as the gateway hands them to Logpush:
// one record per event, fields from the catalogue, the two sharing their
// correlation ID.
func TestOnEventRecords(t *testing.T) {
	var mu sync.Mutex
	var recs []logpush.Record
	c := &clock{t: t0}
	r := Rule{Name: "lan", Prefixes: pfx("10.1.0.0/24"), BitsPerSecond: 80, PacketsPerSecond: 5, Duration: 10 * time.Second}
	e, err := New(Options{Rules: []Rule{r}, Now: c.now, OnEvent: func(ev Event) {
		mu.Lock()
		recs = append(recs, ev.Logpush("ams01"))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	for sec := range 13 {
		c.set(t0.Add(time.Duration(sec) * time.Second))
		e.Observe(toDst("10.1.0.1", c.now(), 1000, 10))
	}
	e.Evaluate(c.now())
	c.set(t0.Add(time.Minute))
	e.Evaluate(c.now())
	mu.Lock()
	defer mu.Unlock()
	if len(recs) != 2 {
		t.Fatalf("%d records, want a firing and a resolve", len(recs))
	}
	known := logpush.Fields(Dataset)
	if len(known) == 0 {
		t.Fatalf("no %s in the Logpush catalogue", Dataset)
	}
	str := func(r logpush.Record, name string) string { v, _ := r.Get(name); return v.Str() }
	num := func(r logpush.Record, name string) int64 { v, _ := r.Get(name); return v.Int() }
	for i, want := range []struct{ event, state string }{{EventStart, "firing"}, {EventEnd, "resolved"}} {
		rec := recs[i]
		for _, f := range rec {
			if !slices.Contains(known, f.Name) {
				t.Errorf("field %s is not in the %s catalogue", f.Name, Dataset)
			}
		}
		if str(rec, "AlertEvent") != want.event || str(rec, "State") != want.state || str(rec, "AlertType") != AlertType ||
			str(rec, "PolicyName") != "lan" || str(rec, "ColoName") != "ams01" || str(rec, "Name") != "Flow alert: lan" || str(rec, "Text") == "" || str(rec, "Prefix") != "10.1.0.0/24" || str(rec, "AlertCorrelationID") == "" ||
			str(rec, "AlertCorrelationID") != str(recs[0], "AlertCorrelationID") || num(rec, "ThresholdBitsPerSecond") != 80 ||
			num(rec, "ThresholdPacketsPerSecond") != 5 || num(rec, "DurationSeconds") != 10 {
			t.Errorf("record %d: %v", i, rec)
		}
		if v, ok := rec.Get("Datetime"); !ok || v.Kind() != logpush.KindTime {
			t.Errorf("record %d: no Datetime", i)
		}
	}
	// The firing's rate: 1000 bytes a second is 8000 bit/s.
	if bps := num(recs[0], "BitsPerSecond"); bps != 8000 {
		t.Errorf("firing BitsPerSecond %d, want 8000", bps)
	}
}
