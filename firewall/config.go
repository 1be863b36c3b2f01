package firewall

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Config is the `firewall:` section: named lists and ordered rules.
type Config struct {
	Lists map[string][]string `yaml:"lists"` // name → IPs and CIDRs
	Rules []Rule              `yaml:"rules"`
}

// Rule is one Magic-Firewall-style rule. Rules are evaluated in order; the
// first match wins; a packet no rule matches is allowed.
type Rule struct {
	ID          string `yaml:"id"`
	Description string `yaml:"description"`
	Expression  string `yaml:"expression"`
	Action      string `yaml:"action"` // block | allow | rate_limit
	Rate        Rate   `yaml:"rate"`   // rate_limit only, per source address
	Enabled     *bool  `yaml:"enabled"`
}

// Rate is a packet rate such as "1000/second".
type Rate struct {
	Packets uint64
	Unit    string // second | minute | hour | day
}

// UnmarshalText parses "N/unit".
func (r *Rate) UnmarshalText(b []byte) error {
	n, unit, ok := strings.Cut(string(b), "/")
	v, err := strconv.ParseUint(strings.TrimSpace(n), 10, 32)
	unit = strings.TrimSpace(unit)
	if !ok || err != nil || v == 0 {
		return fmt.Errorf("expected a rate such as 1000/second, got %q", b)
	}
	switch unit {
	case "second", "minute", "hour", "day":
	default:
		return fmt.Errorf("rate unit must be second, minute, hour or day, got %q", unit)
	}
	r.Packets, r.Unit = v, unit
	return nil
}

func (r Rate) String() string {
	if r.Packets == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%s", r.Packets, r.Unit)
}

// SetDefaults turns rules on unless disabled.
func (r *Rule) SetDefaults() {
	if r.Enabled == nil {
		on := true
		r.Enabled = &on
	}
}

var (
	ruleID   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	listName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,49}$`)
)

// Validate checks lists and rules for shape, unique ids and known actions.
func (c *Config) Validate(report func(field, msg string)) {
	for name, items := range c.Lists {
		if !listName.MatchString(name) {
			report("lists."+name, "a list name is lower-case letters, digits and '_', starting with a letter")
		}
		for i, s := range items {
			if _, err := ParseListItem(s); err != nil {
				report(fmt.Sprintf("lists.%s[%d]", name, i), err.Error())
			}
		}
	}
	seen := map[string]int{}
	for i, r := range c.Rules {
		f := fmt.Sprintf("rules[%d]", i)
		switch {
		case r.ID == "":
			report(f+".id", "missing: every rule needs an id (it appears in logs as RuleID)")
		case !ruleID.MatchString(r.ID):
			report(f+".id", fmt.Sprintf("%q: use letters, digits, '_', '.' and '-' (at most 64)", r.ID))
		default:
			if j, dup := seen[r.ID]; dup {
				report(f+".id", fmt.Sprintf("%q is already the id of rules[%d]", r.ID, j))
			}
			seen[r.ID] = i
		}
		if strings.TrimSpace(r.Expression) == "" {
			report(f+".expression", "missing: expected an expression such as tcp.dstport == 22")
		}
		switch r.Action {
		case "block", "allow":
			if r.Rate.Packets != 0 {
				report(f+".rate", "rate applies only to action rate_limit")
			}
		case "rate_limit":
			if r.Rate.Packets == 0 {
				report(f+".rate", "missing: rate_limit needs a rate such as 1000/second")
			}
		case "":
			report(f+".action", "missing: expected block, allow or rate_limit")
		default:
			report(f+".action", fmt.Sprintf("%q is not one of block, allow, rate_limit", r.Action))
		}
	}
}

// ParseListItem reads one list entry: an address (a host prefix) or a CIDR
// with no host bits set.
func ParseListItem(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%s has host bits set; did you mean %s?", p, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
