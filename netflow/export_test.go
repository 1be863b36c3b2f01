package netflow

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

// TestSamplesToHEC hands samples to a real logpush.Manager whose job
// selects fields (edgegw's own among them) and sends to the HEC test
// receiver: the records arrive with exactly the selected fields.
func TestSamplesToHEC(t *testing.T) {
	const token = "5a1d2c3b-0000-4000-8000-00000000c0de"
	srv := hectest.New(hectest.Config{Tokens: []string{token}})
	defer srv.Close()
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	fields := []string{"Datetime", "ColoCode", "IPSourceAddress", "IPProtocolName", "DestinationPort", "GREKey",
		"OuterIPSourceAddress", "Outcome", "RuleID", "SampleInterval", "TunnelName", "DeviceID"}
	job := logpush.Job{Name: "flows", Dataset: Dataset, TokenFile: tokFile, Fields: fields,
		Destination:     srv.SplunkURL("/services/collector/event", url.Values{"sourcetype": {"edgegw:network"}}),
		TimestampFormat: logpush.TimestampRFC3339, MaxUploadRecords: 2, MaxUploadInterval: time.Second}
	var problems []string
	j := job
	j.SetDefaults()
	j.Validate(func(f, msg string) { problems = append(problems, f+": "+msg) })
	if len(problems) > 0 {
		t.Fatalf("job with sampler fields rejected: %v", problems)
	}
	m, err := logpush.New([]logpush.Job{job}, logpush.Options{StateDir: t.TempDir(), Host: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s, err := New(Options{Group: 5, Sink: m, Colo: Colo{Code: "lhr"}})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(Rules{RulesetID: "rs", RuleIDs: []string{"block-gre"}, SampleInterval: 100})
	s.SetInterfaces(Interfaces{9: {Name: "branch1", Role: RoleTunnel}})
	s.SetIdentities(IdentityMap{})
	for _, sm := range []Sample{
		{Prefix: "ef/1/b", InDev: 9, Payload: unhex(t, v4GRE)},
		{Prefix: "ef/0/a", InDev: 9, Payload: unhex(t, v4UDP)},
	} {
		if err := s.Handle(sm); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Count() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d events arrived, want 2", srv.Count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var got []string
	for _, ev := range srv.Events() {
		var m map[string]any
		if err := json.Unmarshal(ev.Event, &m); err != nil {
			t.Fatal(err)
		}
		if _, err := time.Parse(time.RFC3339, m["Datetime"].(string)); err != nil {
			t.Errorf("Datetime: %v", err)
		}
		delete(m, "Datetime")
		b, _ := json.Marshal(m)
		got = append(got, string(b))
	}
	want := []string{
		`{"ColoCode":"lhr","GREKey":7,"IPProtocolName":"icmp","IPSourceAddress":"10.1.1.1","Outcome":"drop","OuterIPSourceAddress":"192.0.2.1","RuleID":"block-gre","SampleInterval":100,"TunnelName":"branch1"}`,
		`{"ColoCode":"lhr","DestinationPort":5353,"IPProtocolName":"udp","IPSourceAddress":"10.0.0.1","Outcome":"pass","SampleInterval":100,"TunnelName":"branch1"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMetricsLint(t *testing.T) {
	s, err := New(Options{Group: 1, Sink: &recordSink{}})
	if err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(s.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(s.Collector()); n != 11 {
		t.Errorf("%d series, want 11", n)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Options{Sink: &recordSink{}}); err == nil {
		t.Error("group 0 accepted")
	}
	if _, err := New(Options{Group: 1}); err == nil {
		t.Error("no sink accepted")
	}
}
