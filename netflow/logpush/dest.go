package logpush

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// outcome is the result of one attempt to deliver or to poll acks.
type outcome struct {
	err        error         // nil: accepted
	code       string        // for retries_total: an HTTP status or "transport"
	permanent  bool          // retrying cannot help: the job stops
	retryAfter time.Duration // the destination's Retry-After, if any
	ackID      int64         // HEC indexer ack id, -1 if none
}

// destination delivers spooled batches (gzip bodies).
type destination interface {
	format() string
	// send delivers the spooled batch e, whose bytes are body.
	send(ctx context.Context, body []byte, e spoolEntry) outcome
	// pollAcks asks which ack ids are done (HEC with indexer acks only).
	pollAcks(ctx context.Context, ids []int64) (map[int64]bool, outcome)
	close()
}

// hecReply is a HEC JSON answer: {"text":"Success","code":0,"ackId":7}.
type hecReply struct {
	Text               string `json:"text"`
	Code               *int   `json:"code"`
	AckID              *int64 `json:"ackId"`
	InvalidEventNumber *int   `json:"invalid-event-number"`
}

// parseHECReply decodes a HEC reply body. Bodies that are not a JSON object
// are an error; the caller still has the HTTP status.
func parseHECReply(body []byte) (hecReply, error) {
	var r hecReply
	if err := json.Unmarshal(body, &r); err != nil {
		return hecReply{}, fmt.Errorf("HEC reply: %w", err)
	}
	return r, nil
}

// parseAckReply decodes {"acks":{"0":true,"1":false}}.
func parseAckReply(body []byte) (map[int64]bool, error) {
	var r struct {
		Acks map[string]bool `json:"acks"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("HEC ack reply: %w", err)
	}
	out := make(map[int64]bool, len(r.Acks))
	for k, v := range r.Acks {
		id, err := strconv.ParseInt(k, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("HEC ack reply: ack id %q is not a number", k)
		}
		out[id] = v
	}
	return out, nil
}

// httpDest posts gzip bodies to HEC (event or raw) or a generic HTTPS
// endpoint.
type httpDest struct {
	spec    *destSpec
	hec     bool
	ack     bool
	token   string
	client  *http.Client
	url     string
	ackURL  string
	headers http.Header
}

// readCAFile reads the job's ca_file; nil without one.
func readCAFile(job *Job) (*x509.CertPool, error) {
	if job.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(job.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificates", job.CAFile)
	}
	return pool, nil
}

// readClientCert reads the job's cert_file and key_file; nil without them.
func readClientCert(job *Job) ([]tls.Certificate, error) {
	if job.CertFile == "" {
		return nil, nil
	}
	c, err := tls.LoadX509KeyPair(job.CertFile, job.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file/key_file: %w", err)
	}
	return []tls.Certificate{c}, nil
}

// newHTTPDest makes the client of a compiled job: it reads nothing and
// opens nothing until a batch is sent.
func newHTTPDest(spec *destSpec, job *Job, token string, roots *x509.CertPool, certs []tls.Certificate, timeout time.Duration) *httpDest {
	tc := &tls.Config{InsecureSkipVerify: spec.insecure, RootCAs: roots, Certificates: certs} //nolint:gosec // the operator's explicit choice
	tr := &http.Transport{
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
	}
	d := &httpDest{spec: spec, hec: spec.scheme == "splunk", ack: job.IndexerAck, token: token,
		client: &http.Client{Transport: tr, Timeout: timeout}, headers: spec.headers.Clone()}
	u := spec.url
	if d.hec && spec.raw {
		q := u.Query()
		for k, v := range map[string]string{"channel": spec.channel, "sourcetype": spec.sourcetype,
			"index": spec.index, "source": spec.source, "host": spec.host} {
			if v != "" {
				q.Set(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	d.url = u.String()
	if d.hec {
		a := spec.url
		a.Path, a.RawQuery = "/services/collector/ack", "channel="+spec.channel
		d.ackURL = a.String()
		if token != "" {
			d.headers.Set("Authorization", "Splunk "+token)
		}
		if spec.channel != "" {
			d.headers.Set("X-Splunk-Request-Channel", spec.channel)
		}
	}
	return d
}

func (d *httpDest) format() string {
	if d.hec && !d.spec.raw {
		return formatHEC
	}
	return formatNDJSON
}

func (d *httpDest) close() { d.client.CloseIdleConnections() }

func (d *httpDest) post(ctx context.Context, url string, body []byte, gz bool) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range d.headers {
		req.Header[k] = v
	}
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	ct := "application/json"
	if !d.hec {
		ct = "application/x-ndjson"
	} else if d.spec.raw {
		ct = "text/plain"
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("User-Agent", "edgegw-logpush")
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, rb, nil
}

func (d *httpDest) send(ctx context.Context, body []byte, _ spoolEntry) outcome {
	status, hdr, rb, err := d.post(ctx, d.url, body, true)
	if err != nil {
		return outcome{err: fmt.Errorf("post: %w", err), code: "transport", ackID: -1}
	}
	o := classify(status, hdr, rb, d.hec)
	if o.err == nil && d.hec && d.ack {
		r, err := parseHECReply(rb)
		if err != nil || r.AckID == nil {
			return outcome{err: fmt.Errorf("HEC accepted the batch without an ackId (is indexer acknowledgement on for the token?): %q", trim(rb)),
				code: strconv.Itoa(status), permanent: true, ackID: -1}
		}
		o.ackID = *r.AckID
	}
	return o
}

func (d *httpDest) pollAcks(ctx context.Context, ids []int64) (map[int64]bool, outcome) {
	var b []byte
	b = append(b, `{"acks":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	b = append(b, "]}"...)
	status, hdr, rb, err := d.post(ctx, d.ackURL, b, false)
	if err != nil {
		return nil, outcome{err: fmt.Errorf("ack poll: %w", err), code: "transport"}
	}
	o := classify(status, hdr, rb, true)
	if o.err != nil {
		o.err = fmt.Errorf("ack poll: %w", o.err)
		return nil, o
	}
	acks, err := parseAckReply(rb)
	if err != nil {
		return nil, outcome{err: err, code: strconv.Itoa(status)}
	}
	return acks, o
}

// classify turns an HTTP answer into an outcome: 2xx accepted; 429 and
// 5xx retried (honouring Retry-After); every other status permanent.
func classify(status int, hdr http.Header, body []byte, hec bool) outcome {
	o := outcome{code: strconv.Itoa(status), ackID: -1}
	if status >= 200 && status < 300 {
		return o
	}
	msg := fmt.Sprintf("HTTP %d", status)
	if hec {
		if r, err := parseHECReply(body); err == nil && r.Code != nil {
			msg += fmt.Sprintf(": HEC code %d: %s", *r.Code, r.Text)
		} else if len(body) > 0 {
			msg += ": " + trim(body)
		}
	} else if len(body) > 0 {
		msg += ": " + trim(body)
	}
	o.err = errors.New(msg)
	o.permanent = !(status == http.StatusTooManyRequests || status >= 500)
	o.retryAfter = parseRetryAfter(hdr.Get("Retry-After"), time.Now())
	return o
}

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strconv.Quote(s)
}

// parseRetryAfter reads delta-seconds or an HTTP date; 0 if absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// fileDest appends ndjson to a local file, rotating it by size.
type fileDest struct {
	spec *destSpec
	zr   *gzip.Reader
}

func (d *fileDest) format() string { return formatNDJSON }
func (d *fileDest) close()         {}

func (d *fileDest) pollAcks(context.Context, []int64) (map[int64]bool, outcome) {
	return nil, outcome{err: errors.New("no acks on file destinations"), permanent: true}
}

func (d *fileDest) send(_ context.Context, body []byte, _ spoolEntry) outcome {
	if err := d.write(body); err != nil {
		return outcome{err: err, code: "file", ackID: -1}
	}
	return outcome{code: "file", ackID: -1}
}

func (d *fileDest) write(body []byte) error {
	if err := os.MkdirAll(filepath.Dir(d.spec.path), 0o755); err != nil {
		return err
	}
	if fi, err := os.Stat(d.spec.path); err == nil && fi.Size() > 0 && fi.Size()+int64(len(body)) > d.spec.maxBytes {
		if err := d.rotate(); err != nil {
			return fmt.Errorf("rotate %s: %w", d.spec.path, err)
		}
	}
	if d.zr == nil {
		d.zr = new(gzip.Reader)
	}
	if err := d.zr.Reset(bytes.NewReader(body)); err != nil {
		return fmt.Errorf("spooled batch: %w", err)
	}
	f, err := os.OpenFile(d.spec.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, d.zr); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rotate renames the file to <path>.<UTC time> and keeps the newest
// spec.keep rotated files.
func (d *fileDest) rotate() error {
	stamp := time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(d.spec.path, d.spec.path+"."+stamp); err != nil {
		return err
	}
	old, err := filepath.Glob(d.spec.path + ".2*Z")
	if err != nil {
		return err
	}
	sort.Strings(old)
	for len(old) > d.spec.keep {
		os.Remove(old[0])
		old = old[1:]
	}
	return nil
}
