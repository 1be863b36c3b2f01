package dns

import (
	"fmt"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/firewall/rules"
)

// action is what a matching policy does.
type action uint8

const (
	actAllow action = iota
	actBlock
	actOverride
	actSafeSearch
)

// policy is a compiled [Policy].
type policy struct {
	id, name string
	prog     *rules.Program
	act      action
	after    bool         // uses fields known only after resolution
	addrs    []netip.Addr // override with addresses
	target   string       // override with a name (FQDN, with the final dot)
	// matched is its edgegw_dns_policy_matches_total series, looked up
	// when the policy is applied rather than per query.
	matched prometheus.Counter
}

// compilePolicies compiles the configuration's policies with the given
// lists.
func compilePolicies(ps []Policy, lists map[string]*domainList) ([]*policy, error) {
	resolve := func(name string) (rules.List, bool) {
		l, ok := lists[name]
		return l, ok
	}
	out := make([]*policy, 0, len(ps))
	for _, p := range ps {
		prog, err := rules.Compile(p.Expression, Schema(), resolve)
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", p.ID, err)
		}
		cp := &policy{id: p.ID, name: p.Name, prog: prog, after: afterResolution(prog)}
		switch p.Action {
		case "allow":
			cp.act = actAllow
		case "block":
			cp.act = actBlock
		case "safe_search":
			cp.act = actSafeSearch
		case "override":
			cp.act = actOverride
			if cp.addrs, cp.target, err = parseOverride(p.Override); err != nil {
				return nil, fmt.Errorf("policy %q: %w", p.ID, err)
			}
		default:
			return nil, fmt.Errorf("policy %q: unknown action %q", p.ID, p.Action)
		}
		if cp.name == "" {
			cp.name = cp.id
		}
		out = append(out, cp)
	}
	return out, nil
}

// afterResolution reports whether prog uses a field of the answer.
func afterResolution(prog *rules.Program) bool {
	return usesField(prog, func(f *rules.Field) bool { return f.Index() >= fResolvedIPs })
}

// UsesGeo reports whether a policy of ps uses dns.src.geo.country or
// dns.dst.geo.country: the owner must then hand [Options.Countries] a
// GeoIP database, and refuse the policies without one. Policies that do
// not compile are left to Validate.
func UsesGeo(ps []Policy) bool {
	anyList := func(name string) (rules.List, bool) { return &domainList{name: name}, true }
	for _, p := range ps {
		prog, err := rules.Compile(p.Expression, Schema(), anyList)
		if err == nil && usesField(prog, func(f *rules.Field) bool { return f.Index() == fSrcCountry || f.Index() == fDstCountry }) {
			return true
		}
	}
	return false
}

// usesField reports whether prog uses a field for which is holds.
func usesField(prog *rules.Program, is func(*rules.Field) bool) bool {
	found := false
	rules.Walk(prog.Expr, func(e rules.Expr) bool {
		var f *rules.Field
		switch e := e.(type) {
		case *rules.Compare:
			f = e.Field
		case *rules.InSet:
			f = e.Field
		case *rules.InList:
			f = e.Field
		case *rules.Contains:
			f = e.Field
		case *rules.BoolField:
			f = e.Field
		}
		if f != nil && is(f) {
			found = true
		}
		return !found
	})
	return found
}

// parseOverride reads an override: IP addresses, or exactly one name.
func parseOverride(vals []string) (addrs []netip.Addr, target string, err error) {
	for _, v := range vals {
		if a, err := netip.ParseAddr(v); err == nil {
			if a.Zone() != "" {
				return nil, "", fmt.Errorf("override %q: zones are not allowed", v)
			}
			addrs = append(addrs, a.Unmap())
			continue
		}
		if d := appendDomain(nil, []byte(v)); d != nil {
			if target != "" {
				return nil, "", fmt.Errorf("override: at most one name, got %q and %q", target, v)
			}
			target = string(d)
			continue
		}
		return nil, "", fmt.Errorf("override %q is neither an IP address nor a domain name", v)
	}
	if target != "" && len(addrs) > 0 {
		return nil, "", fmt.Errorf("override: addresses or one name, not both")
	}
	if target != "" {
		target = mdns.Fqdn(target)
	}
	return addrs, target, nil
}

// safeSearch maps search and video sites to their restricted endpoints
// (answered with a CNAME). Google's country domains are matched by the
// rule in safeSearchTarget.
var safeSearch = map[string]string{
	"google.com":               "forcesafesearch.google.com.",
	"www.google.com":           "forcesafesearch.google.com.",
	"bing.com":                 "strict.bing.com.",
	"www.bing.com":             "strict.bing.com.",
	"duckduckgo.com":           "safe.duckduckgo.com.",
	"www.duckduckgo.com":       "safe.duckduckgo.com.",
	"start.duckduckgo.com":     "safe.duckduckgo.com.",
	"html.duckduckgo.com":      "safe.duckduckgo.com.",
	"yandex.com":               "familysearch.yandex.ru.",
	"www.yandex.com":           "familysearch.yandex.ru.",
	"yandex.ru":                "familysearch.yandex.ru.",
	"www.yandex.ru":            "familysearch.yandex.ru.",
	"www.youtube.com":          "restrict.youtube.com.",
	"m.youtube.com":            "restrict.youtube.com.",
	"youtubei.googleapis.com":  "restrict.youtube.com.",
	"youtube.googleapis.com":   "restrict.youtube.com.",
	"www.youtube-nocookie.com": "restrict.youtube.com.",
	"youtube.com":              "restrict.youtube.com.",
	"music.youtube.com":        "restrict.youtube.com.",
}

// safeSearchTarget returns the restricted endpoint for fqdn (canonical),
// or "" if it is not a search or video site.
func safeSearchTarget(fqdn string) string {
	if t := safeSearch[fqdn]; t != "" {
		return t
	}
	// www.google.<cc> and google.<cc>, google.co.<cc>, google.com.<cc>.
	name := strings.TrimPrefix(fqdn, "www.")
	if rest, ok := strings.CutPrefix(name, "google."); ok && rest != "" && len(rest) <= 6 &&
		!strings.Contains(strings.TrimPrefix(strings.TrimPrefix(rest, "co."), "com."), ".") {
		return "forcesafesearch.google.com."
	}
	return ""
}
