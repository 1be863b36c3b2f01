package posture

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Policy is the compiled `posture:` section: immutable, shared by the
// report handler and the staleness sweep.
type Policy struct {
	rules  []compiledRule
	osVer  []compiledRule // the os_version rules: alternatives by OS
	maxAge time.Duration
	grace  time.Duration
	allow  []netip.Prefix
}

type compiledRule struct {
	Rule
	version Version
	cmp     func(int) bool
}

// Compile checks c (defaults applied) and compiles it.
func Compile(c Config) (*Policy, error) {
	c.SetDefaults()
	var errs []string
	c.Validate(func(field, msg string) { errs = append(errs, "posture."+field+": "+msg) })
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	p := &Policy{maxAge: c.MaxAge, grace: c.Grace, allow: slices.Clone(c.QuarantineAllow)}
	for _, r := range c.Rules {
		cr := compiledRule{Rule: r}
		if r.Type == TypeOSVersion || r.Type == TypeClientVersion {
			cr.version, _ = ParseVersion(r.Version) // Validate parsed it
			cr.cmp = operators[r.Operator]
		}
		if r.Type == TypeOSVersion {
			p.osVer = append(p.osVer, cr)
			continue
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

// MaxAge is how long a report counts.
func (p *Policy) MaxAge() time.Duration { return p.maxAge }

// Grace is how long a new device may go without a first report.
func (p *Policy) Grace() time.Duration { return p.grace }

// QuarantineAllow are the extra destinations a quarantined device may reach.
func (p *Policy) QuarantineAllow() []netip.Prefix { return slices.Clone(p.allow) }

// Result is a report judged against the policy.
type Result struct {
	Compliant bool `json:"compliant"`
	// Failed names each rule that failed and why, for the device's user
	// and the log.
	Failed []string `json:"failed,omitempty"`
}

// Evaluate judges r. Unknown checks and unparsable versions fail.
func (p *Policy) Evaluate(r Report) Result {
	var failed []string
	if len(p.osVer) > 0 {
		ok, why := p.evalOS(r)
		if !ok {
			failed = append(failed, why)
		}
	}
	for _, rule := range p.rules {
		switch rule.Type {
		case TypeDiskEncryption:
			if r.DiskEncrypted != Yes {
				failed = append(failed, fmt.Sprintf("%s: disk encryption is %s", rule.Name, r.DiskEncrypted))
			}
		case TypeFirewall:
			if r.Firewall != Yes {
				failed = append(failed, fmt.Sprintf("%s: host firewall is %s", rule.Name, r.Firewall))
			}
		case TypeClientVersion:
			if !rule.versionPasses(r.ClientVersion) {
				failed = append(failed, fmt.Sprintf("%s: client version %q is not %s %s", rule.Name, r.ClientVersion, rule.Operator, rule.Version))
			}
		}
	}
	return Result{Compliant: len(failed) == 0, Failed: failed}
}

// Attributes are what the device.posture.* fields of firewall rules and
// DNS policies see of report r judged as res: "unknown" (an OS or a
// check) becomes absent, and compliant is absent when the policy has no
// rules to comply with.
func (p *Policy) Attributes(r Report, res Result) rules.Posture {
	check := func(c Check) rules.Check {
		switch c {
		case Yes:
			return rules.CheckYes
		case No:
			return rules.CheckNo
		}
		return rules.CheckUnknown
	}
	a := rules.Posture{OSVersion: r.OSVersion, ClientVersion: r.ClientVersion,
		DiskEncrypted: check(r.DiskEncrypted), Firewall: check(r.Firewall)}
	if r.OS != OSUnknown {
		a.OS = r.OS
	}
	if len(p.rules)+len(p.osVer) > 0 {
		a.Compliant = rules.CheckNo
		if res.Compliant {
			a.Compliant = rules.CheckYes
		}
	}
	return a
}

func (p *Policy) evalOS(r Report) (bool, string) {
	var names []string
	for _, rule := range p.osVer {
		if rule.OS != r.OS {
			continue
		}
		if rule.versionPasses(r.OSVersion) {
			return true, ""
		}
		names = append(names, fmt.Sprintf("%s: %s version %q is not %s %s", rule.Name, r.OS, r.OSVersion, rule.Operator, rule.Version))
	}
	if len(names) == 0 {
		return false, fmt.Sprintf("operating system %q: no os_version rule allows it", r.OS)
	}
	return false, strings.Join(names, "; ")
}

func (r compiledRule) versionPasses(s string) bool {
	v, err := ParseVersion(s)
	if err != nil {
		return false
	}
	return r.cmp(v.Compare(r.version))
}
