// Package dns is Gateway DNS: a filtering resolver with identity-aware
// policies that resolves from the egress location. Only the configuration is
// here so far; the resolver lands with the DNS issue.
package dns

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Config is the `gateway.dns:` section.
type Config struct {
	Listen    []netip.AddrPort `yaml:"listen"`
	Upstreams []string         `yaml:"upstreams"` // host:port, tls://host:port, https://…/dns-query
	ECS       string           `yaml:"ecs"`       // egress | off
	Lists     map[string]List  `yaml:"lists"`
	Policies  []Policy         `yaml:"policies"`
}

// List is a domain list read from a file: plain domains, hosts format or
// adblock-style `||domain^` lines.
type List struct {
	File    string        `yaml:"file" file:"read"`
	Refresh time.Duration `yaml:"refresh"`
}

// Policy is one DNS policy; ordered, first match wins, default allow.
type Policy struct {
	ID         string   `yaml:"id"`
	Expression string   `yaml:"expression"`
	Action     string   `yaml:"action"`   // allow | block | override | safe_search
	Override   []string `yaml:"override"` // addresses or one name, for override
}

// SetDefaults applies the defaults.
func (c *Config) SetDefaults() {
	if c.ECS == "" {
		c.ECS = "egress"
	}
}

// Validate checks the section's shape.
func (c *Config) Validate(report func(field, msg string)) {
	if len(c.Listen) == 0 {
		report("listen", "missing: expected addresses to serve DNS on, such as [10.0.0.1:53]")
	}
	if len(c.Upstreams) == 0 {
		report("upstreams", "missing: expected at least one upstream resolver")
	}
	for i, u := range c.Upstreams {
		if msg := checkUpstream(u); msg != "" {
			report(fmt.Sprintf("upstreams[%d]", i), msg)
		}
	}
	if c.ECS != "egress" && c.ECS != "off" {
		report("ecs", fmt.Sprintf("%q is not one of egress, off", c.ECS))
	}
	for name, l := range c.Lists {
		if l.File == "" {
			report("lists."+name+".file", "missing: expected the list's file")
		}
		if l.Refresh < 0 {
			report("lists."+name+".refresh", "must not be negative")
		}
	}
	seen := map[string]bool{}
	for i, p := range c.Policies {
		f := fmt.Sprintf("policies[%d]", i)
		if p.ID == "" {
			report(f+".id", "missing: every policy needs an id")
		} else if seen[p.ID] {
			report(f+".id", fmt.Sprintf("%q is used by an earlier policy", p.ID))
		}
		seen[p.ID] = true
		if strings.TrimSpace(p.Expression) == "" {
			report(f+".expression", "missing: expected an expression such as dns.fqdn == \"example.com\"")
		}
		switch p.Action {
		case "allow", "block", "safe_search":
			if len(p.Override) > 0 {
				report(f+".override", "override applies only to action override")
			}
		case "override":
			if len(p.Override) == 0 {
				report(f+".override", "missing: expected addresses or one name to answer with")
			}
		default:
			report(f+".action", fmt.Sprintf("%q is not one of allow, block, override, safe_search", p.Action))
		}
	}
}

func checkUpstream(u string) string {
	switch {
	case strings.HasPrefix(u, "tls://"):
		if _, err := netip.ParseAddrPort(strings.TrimPrefix(u, "tls://")); err != nil {
			return fmt.Sprintf("%q: expected tls://ADDRESS:PORT", u)
		}
	case strings.HasPrefix(u, "https://"):
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			return fmt.Sprintf("%q is not a DNS-over-HTTPS URL", u)
		}
	default:
		if _, err := netip.ParseAddrPort(u); err != nil {
			return fmt.Sprintf("%q: expected ADDRESS:PORT, tls://ADDRESS:PORT or an https:// URL", u)
		}
	}
	return ""
}
