package firewall

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/rules"
)

// Config is the `firewall:` section: named lists and ordered rules.
type Config struct {
	Lists map[string][]string `yaml:"lists"` // name → IPs and CIDRs
	Rules []Rule              `yaml:"rules"`
	// Egress chooses the address forwarded traffic leaves from
	// (egress_config.go); nil: everything is masqueraded to the WAN.
	Egress *EgressConfig `yaml:"egress"`
	// GeoIP names the databases behind ip.src.country, ip.dst.country,
	// ip.src.asnum and ip.dst.asnum; nil: rules on them are refused.
	GeoIP *GeoIP `yaml:"geoip"`
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
	resolve := c.listResolver()
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
		} else if err := c.checkExpression(i, r, resolve); err != nil {
			report(f+".expression", fmt.Sprintf("rule %q: %s", r.ID, errorMessage(err)))
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
	if c.Egress != nil {
		c.Egress.validate(c, report)
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

// checkExpression type-checks rule i's expression against
// rules.FirewallSchema with the config's lists and checks that nftables can
// express it.
func (c *Config) checkExpression(i int, r Rule, resolve rules.ListResolver) error {
	prog, err := rules.Compile(r.Expression, rules.FirewallSchema(), resolve)
	if err != nil {
		return c.suggestLists(err)
	}
	comp := newCompiler()
	comp.geoip = c.GeoIP
	action := r.Action
	if action != "block" && action != "allow" && action != "rate_limit" {
		action = "block" // reported as an action error
	}
	rate := r.Rate
	if rate.Packets == 0 {
		rate = Rate{Packets: 1, Unit: "second"} // a missing rate is reported on the rate field
	}
	return comp.rule(i, RuleInfo{ID: r.ID, Action: action, Counter: "check"}, rate, prog)
}

// suggestLists adds the nearest list name to "unknown list" errors.
func (c *Config) suggestLists(err error) error {
	var el rules.ErrorList
	if !errors.As(err, &el) {
		return err
	}
	for _, e := range el {
		name, ok := strings.CutPrefix(e.Msg, "unknown list $")
		if !ok {
			continue
		}
		best, bestD := "", len(name)/2+2
		for _, l := range slices.Sorted(maps.Keys(c.Lists)) {
			if d := levenshtein(name, l); d < bestD {
				best, bestD = l, d
			}
		}
		if best != "" {
			e.Msg += "; did you mean $" + best + "?"
		} else {
			e.Msg += "; define it under firewall.lists"
		}
	}
	return err
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	out := &Config{Lists: make(map[string][]string, len(c.Lists)), Rules: slices.Clone(c.Rules), Egress: c.Egress.Clone()}
	if c.GeoIP != nil {
		g := *c.GeoIP
		out.GeoIP = &g
	}
	for k, v := range c.Lists {
		out.Lists[k] = slices.Clone(v)
	}
	for i, r := range out.Rules {
		if r.Enabled != nil {
			on := *r.Enabled
			out.Rules[i].Enabled = &on
		}
	}
	return out
}

// Equal reports whether c and o are the same configuration.
func (c *Config) Equal(o *Config) bool {
	return c.sameRules(o) && maps.EqualFunc(c.lists(), o.lists(), slices.Equal) && c.geoFiles() == o.geoFiles()
}

// geoFiles returns the GeoIP databases of c, which may be nil.
func (c *Config) geoFiles() geo.Files {
	if c == nil {
		return geo.Files{}
	}
	return c.GeoIP.Files()
}

// ChangedLists compares c with the applied configuration old. If only the
// contents of lists differ (same rules, same list names), it returns the
// names of the lists to give to Table.UpdateList and true; otherwise the
// ruleset must be compiled and applied again, and it returns false.
func (c *Config) ChangedLists(old *Config) ([]string, bool) {
	if !c.sameRules(old) {
		return nil, false
	}
	cl, ol := c.lists(), old.lists()
	if !slices.Equal(slices.Sorted(maps.Keys(cl)), slices.Sorted(maps.Keys(ol))) {
		return nil, false
	}
	var changed []string
	for _, name := range slices.Sorted(maps.Keys(cl)) {
		if !slices.Equal(cl[name], ol[name]) {
			changed = append(changed, name)
		}
	}
	return changed, true
}

func (c *Config) lists() map[string][]string {
	if c == nil {
		return nil
	}
	return c.Lists
}

func (c *Config) sameRules(o *Config) bool {
	var a, b []Rule
	var ea, eb *EgressConfig
	if c != nil {
		a, ea = c.Rules, c.Egress
	}
	if o != nil {
		b, eb = o.Rules, o.Egress
	}
	return ea.Equal(eb) && slices.EqualFunc(a, b, func(x, y Rule) bool {
		on := func(p *bool) bool { return p == nil || *p }
		return x.ID == y.ID && x.Description == y.Description && x.Expression == y.Expression &&
			x.Action == y.Action && x.Rate == y.Rate && on(x.Enabled) == on(y.Enabled)
	})
}
