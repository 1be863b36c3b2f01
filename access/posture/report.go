package posture

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Operating systems a report names. A client that cannot tell reports
// OSUnknown.
const (
	OSLinux   = "linux"
	OSMacOS   = "macos"
	OSWindows = "windows"
	OSUnknown = "unknown"
)

// Check is the result of one yes/no check on the device: "true", "false"
// or "unknown" (the client could not tell; every rule treats it as
// failing).
type Check string

// Check values.
const (
	Yes     Check = "true"
	No      Check = "false"
	Unknown Check = "unknown"
)

// Report is what a device says about itself. Field names follow
// Cloudflare's device posture attributes where one exists.
type Report struct {
	// Time is when the client made the report; the gateway refuses one
	// that is not newer than the device's last accepted report (a replay)
	// or is far from its own clock.
	Time time.Time `json:"time"`
	// OS and OSVersion: for Linux the kernel release (uname -r), which is
	// what Cloudflare's os_version check compares on Linux; OSDistro is
	// the distribution's PRETTY_NAME, for people.
	OS        string `json:"os"`
	OSVersion string `json:"os_version"`
	OSDistro  string `json:"os_distro,omitempty"`
	// DiskEncrypted: the root file system sits on an encrypted block
	// device (dm-crypt/LUKS on Linux).
	DiskEncrypted Check `json:"disk_encrypted"`
	// Firewall: a host firewall filters incoming traffic.
	Firewall Check `json:"firewall"`
	// ClientVersion is the edgegw client's version.
	ClientVersion string `json:"client_version"`
}

// MaxReportBytes bounds a report's encoding.
const MaxReportBytes = 4096

// maxText bounds each text field.
const maxText = 256

// ErrMalformed wraps every reason ParseReport refuses a report.
var ErrMalformed = errors.New("malformed posture report")

// ParseReport decodes and checks a report from untrusted bytes: one JSON
// object with known fields only, every field within bounds, checks
// "true", "false" or "unknown", an OS from the known list.
func ParseReport(b []byte) (Report, error) {
	bad := func(format string, a ...any) (Report, error) {
		return Report{}, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if len(b) > MaxReportBytes {
		return bad("%d bytes (at most %d)", len(b), MaxReportBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		return bad("%v", err)
	}
	if dec.More() {
		return bad("data after the report")
	}
	if r.Time.IsZero() {
		return bad("no time")
	}
	switch r.OS {
	case OSLinux, OSMacOS, OSWindows, OSUnknown:
	default:
		return bad("os %q is not linux, macos, windows or unknown", r.OS)
	}
	for _, f := range []struct{ name, v string }{
		{"os_version", r.OSVersion}, {"os_distro", r.OSDistro}, {"client_version", r.ClientVersion},
	} {
		if len(f.v) > maxText {
			return bad("%s is %d bytes (at most %d)", f.name, len(f.v), maxText)
		}
		if strings.ContainsFunc(f.v, unicode.IsControl) {
			return bad("%s has control characters", f.name)
		}
	}
	for _, c := range []struct {
		name string
		v    Check
	}{{"disk_encrypted", r.DiskEncrypted}, {"firewall", r.Firewall}} {
		switch c.v {
		case Yes, No, Unknown:
		default:
			return bad("%s is %q, not true, false or unknown", c.name, c.v)
		}
	}
	return r, nil
}

// Version is a dotted numeric version; the order is the rules language's
// (firewall/rules), so posture rules and device.posture.* conditions in
// firewall rules and DNS policies compare alike.
type Version = rules.Version

// ParseVersion reads the leading dotted numbers of s.
func ParseVersion(s string) (Version, error) { return rules.ParseVersion(s) }

var operators = map[string]func(c int) bool{
	"<":  func(c int) bool { return c < 0 },
	"<=": func(c int) bool { return c <= 0 },
	"==": func(c int) bool { return c == 0 },
	">=": func(c int) bool { return c >= 0 },
	">":  func(c int) bool { return c > 0 },
}
