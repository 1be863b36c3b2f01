package posture

import (
	"fmt"
	"net/netip"
	"time"
)

// Config is the `posture:` section: the checks an enrolled device's
// reports must pass, in the shape of Cloudflare's device posture rules
// (os_version with an operator and a version, disk_encryption, firewall,
// client version), how old a report may be, and what a quarantined device
// may still reach. Every rule must pass; a check a device reports as
// unknown fails.
type Config struct {
	Rules []Rule `yaml:"rules"`
	// MaxAge is how long a report counts: a device whose last passing
	// report is older is quarantined until it reports again. Default 15m
	// (the client reports every 5 minutes).
	MaxAge time.Duration `yaml:"max_age"`
	// Grace is how long a newly enrolled device may go without a first
	// report before it is quarantined. Default 2m.
	Grace time.Duration `yaml:"grace"`
	// QuarantineAllow are destinations a quarantined device may still
	// reach besides the gateway's DNS and its enrollment and posture
	// endpoint: the identity provider, a remediation page.
	QuarantineAllow []netip.Prefix `yaml:"quarantine_allow"`
}

// Rule is one posture check.
type Rule struct {
	Name string `yaml:"name"`
	// Type is os_version, disk_encryption, firewall or client_version.
	Type string `yaml:"type"`
	// OS names the operating system an os_version rule is for (linux,
	// macos, windows). A device passes the os_version rules when one of
	// them names its OS and its version passes; a device whose OS no
	// os_version rule names fails them.
	OS string `yaml:"os"`
	// Operator and Version compare the reported version (os_version,
	// client_version): <, <=, ==, >=, >.
	Operator string `yaml:"operator"`
	Version  string `yaml:"version"`
}

// Defaults of the section.
const (
	DefaultMaxAge = 15 * time.Minute
	DefaultGrace  = 2 * time.Minute
	// ReportInterval is how often the client reports (Cloudflare's WARP
	// client polls every 5 minutes).
	ReportInterval = 5 * time.Minute
)

// Rule types.
const (
	TypeOSVersion      = "os_version"
	TypeDiskEncryption = "disk_encryption"
	TypeFirewall       = "firewall"
	TypeClientVersion  = "client_version"
)

// SetDefaults fills in the ages.
func (c *Config) SetDefaults() {
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
}

// Validate checks the section; Compile refuses what it reports.
func (c *Config) Validate(report func(field, msg string)) {
	if len(c.Rules) == 0 {
		report("rules", "missing: at least one posture rule (without rules every device is compliant; remove the section instead)")
	}
	if c.MaxAge < time.Minute {
		report("max_age", fmt.Sprintf("%s is shorter than a minute: devices report every %s", c.MaxAge, ReportInterval))
	}
	if c.Grace < 0 {
		report("grace", "must not be negative")
	}
	names := map[string]bool{}
	for i, r := range c.Rules {
		field := func(f string) string { return fmt.Sprintf("rules[%d].%s", i, f) }
		if r.Name == "" {
			report(field("name"), "missing")
		} else if names[r.Name] {
			report(field("name"), fmt.Sprintf("%q is used twice", r.Name))
		}
		names[r.Name] = true
		if err := r.check(); err != nil {
			report(field(err.field), err.msg)
		}
	}
	for i, p := range c.QuarantineAllow {
		if !p.IsValid() {
			report(fmt.Sprintf("quarantine_allow[%d]", i), "not a prefix")
		}
	}
}

type ruleError struct{ field, msg string }

func (r Rule) check() *ruleError {
	switch r.Type {
	case TypeOSVersion:
		switch r.OS {
		case OSLinux, OSMacOS, OSWindows:
		case "":
			return &ruleError{"os", "missing: linux, macos or windows"}
		default:
			return &ruleError{"os", fmt.Sprintf("%q is not linux, macos or windows", r.OS)}
		}
		return checkComparison(r)
	case TypeClientVersion:
		if r.OS != "" {
			return &ruleError{"os", "only os_version rules name an OS"}
		}
		return checkComparison(r)
	case TypeDiskEncryption, TypeFirewall:
		if r.OS != "" || r.Operator != "" || r.Version != "" {
			return &ruleError{"type", r.Type + " takes no os, operator or version"}
		}
		return nil
	case "":
		return &ruleError{"type", "missing: os_version, disk_encryption, firewall or client_version"}
	default:
		return &ruleError{"type", fmt.Sprintf("%q is not os_version, disk_encryption, firewall or client_version", r.Type)}
	}
}

func checkComparison(r Rule) *ruleError {
	if _, ok := operators[r.Operator]; !ok {
		return &ruleError{"operator", fmt.Sprintf("%q is not one of <, <=, ==, >=, >", r.Operator)}
	}
	if _, err := ParseVersion(r.Version); err != nil {
		return &ruleError{"version", err.Error()}
	}
	return nil
}
