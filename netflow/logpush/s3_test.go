package logpush

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/klauspost/compress/gzip"
)

const (
	testS3Bucket = "edge-logs"
	testS3KeyID  = "AKIAEDGEGWTEST"
	testS3Secret = "c2VjcmV0LWFjY2Vzcy1rZXktZm9yLXRlc3Rz"
)

// s3Server is an in-process S3-compatible server over HTTPS (gofakes3)
// with one bucket, the code base the destination is tested against.
type s3Server struct {
	backend *s3mem.Backend
	srv     *httptest.Server
	caFile  string
	puts    atomic.Int64
	failN   atomic.Int64 // answer this many more PUTs with 503 SlowDown
}

func newS3Server(t *testing.T) *s3Server {
	t.Helper()
	s := &s3Server{backend: s3mem.New()}
	if err := s.backend.CreateBucket(testS3Bucket); err != nil {
		t.Fatal(err)
	}
	fake := gofakes3.New(s.backend, gofakes3.WithTimeSkewLimit(time.Hour)).Server()
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			s.puts.Add(1)
			if s.failN.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
				return
			}
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// job returns a job sending network_analytics_logs to bucket/prefix.
func (s *s3Server) job(t *testing.T, name, bucket, prefix string) Job {
	q := url.Values{"region": {"eu-central-1"}, "access-key-id": {testS3KeyID}, "endpoint": {s.srv.URL}}
	return Job{Name: name, Dataset: "network_analytics_logs", CAFile: s.caFile, TokenFile: writeToken(t, testS3Secret),
		Destination: "s3://" + bucket + "/" + prefix + "?" + q.Encode(), TimestampFormat: TimestampUnixNano,
		MaxUploadRecords: 1000, MaxUploadInterval: time.Second}
}

// s3Object is one stored object, decoded.
type s3Object struct {
	key         string
	contentType string
	gzipTime    time.Time
	seqs        []int64
}

// objects lists the bucket and decodes every object back to its records.
func (s *s3Server) objects(t *testing.T) []s3Object {
	t.Helper()
	list, err := s.backend.ListBucket(testS3Bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var out []s3Object
	for _, c := range list.Contents {
		obj, err := s.backend.GetObject(testS3Bucket, c.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(obj.Contents)
		obj.Contents.Close()
		if err != nil {
			t.Fatal(err)
		}
		o := s3Object{key: c.Key, contentType: obj.Metadata["Content-Type"]}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("object %s is not gzip: %v", c.Key, err)
		}
		o.gzipTime = zr.Header.ModTime
		sc := bufio.NewScanner(zr)
		for sc.Scan() {
			var rec struct{ PFPCustomTag *int64 }
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.PFPCustomTag == nil {
				t.Fatalf("object %s: line %q is not a record (%v)", c.Key, sc.Bytes(), err)
			}
			o.seqs = append(o.seqs, *rec.PFPCustomTag)
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("object %s: %v", c.Key, err)
		}
		out = append(out, o)
	}
	return out
}

func s3Records(objs []s3Object) int {
	n := 0
	for _, o := range objs {
		n += len(o.seqs)
	}
	return n
}

var s3KeyRE = regexp.MustCompile(`^(.*)/(\d{8})/(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)_[0-9a-f]{16}\.log\.gz$`)

// TestS3Destination sends three batches to an S3-compatible server and
// decodes the objects back to every record, once each, under Logpush's
// {DATE}/{start}_{end}_{hash}.log.gz names.
func TestS3Destination(t *testing.T) {
	s := newS3Server(t)
	before := time.Now().UTC().Truncate(time.Second)
	m := newManager(t, []Job{s.job(t, "s3", testS3Bucket, "edge/flows")}, testOpts(t))
	run(t, m)
	pushN(m, 0, 2500) // two batches by count, the last by interval
	waitFor(t, 20*time.Second, "2500 records sent", func() bool { return statusOf(m, "s3").RecordsSent == 2500 })
	after := time.Now().UTC()

	objs := s.objects(t)
	if len(objs) != 3 {
		t.Fatalf("%d objects, want 3", len(objs))
	}
	seen := map[int64]int{}
	for _, o := range objs {
		mm := s3KeyRE.FindStringSubmatch(o.key)
		if mm == nil {
			t.Fatalf("object key %q is not prefix/{DATE}/{start}_{end}_{hash}.log.gz", o.key)
		}
		start, err1 := time.Parse("20060102T150405Z", mm[3])
		end, err2 := time.Parse("20060102T150405Z", mm[4])
		if mm[1] != "edge/flows" || err1 != nil || err2 != nil || mm[2] != mm[3][:8] ||
			start.Before(before) || end.Before(start) || end.After(after) {
			t.Errorf("object key %q: prefix, date or times wrong (sent between %v and %v)", o.key, before, after)
		}
		if !o.gzipTime.Truncate(time.Second).Equal(start) {
			t.Errorf("object %s: start %v is not the batch's gzip time %v", o.key, start, o.gzipTime)
		}
		if o.contentType != "application/gzip" {
			t.Errorf("object %s: Content-Type %q", o.key, o.contentType)
		}
		for _, q := range o.seqs {
			seen[q]++
		}
	}
	for i := int64(0); i < 2500; i++ {
		if seen[i] != 1 {
			t.Fatalf("record %d arrived %d times", i, seen[i])
		}
	}
	st := statusOf(m, "s3")
	if st.BatchesSent != 3 || st.State != "running" || st.LastError != nil || st.SpooledBatches != 0 {
		t.Errorf("status = %+v", st)
	}
	if strings.Contains(st.Destination, testS3Secret) {
		t.Errorf("status shows the secret: %s", st.Destination)
	}
}

// TestS3DatePrefix expands {DATE} in the prefix instead of appending it.
func TestS3DatePrefix(t *testing.T) {
	s := newS3Server(t)
	m := newManager(t, []Job{s.job(t, "dated", testS3Bucket, "logs/{DATE}/gw1")}, testOpts(t))
	run(t, m)
	pushN(m, 0, 10)
	waitFor(t, 20*time.Second, "10 records sent", func() bool { return statusOf(m, "dated").RecordsSent == 10 })
	objs := s.objects(t)
	if len(objs) != 1 || s3Records(objs) != 10 {
		t.Fatalf("objects = %+v", objs)
	}
	if !regexp.MustCompile(`^logs/\d{8}/gw1/\d{8}T\d{6}Z_\d{8}T\d{6}Z_[0-9a-f]{16}\.log\.gz$`).MatchString(objs[0].key) {
		t.Errorf("key %q does not expand {DATE} in place", objs[0].key)
	}
}

// TestS3RetriesThenDelivers answers the first uploads with 503 SlowDown:
// the batch stays spooled, is retried and arrives whole.
func TestS3RetriesThenDelivers(t *testing.T) {
	s := newS3Server(t)
	s.failN.Store(3)
	m := newManager(t, []Job{s.job(t, "retry", testS3Bucket, "x")}, testOpts(t))
	run(t, m)
	pushN(m, 0, 1000)
	waitFor(t, 20*time.Second, "1000 records sent", func() bool { return statusOf(m, "retry").RecordsSent == 1000 })
	objs := s.objects(t)
	if len(objs) != 1 || s3Records(objs) != 1000 {
		t.Fatalf("%d objects with %d records, want 1 with 1000", len(objs), s3Records(objs))
	}
	if st := statusOf(m, "retry"); st.Retries["503"] != 3 || st.State != "running" {
		t.Errorf("status = %+v, want 3 retries of 503", st)
	}
}

// TestS3NoSuchBucket stops the job with the store's own message: retrying
// cannot create the bucket. The batch stays in the spool.
func TestS3NoSuchBucket(t *testing.T) {
	s := newS3Server(t)
	m := newManager(t, []Job{s.job(t, "nobucket", "no-such-bucket", "")}, testOpts(t))
	run(t, m)
	pushN(m, 0, 5)
	waitFor(t, 20*time.Second, "the job to fail", func() bool { return statusOf(m, "nobucket").State == "failed" })
	st := statusOf(m, "nobucket")
	if st.ErrorMessage == nil || !strings.Contains(*st.ErrorMessage, "bucket does not exist") || st.SpooledBatches != 1 {
		t.Errorf("status = %+v (error %v)", st, derefStr(st.ErrorMessage))
	}
}

func derefStr(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestS3ObjectKey checks names against the batch's times, with and
// without a prefix and {DATE}.
func TestS3ObjectKey(t *testing.T) {
	start := time.Date(2026, 12, 6, 23, 59, 58, 0, time.UTC)
	end := time.Date(2026, 12, 7, 0, 0, 3, 0, time.UTC)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.ModTime = start
	zw.Write([]byte(`{"a":1}` + "\n"))
	zw.Close()
	body := buf.Bytes()
	tests := []struct{ prefix, want string }{
		{"", "20261206/20261206T235958Z_20261207T000003Z_"},
		{"gw", "gw/20261206/20261206T235958Z_20261207T000003Z_"},
		{"a/{DATE}/b", "a/20261206/b/20261206T235958Z_20261207T000003Z_"},
	}
	for _, tt := range tests {
		d := &s3Dest{spec: &s3Spec{prefix: tt.prefix}}
		got := d.objectKey(body, spoolEntry{closed: end})
		if !strings.HasPrefix(got, tt.want) || !strings.HasSuffix(got, ".log.gz") || len(got) != len(tt.want)+16+len(".log.gz") {
			t.Errorf("prefix %q: key %q, want %s<16 hex>.log.gz", tt.prefix, got, tt.want)
		}
		if again := d.objectKey(body, spoolEntry{closed: end}); again != got {
			t.Errorf("prefix %q: the same batch is named %q and %q", tt.prefix, got, again)
		}
	}
}

// TestS3SpoolSurvivesRestart: while the store refuses every upload the
// batches stay spooled; a new manager on the same state directory sends
// them once the store answers again, every record once.
func TestS3SpoolSurvivesRestart(t *testing.T) {
	s := newS3Server(t)
	s.failN.Store(1 << 40)
	opts := testOpts(t)
	j := s.job(t, "restart", testS3Bucket, "r")
	m := newManager(t, []Job{j}, opts)
	r := run(t, m)
	pushN(m, 0, 1500)
	waitFor(t, 20*time.Second, "uploads refused and retried", func() bool {
		st := statusOf(m, "restart")
		return st.Retries["503"] >= 2 && st.SpooledBatches >= 1
	})
	r.stop() // the open batch is spooled on the way out

	s.failN.Store(0)
	m2 := newManager(t, []Job{j}, opts)
	run(t, m2)
	waitFor(t, 20*time.Second, "1500 records sent after the restart", func() bool { return statusOf(m2, "restart").RecordsSent == 1500 })
	objs := s.objects(t)
	seen := map[int64]int{}
	for _, o := range objs {
		for _, q := range o.seqs {
			seen[q]++
		}
	}
	for i := int64(0); i < 1500; i++ {
		if seen[i] != 1 {
			t.Fatalf("record %d arrived %d times", i, seen[i])
		}
	}
	if len(objs) != 2 {
		t.Errorf("%d objects, want 2 (1000 by count, 500 cut at shutdown)", len(objs))
	}
}
