package logpush

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

func TestHECEventEndpoint(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}, Indexes: []string{"netlogs"}})
	defer srv.Close()
	j := hecJob(t, srv, "splunk", url.Values{"channel": {testChannel}, "sourcetype": {"edgegw:network"}, "index": {"netlogs"}, "source": {"edgegw"}})
	j.Fields = []string{"Datetime", "ColoCode", "SourcePort"}
	j.TimestampFormat = TimestampRFC3339
	m := newManager(t, []Job{j}, testOpts(t))
	run(t, m)
	pushN(m, 0, 2500) // two batches by count, the rest by interval
	waitFor(t, 10*time.Second, "2500 events", func() bool { return srv.Count() == 2500 })

	evs := srv.Events()
	ev := evs[0]
	if ev.Host != "gw-test" || ev.Sourcetype != "edgegw:network" || ev.Index != "netlogs" || ev.Source != "edgegw" || ev.Channel != testChannel {
		t.Errorf("envelope = %+v", ev)
	}
	if want := float64(t0.UnixMilli()) / 1000; ev.Time != want {
		t.Errorf("time = %v, want %v", ev.Time, want)
	}
	if got, want := string(ev.Event), `{"Datetime":"2026-11-25T18:23:08Z","ColoCode":"ams","SourcePort":1024}`; got != want {
		t.Errorf("event = %s, want %s", got, want)
	}
	h := srv.LastHeaders()
	if h.Get("Authorization") != "Splunk "+testToken || h.Get("Content-Encoding") != "gzip" || h.Get("X-Splunk-Request-Channel") != testChannel {
		t.Errorf("headers = %v", h)
	}
	waitFor(t, 5*time.Second, "status", func() bool { return statusOf(m, "splunk").RecordsSent == 2500 })
	st := statusOf(m, "splunk")
	if st.BatchesSent != 3 || st.LastComplete == nil || st.LastError != nil || st.SpooledBatches != 0 || st.State != "running" {
		t.Errorf("status = %+v", st)
	}
	if strings.Contains(st.Destination, testToken) {
		t.Errorf("destination shows a secret: %s", st.Destination)
	}
}

func TestHECRawEndpoint(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	j := hecJob(t, srv, "raw", nil)
	j.Destination = srv.SplunkURL("/services/collector/raw", url.Values{"channel": {testChannel}, "sourcetype": {"cloudflare:json"}, "host": {"edge-1"}})
	j.MaxUploadRecords = 10
	m := newManager(t, []Job{j}, testOpts(t))
	run(t, m)
	pushN(m, 0, 30)
	waitFor(t, 5*time.Second, "30 events", func() bool { return srv.Count() == 30 })
	ev := srv.Events()[0]
	if ev.Sourcetype != "cloudflare:json" || ev.Host != "edge-1" || ev.Endpoint != "raw" {
		t.Errorf("raw event = %+v", ev)
	}
	if got := seqs(t, srv.Events()); len(got) != 30 {
		t.Errorf("got %d distinct records", len(got))
	}
}

func TestHTTPSDestination(t *testing.T) {
	srv := hectest.New(hectest.Config{})
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	j := Job{Name: "http", Dataset: "network_analytics_logs", CAFile: ca, MaxUploadRecords: 5,
		Destination: srv.URL() + "/ndjson?header_X-Api-Key=s3cret&header_Authorization=Bearer%20abc&tag=x"}
	m := newManager(t, []Job{j}, testOpts(t))
	run(t, m)
	pushN(m, 0, 10)
	waitFor(t, 5*time.Second, "10 lines", func() bool { return srv.Count() == 10 })
	h := srv.LastHeaders()
	if h.Get("X-Api-Key") != "s3cret" || h.Get("Authorization") != "Bearer abc" || h.Get("Content-Encoding") != "gzip" {
		t.Errorf("headers = %v", h)
	}
	var rec map[string]any
	if err := json.Unmarshal(srv.Events()[0].Event, &rec); err != nil || rec["Datetime"] != "2026-11-25T18:23:08Z" {
		t.Errorf("ndjson line %s: %v", srv.Events()[0].Event, err)
	}
	if d := statusOf(m, "http").Destination; strings.Contains(d, "s3cret") || strings.Contains(d, "abc") {
		t.Errorf("destination shows secrets: %s", d)
	}
}

func TestFileDestinationRotates(t *testing.T) {
	out := filepath.Join(t.TempDir(), "logs", "net.ndjson")
	j := Job{Name: "file", Dataset: "network_analytics_logs", Destination: "file://" + out + "?max_size=4000&keep=2",
		Fields: []string{"SourcePort"}, MaxUploadRecords: 50}
	m := newManager(t, []Job{j}, testOpts(t))
	r := run(t, m)
	pushN(m, 0, 500)
	waitFor(t, 10*time.Second, "500 records written", func() bool { return statusOf(m, "file").RecordsSent == 500 })
	r.stop()
	rotated, _ := filepath.Glob(out + ".2*")
	if len(rotated) != 2 {
		t.Errorf("rotated files = %v, want 2 kept", rotated)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) == 0 || len(lines) > 500 || !strings.HasPrefix(lines[0], `{"SourcePort":`) {
		t.Errorf("current file has %d lines, first %q", len(lines), lines[0])
	}
	port, _ := benchRecord(499).Get("SourcePort")
	if last, want := lines[len(lines)-1], `{"SourcePort":`+strconv.FormatInt(port.Int(), 10)+`}`; last != want {
		t.Errorf("last line %q", last)
	}
}

func TestIndexerAck(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}, Ack: true, AckDelay: 100 * time.Millisecond})
	defer srv.Close()
	j := hecJob(t, srv, "acked", nil)
	j.IndexerAck = true
	j.MaxUploadRecords = 100
	m := newManager(t, []Job{j}, testOpts(t))
	run(t, m)
	pushN(m, 0, 1000)
	waitFor(t, 10*time.Second, "1000 acked", func() bool { return statusOf(m, "acked").RecordsSent == 1000 })
	if st := statusOf(m, "acked"); st.SpooledBatches != 0 || st.BatchesSent != 10 {
		t.Errorf("status = %+v", st)
	}
	if n := srv.Count(); n != 1000 {
		t.Errorf("receiver has %d events, want 1000 (no resends)", n)
	}
}

func TestIndexerAckTimeoutResends(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}, Ack: true, AckDelay: time.Hour})
	defer srv.Close()
	j := hecJob(t, srv, "acked", nil)
	j.IndexerAck = true
	j.MaxUploadRecords = 10
	opts := testOpts(t)
	opts.AckTimeout = 100 * time.Millisecond
	m := newManager(t, []Job{j}, opts)
	run(t, m)
	pushN(m, 0, 10)
	waitFor(t, 10*time.Second, "a resend", func() bool { return srv.Count() >= 20 })
	st := statusOf(m, "acked")
	if st.RecordsSent != 0 || st.SpooledBatches != 1 {
		t.Errorf("an unacked batch must stay spooled: %+v", st)
	}
}

func TestIndexerAckDisabledIsPermanent(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	j := hecJob(t, srv, "acked", nil)
	j.IndexerAck = true
	j.MaxUploadRecords = 10
	m := newManager(t, []Job{j}, testOpts(t))
	run(t, m)
	pushN(m, 0, 10)
	waitFor(t, 5*time.Second, "job failed", func() bool { return statusOf(m, "acked").State == "failed" })
	if msg := *statusOf(m, "acked").ErrorMessage; !strings.Contains(msg, "without an ackId") {
		t.Errorf("error_message = %q", msg)
	}
}

func TestRetriedFaults(t *testing.T) {
	tests := []struct {
		name     string
		fault    hectest.Fault
		code     string
		dups     bool // the receiver stored the batch before the failure
		minDelay time.Duration
	}{
		{"503 busy", hectest.Busy(), "503", false, 0},
		{"500 internal", hectest.Internal(), "500", false, 0},
		{"429 retry-after", hectest.TooMany("1"), "429", false, 900 * time.Millisecond},
		{"connection reset", hectest.Reset(), "transport", false, 0},
		{"reset after ingest", hectest.Fault{Reset: true, Ingest: true}, "transport", true, 0},
		{"slow answer", hectest.Slow(time.Minute), "transport", false, 0}, // the client gives up first
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
			defer srv.Close()
			srv.Fault(tt.fault)
			j := hecJob(t, srv, "j", nil)
			j.MaxUploadRecords = 100
			opts := testOpts(t)
			opts.RequestTimeout = 2 * time.Second
			m := newManager(t, []Job{j}, opts)
			run(t, m)
			start := time.Now()
			pushN(m, 0, 100)
			waitFor(t, 10*time.Second, "delivery", func() bool { return statusOf(m, "j").RecordsSent == 100 })
			if d := time.Since(start); d < tt.minDelay {
				t.Errorf("delivered after %v, before Retry-After", d)
			}
			st := statusOf(m, "j")
			if st.Retries[tt.code] != 1 || len(st.Retries) != 1 {
				t.Errorf("retries = %v, want one %s", st.Retries, tt.code)
			}
			if st.LastError != nil || st.ErrorMessage != nil {
				t.Errorf("success must clear the error: %+v", st)
			}
			want := 100
			if tt.dups {
				want = 200
			}
			if got := seqs(t, srv.Events()); len(got) != 100 || srv.Count() != want {
				t.Errorf("%d distinct, %d events; want 100, %d", len(got), srv.Count(), want)
			}
		})
	}
}

func TestPermanentErrorStopsOnlyThatJob(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}, DisabledTokens: []string{"off"}, Indexes: []string{"main"}})
	defer srv.Close()
	good := hecJob(t, srv, "good", nil)
	badToken := hecJob(t, srv, "bad-token", nil)
	badToken.TokenFile = writeToken(t, "wrong")
	disabled := hecJob(t, srv, "disabled-token", nil)
	disabled.TokenFile = writeToken(t, "off")
	badIndex := hecJob(t, srv, "bad-index", url.Values{"channel": {testChannel}, "index": {"secret"}})
	jobs := []Job{good, badToken, disabled, badIndex}
	for i := range jobs {
		jobs[i].MaxUploadRecords = 10
	}
	m := newManager(t, jobs, testOpts(t))
	run(t, m)
	pushN(m, 0, 50)
	want := map[string]string{
		"bad-token":      "HTTP 403: HEC code 4: Invalid token",
		"disabled-token": "HTTP 403: HEC code 1: Token disabled",
		"bad-index":      "HTTP 400: HEC code 7: Incorrect index",
	}
	for name, msg := range want {
		waitFor(t, 5*time.Second, name+" failed", func() bool { return statusOf(m, name).State == "failed" })
		st := statusOf(m, name)
		if st.ErrorMessage == nil || *st.ErrorMessage != msg || st.LastError == nil || len(st.Retries) != 0 {
			t.Errorf("%s: status %+v, want message %q", name, st, msg)
		}
	}
	waitFor(t, 5*time.Second, "good job delivers", func() bool { return statusOf(m, "good").RecordsSent == 50 })
	if n := srv.Count(); n != 50 {
		t.Errorf("receiver has %d events, want 50", n)
	}
	// The failed jobs keep spooling, so a fixed configuration loses nothing.
	pushN(m, 50, 10)
	waitFor(t, 5*time.Second, "spooled while failed", func() bool { return statusOf(m, "bad-token").SpooledBatches == 6 })
}
