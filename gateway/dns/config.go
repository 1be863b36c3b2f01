package dns

import (
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// emptyList stands for a configured list when checking expressions.
var emptyList = newDomainList("")

// Config is the `gateway.dns:` section.
type Config struct {
	Listen    []netip.AddrPort `yaml:"listen"`
	Upstreams []string         `yaml:"upstreams"` // host:port, tls://host:port, https://…/dns-query
	// ECS is the EDNS Client Subnet sent upstream: egress (the /24 or
	// /56 of the client's egress address, never a private one), none
	// (off is the same), or fixed PREFIX (egress.go).
	ECS string `yaml:"ecs"`
	// UpstreamECS overrides ECS for the upstreams it names (as written
	// in upstreams).
	UpstreamECS map[string]string `yaml:"upstream_ecs"`
	Lists       map[string]List   `yaml:"lists"`
	Policies    []Policy          `yaml:"policies"`
	// BlockResponse is what a blocked query gets: zero_ip (0.0.0.0 or ::
	// for A and AAAA, NXDOMAIN otherwise; the default), nxdomain, refused.
	BlockResponse string `yaml:"block_response"`
	// CacheMB bounds the answer cache's heap, in mebibytes (default 64):
	// about 40,000 typical answers of a few records.
	CacheMB int `yaml:"cache_mb"`
	// MaxInflight bounds the client queries waiting for an upstream at
	// once (and so the upstream queries, sockets and goroutines they
	// hold); past it a query gets a stale cached answer if there is one,
	// else SERVFAIL with an Extended DNS Error (default 1000).
	MaxInflight int `yaml:"max_inflight"`
	// DoT serves DNS over TLS (RFC 7858); nil: not served.
	DoT *DoT `yaml:"dot"`
}

// DoT is the `gateway.dns.dot:` section: DNS over TLS on its own
// listeners.
type DoT struct {
	Listen   []netip.AddrPort `yaml:"listen"` // usually port 853
	CertFile string           `yaml:"cert_file" file:"read"`
	KeyFile  string           `yaml:"key_file" file:"secret"`
	// IdentifiedOnly refuses (REFUSED, with an Extended DNS Error) every
	// query from a client without an identity: one that did not come
	// through the tunnel that owns its address.
	IdentifiedOnly bool `yaml:"identified_only"`
	// ACME serves the gateway's ACME certificate (access.acme) for the
	// names among access.acme.domains; cert_file stays the fallback,
	// served until ACME has a certificate and whenever it fails. Without
	// cert_file and key_file the fallback is a self-signed certificate
	// kept in <state_dir>/dns.
	ACME bool `yaml:"acme"`
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
	Name       string   `yaml:"name"` // optional; PolicyName in the query log
	Expression string   `yaml:"expression"`
	Action     string   `yaml:"action"`   // allow | block | override | safe_search
	Override   []string `yaml:"override"` // addresses or one name, for override
}

// SetDefaults applies the defaults.
func (c *Config) SetDefaults() {
	if c.ECS == "" {
		c.ECS = "egress"
	}
	if c.BlockResponse == "" {
		c.BlockResponse = "zero_ip"
	}
	if c.CacheMB == 0 {
		c.CacheMB = 64
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = defaultMaxInflight
	}
}

// defaultMaxInflight is the default of max_inflight: far above what an
// office asks at once (queries wait milliseconds for a healthy upstream),
// and about as many sockets as a process may open by default.
const defaultMaxInflight = 1000

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
	if _, err := parseECS(c.ECS); err != nil {
		report("ecs", err.Error())
	}
	for _, u := range slices.Sorted(maps.Keys(c.UpstreamECS)) {
		if !slices.Contains(c.Upstreams, u) {
			report("upstream_ecs."+u, fmt.Sprintf("%q is not one of upstreams", u))
		}
		if _, err := parseECS(c.UpstreamECS[u]); err != nil {
			report("upstream_ecs."+u, err.Error())
		}
	}
	switch c.BlockResponse {
	case "zero_ip", "nxdomain", "refused":
	default:
		report("block_response", fmt.Sprintf("%q is not one of zero_ip, nxdomain, refused", c.BlockResponse))
	}
	if c.CacheMB < 1 || c.CacheMB > 1<<16 {
		report("cache_mb", fmt.Sprintf("%d is out of range 1..65536", c.CacheMB))
	}
	if c.MaxInflight < 1 || c.MaxInflight > 1_000_000 {
		report("max_inflight", fmt.Sprintf("%d is out of range 1..1000000", c.MaxInflight))
	}
	if d := c.DoT; d != nil {
		if len(d.Listen) == 0 {
			report("dot.listen", "missing: expected addresses to serve DNS over TLS on, such as [10.0.0.1:853]")
		}
		for i, a := range d.Listen {
			if a.Port() != 0 && slices.Contains(c.Listen, a) {
				report(fmt.Sprintf("dot.listen[%d]", i), fmt.Sprintf("%s is also in listen (plain DNS over TCP): use another port, usually 853", a))
			}
		}
		switch {
		case d.CertFile == "" && d.KeyFile == "" && d.ACME:
			// A self-signed fallback until ACME has a certificate.
		case d.CertFile == "":
			report("dot.cert_file", "missing: expected the certificate (PEM) DNS over TLS presents (or acme: true, with a self-signed certificate until ACME has one)")
		case d.KeyFile == "":
			report("dot.key_file", "missing: expected the certificate's private key (PEM)")
		}
		if d.CertFile == "" && d.KeyFile != "" {
			report("dot.key_file", "set without cert_file: name both, or neither with acme: true")
		}
	}
	for name, l := range c.Lists {
		if l.File == "" {
			report("lists."+name+".file", "missing: expected the list's file")
		}
		if l.Refresh < 0 {
			report("lists."+name+".refresh", "must not be negative")
		}
	}
	// Expressions are checked against placeholder lists: the files are read
	// when the resolver starts.
	lists := func(name string) (rules.List, bool) {
		if _, ok := c.Lists[name]; ok {
			return emptyList, true
		}
		return nil, false
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
		var prog *rules.Program
		if strings.TrimSpace(p.Expression) == "" {
			report(f+".expression", "missing: expected an expression such as dns.fqdn == \"example.com\"")
		} else {
			var err error
			if prog, err = rules.Compile(p.Expression, Schema(), lists); err != nil {
				report(f+".expression", fmt.Sprintf("policy %q: %v", p.ID, err))
			}
		}
		switch p.Action {
		case "allow", "block", "safe_search":
			if len(p.Override) > 0 {
				report(f+".override", "override applies only to action override")
			}
		case "override":
			if len(p.Override) == 0 {
				report(f+".override", fmt.Sprintf("policy %q: missing: expected addresses or one name to answer with", p.ID))
			} else if _, _, err := parseOverride(p.Override); err != nil {
				report(f+".override", fmt.Sprintf("policy %q: %v", p.ID, err))
			}
		default:
			report(f+".action", fmt.Sprintf("policy %q: %q is not one of allow, block, override, safe_search", p.ID, p.Action))
		}
		if prog != nil && afterResolution(prog) && (p.Action == "override" || p.Action == "safe_search") {
			report(f+".expression", fmt.Sprintf("policy %q: action %s is decided before resolution and cannot use dns.resolved_ips, dns.cnames or dns.cname_domains", p.ID, p.Action))
		}
	}
}

// Equal reports whether c and o are the same configuration.
func (c *Config) Equal(o *Config) bool {
	return slices.Equal(c.Listen, o.Listen) && slices.Equal(c.Upstreams, o.Upstreams) &&
		c.ECS == o.ECS && maps.Equal(c.UpstreamECS, o.UpstreamECS) && c.BlockResponse == o.BlockResponse && c.CacheMB == o.CacheMB &&
		c.MaxInflight == o.MaxInflight && c.DoT.equal(o.DoT) &&
		maps.Equal(c.Lists, o.Lists) &&
		slices.EqualFunc(c.Policies, o.Policies, func(a, b Policy) bool {
			return a.ID == b.ID && a.Name == b.Name && a.Expression == b.Expression && a.Action == b.Action && slices.Equal(a.Override, b.Override)
		})
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	n := *c
	n.Listen = slices.Clone(c.Listen)
	n.Upstreams = slices.Clone(c.Upstreams)
	n.Lists = maps.Clone(c.Lists)
	n.UpstreamECS = maps.Clone(c.UpstreamECS)
	n.Policies = slices.Clone(c.Policies)
	for i := range n.Policies {
		n.Policies[i].Override = slices.Clone(c.Policies[i].Override)
	}
	if c.DoT != nil {
		d := *c.DoT
		d.Listen = slices.Clone(c.DoT.Listen)
		n.DoT = &d
	}
	return &n
}

func (d *DoT) equal(o *DoT) bool {
	if d == nil || o == nil {
		return d == o
	}
	return slices.Equal(d.Listen, o.Listen) && d.CertFile == o.CertFile && d.KeyFile == o.KeyFile &&
		d.IdentifiedOnly == o.IdentifiedOnly && d.ACME == o.ACME
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
