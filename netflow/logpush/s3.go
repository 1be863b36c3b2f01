package logpush

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
)

// s3Spec is a parsed s3://bucket/prefix destination.
type s3Spec struct {
	bucket      string
	prefix      string // without leading or trailing slash; may hold {DATE}
	region      string
	endpoint    string // host[:port]
	secure      bool   // https to the endpoint
	accessKeyID string
	sse         bool // SSE-S3 (sse=AES256)
	pathStyle   bool // path-style requests instead of virtual hosts
	insecure    bool
}

// parseS3Dest reads s3://bucket/[prefix]?region=…&access-key-id=…
// [&endpoint=https://host:port][&sse=AES256][&path-style=true]
// [&insecure-skip-verify=true]. The secret access key comes from the job's
// token_file, never from the URL.
func parseS3Dest(u *url.URL, q url.Values) (*s3Spec, error) {
	s := &s3Spec{bucket: u.Host, prefix: strings.Trim(u.Path, "/"), secure: true}
	if u.User != nil || q.Has("secret-access-key") {
		return nil, errors.New("credentials in the URL are not supported: put the secret access key in token_file")
	}
	if err := checkBucketName(s.bucket); err != nil {
		return nil, err
	}
	if strings.Contains(s.prefix, "//") || strings.Contains(s.prefix, "..") {
		return nil, fmt.Errorf("prefix %q: expected path segments without empty or .. parts", s.prefix)
	}
	take := func(k string) string { v := q.Get(k); q.Del(k); return v }
	s.region = take("region")
	if s.region == "" {
		return nil, errors.New("region= is missing, as in s3://bucket/logs?region=eu-west-1&access-key-id=AKIA…")
	}
	s.accessKeyID = take("access-key-id")
	if s.accessKeyID == "" || !printUSASCII(s.accessKeyID) {
		return nil, errors.New("access-key-id= is missing (the secret access key goes in token_file)")
	}
	s.endpoint = "s3." + s.region + ".amazonaws.com"
	if v := take("endpoint"); v != "" {
		e, err := url.Parse(v)
		if err != nil || e.Host == "" || (e.Scheme != "https" && e.Scheme != "http") || (e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.User != nil {
			return nil, fmt.Errorf("endpoint=%q: expected https://host[:port] (or http:// for a store on a trusted link)", v)
		}
		s.endpoint, s.secure = e.Host, e.Scheme == "https"
	}
	if v := take("sse"); v != "" {
		if v != "AES256" {
			return nil, fmt.Errorf("sse=%q: only AES256 (SSE-S3) is supported", v)
		}
		s.sse = true
	}
	for _, b := range []struct {
		key string
		dst *bool
	}{{"path-style", &s.pathStyle}, {"insecure-skip-verify", &s.insecure}} {
		if v := take(b.key); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s=%q: expected true or false", b.key, v)
			}
			*b.dst = x
		}
	}
	for k := range q {
		return nil, fmt.Errorf("unknown parameter %q: expected region, access-key-id, endpoint, sse, path-style or insecure-skip-verify", k)
	}
	return s, nil
}

// checkBucketName applies S3's bucket naming rules (3-63 characters of
// lower-case letters, digits, dots and hyphens, starting and ending with
// a letter or digit).
func checkBucketName(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket %q: expected s3://bucket/prefix with a bucket name of 3 to 63 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (c == '.' || c == '-') && i > 0 && i < len(b)-1) {
			return fmt.Errorf("bucket %q: only lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit", b)
		}
	}
	return nil
}

// s3Dest uploads each batch as one object, the spooled gzip body as is:
// <prefix>/{DATE}/{start}_{end}_{hash}.log.gz like Cloudflare Logpush
// ({DATE} in the prefix is expanded instead of appended). The name is a
// function of the batch (its start and end times and a hash of its
// bytes), so a batch sent again after a lost answer overwrites its own
// object instead of adding another.
type s3Dest struct {
	spec   *s3Spec
	client *minio.Client
	tr     *http.Transport
	opts   minio.PutObjectOptions
}

func newS3Dest(spec *s3Spec, secret string, roots *x509.CertPool, certs []tls.Certificate, timeout time.Duration) (*s3Dest, error) {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       &tls.Config{RootCAs: roots, Certificates: certs, InsecureSkipVerify: spec.insecure, MinVersion: tls.VersionTLS12}, //nolint:gosec // the operator's explicit choice
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
	}
	lookup := minio.BucketLookupAuto
	if spec.pathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(spec.endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(spec.accessKeyID, secret, ""),
		Secure:       spec.secure,
		Region:       spec.region,
		Transport:    tr,
		BucketLookup: lookup,
		// The job retries (with its backoff, counted in retries_total)
		// and keeps the batch spooled meanwhile: no second loop inside.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	c.SetAppInfo("edgegw-logpush", "1")
	d := &s3Dest{spec: spec, client: c, tr: tr,
		opts: minio.PutObjectOptions{ContentType: "application/gzip", DisableMultipart: true, SendContentMd5: true}}
	if spec.sse {
		d.opts.ServerSideEncryption = encrypt.NewSSE()
	}
	return d, nil
}

func (d *s3Dest) format() string { return formatNDJSON }
func (d *s3Dest) close()         { d.tr.CloseIdleConnections() }

func (d *s3Dest) pollAcks(context.Context, []int64) (map[int64]bool, outcome) {
	return nil, outcome{err: errors.New("no acks on s3 destinations"), permanent: true}
}

func (d *s3Dest) send(ctx context.Context, body []byte, e spoolEntry) outcome {
	key := d.objectKey(body, e)
	_, err := d.client.PutObject(ctx, d.spec.bucket, key, bytes.NewReader(body), int64(len(body)), d.opts)
	if err == nil {
		return outcome{code: "200", ackID: -1}
	}
	o := outcome{err: fmt.Errorf("s3 put %s/%s: %w", d.spec.bucket, key, err), code: "transport", ackID: -1}
	if r := minio.ToErrorResponse(err); r.StatusCode != 0 {
		o.code = strconv.Itoa(r.StatusCode)
		// Refusals that retrying cannot change: no such bucket, denied,
		// bad credentials. Everything else (5xx, 429, slow down, the
		// network) is retried.
		switch r.Code {
		case "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "InvalidBucketName":
			o.permanent = true
		}
	}
	return o
}

// objectKey names the batch's object. Its start is when the batch's first
// record was written ahead (the gzip header's time), its end when the
// batch was closed (the spool file's time).
func (d *s3Dest) objectKey(body []byte, e spoolEntry) string {
	end := e.closed.UTC()
	if end.IsZero() {
		end = time.Now().UTC()
	}
	start := end
	if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
		if t := zr.Header.ModTime; !t.IsZero() && !t.After(end) {
			start = t.UTC()
		}
	}
	sum := sha256.Sum256(body)
	date := start.Format("20060102")
	name := start.Format("20060102T150405Z") + "_" + end.Format("20060102T150405Z") + "_" + hex.EncodeToString(sum[:8]) + ".log.gz"
	switch {
	case strings.Contains(d.spec.prefix, "{DATE}"):
		return strings.ReplaceAll(d.spec.prefix, "{DATE}", date) + "/" + name
	case d.spec.prefix != "":
		return d.spec.prefix + "/" + date + "/" + name
	}
	return date + "/" + name
}
