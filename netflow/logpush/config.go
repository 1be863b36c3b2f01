// Package logpush ships dataset records to SIEMs the way Cloudflare Logpush
// does: batched, gzip-compressed, spooled on disk while a destination is
// down. Only the configuration is here so far.
package logpush

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Job is one entry of the `logpush:` list.
type Job struct {
	Name              string        `yaml:"name"`
	Dataset           string        `yaml:"dataset"`     // network_analytics_logs | gateway_dns | access_requests
	Destination       string        `yaml:"destination"` // splunk://…, https://…, file://…
	TokenFile         string        `yaml:"token_file" file:"secret"`
	CAFile            string        `yaml:"ca_file" file:"read"`
	Fields            []string      `yaml:"fields"`
	Filter            string        `yaml:"filter"`
	TimestampFormat   string        `yaml:"timestamp_format"` // unixnano | unix | rfc3339
	MaxUploadRecords  int           `yaml:"max_upload_records"`
	MaxUploadBytes    int64         `yaml:"max_upload_bytes"`
	MaxUploadInterval time.Duration `yaml:"max_upload_interval"`
	SpoolLimit        ByteSize      `yaml:"spool_limit"`
	Enabled           *bool         `yaml:"enabled"`
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
	if j.SpoolLimit == 0 {
		j.SpoolLimit = 1 << 30
	}
	if j.Enabled == nil {
		on := true
		j.Enabled = &on
	}
}

// Datasets lists the datasets a job may name.
var Datasets = []string{"network_analytics_logs", "gateway_dns", "access_requests"}

// Validate checks a job on its own.
func (j *Job) Validate(report func(field, msg string)) {
	if j.Name == "" {
		report("name", "missing: every job needs a name")
	}
	known := false
	for _, d := range Datasets {
		known = known || d == j.Dataset
	}
	if !known {
		report("dataset", fmt.Sprintf("%q is not one of %s", j.Dataset, strings.Join(Datasets, ", ")))
	}
	u, err := url.Parse(j.Destination)
	switch {
	case j.Destination == "":
		report("destination", "missing: expected splunk://, https:// or file:// destination")
	case err != nil:
		report("destination", fmt.Sprintf("not a URL: %v", err))
	case u.Scheme == "splunk" || u.Scheme == "https":
		if u.Host == "" {
			report("destination", "expected a host, as in splunk://splunk.example:8088/services/collector/event")
		}
		if u.Scheme == "splunk" && j.TokenFile == "" {
			report("token_file", "missing: Splunk HEC needs a token")
		}
	case u.Scheme == "file":
		if u.Path == "" || u.Host != "" {
			report("destination", "expected file:///absolute/path")
		}
	default:
		report("destination", fmt.Sprintf("scheme %q is not one of splunk, https, file", u.Scheme))
	}
	switch j.TimestampFormat {
	case "unixnano", "unix", "rfc3339":
	default:
		report("timestamp_format", fmt.Sprintf("%q is not one of unixnano, unix, rfc3339", j.TimestampFormat))
	}
	if j.MaxUploadRecords < 1 || j.MaxUploadRecords > 1_000_000 {
		report("max_upload_records", "must be from 1 to 1000000")
	}
	if j.MaxUploadBytes < 1000 {
		report("max_upload_bytes", "must be at least 1000")
	}
	if j.MaxUploadInterval < time.Second || j.MaxUploadInterval > 5*time.Minute {
		report("max_upload_interval", "must be from 1s to 5m")
	}
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
