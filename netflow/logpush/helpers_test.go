package logpush

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

const (
	testToken   = "0c3f2b1a-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
	testChannel = "9a1c7b5e-3f2d-4c8e-b1a0-6d5f4e3c2b1a"
)

// benchRecord is a typical sampled packet; PFPCustomTag carries seq.
func benchRecord(seq int) Record {
	return Record{
		{"Datetime", Time(t0.Add(time.Duration(seq) * time.Microsecond))},
		{"ColoCode", String("ams")},
		{"ColoName", String("gw-ams01")},
		{"Direction", String("ingress")},
		{"IPSourceAddress", String("198.51." + strconv.Itoa(seq/250%250) + "." + strconv.Itoa(seq%250))},
		{"IPDestinationAddress", String("192.0.2.10")},
		{"IPProtocol", Uint(6)},
		{"IPProtocolName", String("tcp")},
		{"IPTotalLength", Uint(uint64(40 + seq*7919%1460))},
		{"IPTTL", Uint(61)},
		{"SourcePort", Uint(uint64(1024 + seq*104729%60000))},
		{"DestinationPort", Uint(443)},
		{"TCPFlags", Uint(0x18)},
		{"TCPFlagsString", String("PA")},
		{"Outcome", String("pass")},
		{"Verdict", String("pass")},
		{"MitigationSystem", String("magic-firewall")},
		{"RuleID", String("r-" + strconv.Itoa(seq%7))},
		{"SampleInterval", Uint(100)},
		{"PFPCustomTag", Int(int64(seq))}, // the record's sequence number in tests
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("LOGPUSH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testOpts(t testing.TB) Options {
	return Options{Logger: testLogger(), StateDir: t.TempDir(), Host: "gw-test",
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		AckInterval: 20 * time.Millisecond, AckTimeout: 10 * time.Second, RequestTimeout: 5 * time.Second}
}

func writeToken(t testing.TB, tok string) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// hecJob is a job sending network_analytics_logs to srv's event endpoint.
func hecJob(t testing.TB, srv *hectest.Server, name string, q url.Values) Job {
	if q == nil {
		q = url.Values{"channel": {testChannel}, "sourcetype": {"edgegw:network"}}
	}
	return Job{Name: name, Dataset: "network_analytics_logs",
		Destination: srv.SplunkURL("/services/collector/event", q), TokenFile: writeToken(t, testToken),
		TimestampFormat: TimestampUnixNano, MaxUploadRecords: 1000, MaxUploadInterval: time.Second}
}

type runner struct {
	m      *Manager
	cancel context.CancelFunc
	done   chan error
}

func run(t testing.TB, m *Manager) *runner {
	ctx, cancel := context.WithCancel(t.Context())
	r := &runner{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(r.stop)
	waitFor(t, 5*time.Second, "manager running", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ctx != nil
	})
	return r
}

func (r *runner) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

func newManager(t testing.TB, jobs []Job, opts Options) *Manager {
	t.Helper()
	m, err := New(jobs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusOf(m *Manager, name string) JobStatus {
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	return JobStatus{}
}

// seqs returns how often each sequence number (PFPCustomTag) arrived.
func seqs(t testing.TB, evs []hectest.Event) map[int64]int {
	t.Helper()
	out := map[int64]int{}
	for _, ev := range evs {
		var body struct{ PFPCustomTag *int64 }
		if err := json.Unmarshal(ev.Event, &body); err != nil || body.PFPCustomTag == nil {
			t.Fatalf("event without a sequence number: %s (%v)", ev.Event, err)
		}
		out[*body.PFPCustomTag]++
	}
	return out
}

func pushN(m *Manager, from, n int) {
	for i := from; i < from+n; i++ {
		m.Push("network_analytics_logs", benchRecord(i))
	}
}
