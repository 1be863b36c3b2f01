package logpush

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		status    int
		body      string
		retryHdr  string
		permanent bool
		msg       string
		retry     time.Duration
	}{
		{200, `{"text":"Success","code":0}`, "", false, "", 0},
		{503, `{"text":"Server is busy","code":9}`, "", false, "HTTP 503: HEC code 9: Server is busy", 0},
		{500, `{"text":"Internal server error","code":8}`, "", false, "HTTP 500: HEC code 8: Internal server error", 0},
		{429, ``, "7", false, "HTTP 429", 7 * time.Second},
		{502, `<html>bad gateway</html>`, "", false, `HTTP 502: "<html>bad gateway</html>"`, 0},
		{403, `{"text":"Invalid token","code":4}`, "", true, "HTTP 403: HEC code 4: Invalid token", 0},
		{400, `{"text":"Invalid data format","code":6,"invalid-event-number":3}`, "", true, "HTTP 400: HEC code 6: Invalid data format", 0},
		{413, ``, "", true, "HTTP 413", 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.retryHdr != "" {
			h.Set("Retry-After", tt.retryHdr)
		}
		o := classify(tt.status, h, []byte(tt.body), true)
		msg := ""
		if o.err != nil {
			msg = o.err.Error()
		}
		if msg != tt.msg || o.permanent != tt.permanent || o.retryAfter != tt.retry {
			t.Errorf("%d %s: got %q permanent=%v retry=%v", tt.status, tt.body, msg, o.permanent, o.retryAfter)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "-1": 0, "x": 0,
		"Wed, 25 Nov 2026 18:00:30 GMT": 30 * time.Second, "Wed, 25 Nov 2026 17:00:00 GMT": 0} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzParseHECReply(f *testing.F) {
	f.Add([]byte(`{"text":"Success","code":0,"ackId":7}`))
	f.Add([]byte(`{"text":"Invalid data format","code":6,"invalid-event-number":0}`))
	f.Add([]byte(`{"acks":{"0":true,"1":false}}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		parseHECReply(body)
		parseAckReply(body)
		for _, st := range []int{200, 400, 429, 503} {
			o := classify(st, http.Header{"Retry-After": {string(body)}}, body, true)
			if (st == 200) != (o.err == nil) || o.retryAfter < 0 {
				t.Fatalf("classify(%d, %q) = %+v", st, body, o)
			}
		}
	})
}

func TestFilterAndSampleRate(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	filtered := hecJob(t, srv, "filtered", nil)
	filtered.Filter = `ruleid == "r-3" and ipsourceaddress in {198.51.0.0/16} and datetime > 0`
	sampled := hecJob(t, srv, "sampled", nil)
	sampled.SampleRate = 0.5
	m := newManager(t, []Job{filtered, sampled}, testOpts(t))
	r := run(t, m)
	pushN(m, 0, 7000)
	m.Push("gateway_dns", Record{{"QueryName", String("example.com")}}) // no job for it
	r.stop()
	f, s := statusOf(m, "filtered"), statusOf(m, "sampled")
	if f.FilteredOut != 6000 {
		t.Errorf("filtered out %d, want 6000", f.FilteredOut)
	}
	if s.SampledOut < 3000 || s.SampledOut > 4000 {
		t.Errorf("sample_rate 0.5 dropped %d of 7000", s.SampledOut)
	}
}

func TestMetricsLint(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	srv.Fault(hectest.Busy())
	reg := prometheus.NewRegistry()
	opts := testOpts(t)
	opts.Registerer = reg
	j := hecJob(t, srv, "m", nil)
	j.MaxUploadRecords = 10
	m := newManager(t, []Job{j}, opts)
	run(t, m)
	pushN(m, 0, 10)
	waitFor(t, 5*time.Second, "delivery", func() bool { return statusOf(m, "m").RecordsSent == 10 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"edgegw_logpush_records_sent_total", "edgegw_logpush_retries_total", "edgegw_logpush_spool_bytes", "edgegw_logpush_failing"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}

// TestRunOwnsItsGoroutines checks that no job goroutine outlives Run.
func TestRunOwnsItsGoroutines(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	srv.SetDown(true) // the sender is mid-retry when Run ends
	m := newManager(t, []Job{hecJob(t, srv, "a", nil), hecJob(t, srv, "b", nil)}, testOpts(t))
	r := run(t, m)
	pushN(m, 0, 1500)
	waitFor(t, 5*time.Second, "retrying", func() bool { return statusOf(m, "a").Retries["transport"] > 0 })
	r.stop()
	// A goroutine that has signalled its WaitGroup may still be exiting.
	buf := make([]byte, 1<<20)
	waitFor(t, 5*time.Second, "job goroutines gone", func() bool {
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "logpush.(*job)")
	})
	if st := statusOf(m, "a"); st.State != "stopped" || st.SpooledBatches != 2 {
		t.Errorf("after Run: %+v", st)
	}
}
