package logpush

import (
	"errors"
	"fmt"
	"github.com/edgegw/edgegw/firewall/rules"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Job is one entry of the `logpush:` list.
type Job struct {
	Name        string `yaml:"name"`
	Dataset     string `yaml:"dataset"`     // network_analytics_logs | gateway_dns | access_requests | audit_logs | audit_logs_v2 | flow_alerts
	Destination string `yaml:"destination"` // splunk://…, https://…, file://…, syslog+tls://…, syslog+tcp://…, s3://…
	TokenFile   string `yaml:"token_file" file:"secret"`
	CAFile      string `yaml:"ca_file" file:"read"`
	// CertFile and KeyFile are a client certificate and its key (PEM)
	// for destinations that authenticate their senders by certificate
	// (mutual TLS: syslog+tls, https, splunk, s3).
	CertFile          string        `yaml:"cert_file" file:"read"`
	KeyFile           string        `yaml:"key_file" file:"secret"`
	Fields            []string      `yaml:"fields"`
	Filter            string        `yaml:"filter"`
	TimestampFormat   string        `yaml:"timestamp_format"` // unixnano | unix | rfc3339
	MaxUploadRecords  int           `yaml:"max_upload_records"`
	MaxUploadBytes    int64         `yaml:"max_upload_bytes"`
	MaxUploadInterval time.Duration `yaml:"max_upload_interval"`
	// SpoolLimit bounds the job's on-disk spool. Zero (the default) sizes
	// it from the spool's filesystem: the lesser of 1 GiB and 25 % of the
	// filesystem shared among the enabled jobs. A set limit larger than
	// the job's share of the filesystem above its 10 % reserve is capped
	// (with a warning); the reserve is kept free whatever the limit.
	SpoolLimit ByteSize `yaml:"spool_limit"`
	Enabled    *bool    `yaml:"enabled"`
	// SampleRate keeps this fraction of records (0 < x ≤ 1; default 1),
	// after the filter, like Logpush's output_options.sample_rate.
	SampleRate float64 `yaml:"sample_rate"`
	// IndexerAck polls HEC's /services/collector/ack and deletes a batch
	// only once it is acknowledged (needs channel= in the destination).
	IndexerAck bool `yaml:"indexer_ack"`
}

// SetDefaults applies Logpush's defaults.
func (j *Job) SetDefaults() {
	if j.TimestampFormat == "" {
		j.TimestampFormat = "rfc3339"
	}
	if j.MaxUploadRecords == 0 {
		j.MaxUploadRecords = 100_000
	}
	if j.MaxUploadBytes == 0 {
		j.MaxUploadBytes = 5_000_000
	}
	if j.MaxUploadInterval == 0 {
		j.MaxUploadInterval = 30 * time.Second
	}
	if j.SampleRate == 0 {
		j.SampleRate = 1
	}
	if j.Enabled == nil {
		on := true
		j.Enabled = &on
	}
}

// Datasets lists the datasets a job may name.
var Datasets = []string{"network_analytics_logs", "gateway_dns", "access_requests", "audit_logs", "audit_logs_v2", "flow_alerts"}

// Validate checks a job on its own: dataset, destination URL, field
// names, filter and limits.
func (j *Job) Validate(report func(field, msg string)) {
	if j.Name == "" {
		report("name", "missing: every job needs a name")
	} else if strings.ContainsAny(j.Name, "/\\\x00") || j.Name == "." || j.Name == ".." {
		report("name", fmt.Sprintf("%q cannot name a spool directory: no slashes", j.Name))
	}
	if !slices.Contains(Datasets, j.Dataset) {
		report("dataset", fmt.Sprintf("%q is not one of %s", j.Dataset, strings.Join(Datasets, ", ")))
	}
	d, err := parseDestination(j.Destination)
	if err != nil {
		report("destination", err.Error())
	}
	if d != nil && d.scheme == "splunk" && j.TokenFile == "" && d.headers.Get("Authorization") == "" {
		report("token_file", "missing: Splunk HEC needs a token")
	}
	if (j.CertFile == "") != (j.KeyFile == "") {
		report("cert_file", "cert_file and key_file go together: a client certificate and its key")
	}
	if j.CertFile != "" && d != nil && (d.scheme == "file" || d.sys != nil && !d.sys.tls || d.s3 != nil && !d.s3.secure) {
		report("cert_file", "a client certificate needs a TLS destination: syslog+tls://, https://, splunk:// or s3:// with an https endpoint")
	}
	if d != nil && d.scheme == "s3" && j.TokenFile == "" {
		report("token_file", "missing: s3 needs the secret access key in token_file (and access-key-id= in the destination)")
	}
	if j.IndexerAck && d != nil && (d.scheme != "splunk" || d.channel == "") {
		report("indexer_ack", "needs a splunk:// destination with a channel=<GUID> parameter")
	}
	if slices.Contains(Datasets, j.Dataset) {
		for i, f := range j.Fields {
			if !knownField(j.Dataset, f) {
				report(fmt.Sprintf("fields[%d]", i), fmt.Sprintf("%q is not a field of %s%s", f, j.Dataset, suggest(j.Dataset, f)))
			}
		}
		if j.Filter != "" {
			if _, err := compileFilter(j.Dataset, j.Filter); err != nil {
				report("filter", err.Error())
			}
		}
	}
	switch j.TimestampFormat {
	case TimestampUnixNano, TimestampUnix, TimestampRFC3339:
	default:
		report("timestamp_format", fmt.Sprintf("%q is not one of unixnano, unix, rfc3339", j.TimestampFormat))
	}
	if !(j.SampleRate > 0 && j.SampleRate <= 1) {
		report("sample_rate", fmt.Sprintf("must be more than 0 and at most 1, got %v", j.SampleRate))
	}
	if j.MaxUploadRecords < 1 || j.MaxUploadRecords > 1_000_000 {
		report("max_upload_records", "must be from 1 to 1000000")
	}
	if j.MaxUploadBytes < 1000 || j.MaxUploadBytes > 1<<30 {
		report("max_upload_bytes", "must be from 1000 to 1073741824")
	}
	if j.MaxUploadInterval < time.Second || j.MaxUploadInterval > 5*time.Minute {
		report("max_upload_interval", "must be from 1s to 5m")
	}
	if j.SpoolLimit != 0 && j.SpoolLimit < ByteSize(j.MaxUploadBytes) {
		report("spool_limit", "must be at least max_upload_bytes")
	}
}

// suggest returns ` (did you mean "X"?)` for a field name close to a known one.
func suggest(dataset, name string) string {
	if best, ok := rules.Closest(name, Fields(dataset)); ok {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// Equal reports whether two jobs have the same configuration.
func (j *Job) Equal(o *Job) bool { return reflect.DeepEqual(j, o) }

// Clone returns a deep copy.
func (j *Job) Clone() *Job {
	c := *j
	c.Fields = slices.Clone(j.Fields)
	if j.Enabled != nil {
		on := *j.Enabled
		c.Enabled = &on
	}
	return &c
}

// destSpec is a parsed destination URL.
type destSpec struct {
	scheme  string  // splunk, https, file, syslog or s3
	url     url.URL // the request URL: https://host:port/path?remaining query
	raw     bool    // splunk …/raw endpoint
	headers http.Header
	// splunk
	channel, sourcetype, index, source, host string
	insecure                                 bool
	// file
	path     string
	maxBytes int64 // rotate when the file grows past this
	keep     int   // rotated files kept
	// syslog
	sys *syslogSpec
	// s3
	s3 *s3Spec
}

var hecPaths = map[string]bool{
	"/services/collector": false, "/services/collector/event": false, "/services/collector/event/1.0": false,
	"/services/collector/raw": true, "/services/collector/raw/1.0": true,
}

// parseDestination parses and checks a destination URL.
func parseDestination(s string) (*destSpec, error) {
	if s == "" {
		return nil, errors.New("missing: expected a splunk://, https://, file://, syslog+tls://, syslog+tcp:// or s3:// destination")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %v", err)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("bad query string: %v", err)
	}
	d := &destSpec{scheme: u.Scheme, headers: http.Header{}}
	for k, vs := range q {
		if name, ok := strings.CutPrefix(k, "header_"); ok && name != "" && (u.Scheme == "splunk" || u.Scheme == "https") {
			d.headers[http.CanonicalHeaderKey(name)] = vs
			q.Del(k)
		}
	}
	take := func(k string) string { v := q.Get(k); q.Del(k); return v }
	switch u.Scheme {
	case "splunk", "https":
		if u.Host == "" || u.Hostname() == "" {
			return nil, errors.New("expected a host, as in splunk://splunk.example:8088/services/collector/event")
		}
		if u.User != nil {
			return nil, errors.New("credentials in the URL are not supported: use token_file or header_Authorization")
		}
		if v := take("insecure-skip-verify"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("insecure-skip-verify=%q: expected true or false", v)
			}
			d.insecure = b
		}
		if u.Scheme == "splunk" {
			raw, ok := hecPaths[u.Path]
			if !ok {
				return nil, fmt.Errorf("path %q is not a HEC endpoint: expected /services/collector/event or /services/collector/raw", u.Path)
			}
			d.raw = raw
			d.channel, d.sourcetype, d.index = take("channel"), take("sourcetype"), take("index")
			d.source, d.host = take("source"), take("host")
			if d.channel != "" && !isUUID(d.channel) {
				return nil, fmt.Errorf("channel=%q is not a GUID", d.channel)
			}
			for k := range q {
				return nil, fmt.Errorf("unknown parameter %q: expected channel, sourcetype, index, source, host, insecure-skip-verify or header_*", k)
			}
		}
		d.url = url.URL{Scheme: "https", Host: u.Host, Path: u.Path, RawQuery: q.Encode()}
	case "file":
		if u.Path == "" || u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return nil, errors.New("expected file:///absolute/path")
		}
		d.path, d.maxBytes, d.keep = u.Path, 100<<20, 5
		if v := take("max_size"); v != "" {
			var b ByteSize
			if err := b.UnmarshalText([]byte(v)); err != nil || b < 1000 {
				return nil, fmt.Errorf("max_size=%q: expected a size of at least 1000 bytes such as 100MiB", v)
			}
			d.maxBytes = int64(b)
		}
		if v := take("keep"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 10000 {
				return nil, fmt.Errorf("keep=%q: expected a count of rotated files", v)
			}
			d.keep = n
		}
		for k := range q {
			return nil, fmt.Errorf("unknown parameter %q: expected max_size or keep", k)
		}
	case "syslog+tls", "syslog+tcp", "syslog":
		sys, err := parseSyslogDest(u, q)
		if err != nil {
			return nil, err
		}
		d.scheme, d.sys = "syslog", sys
	case "s3":
		s3, err := parseS3Dest(u, q)
		if err != nil {
			return nil, err
		}
		d.s3 = s3
	default:
		return nil, fmt.Errorf("scheme %q is not one of splunk, https, file, syslog+tls, syslog+tcp, s3", u.Scheme)
	}
	return d, nil
}

// redacted is the destination without secrets: header values are hidden.
func (d *destSpec) redacted(orig string) string {
	u, err := url.Parse(orig)
	if err != nil {
		return "(invalid)"
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "header_") {
			q.Set(k, "REDACTED")
		}
	}
	u.RawQuery = q.Encode()
	u.User = nil
	return u.String()
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// ByteSize is a size with an optional IEC or SI unit: "512MiB", "1GiB", "5MB".
type ByteSize int64

// UnmarshalText parses a size.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || v < 0 {
		return fmt.Errorf("expected a size such as 512MiB or 1GiB, got %q", s)
	}
	*b = ByteSize(v * mult)
	return nil
}
