// Package policy holds Access policies: the config types, their checks, and
// evaluation with Cloudflare Access semantics. It is a leaf: it knows nothing
// of HTTP, so the Access proxy and WireGuard device enrollment share it.
//
// A policy matches when OR(include) ∧ AND(require) ∧ ¬OR(exclude). A set of
// policies runs bypass and service_auth policies first, then allow and block
// policies, each group top to bottom; the first match decides, and nothing
// matching means deny.
//
// Selectors come in two kinds. Identity selectors (email, email_domain,
// group, claim) are facts about a login and are frozen when the user logs
// in. Network selectors (ip, service_token, any_service_token, certificate,
// common_name, device) are facts about the connection and are checked on
// every request. everyone is neither: it always matches.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Actions.
const (
	Allow       = "allow"
	Block       = "block"
	Bypass      = "bypass"
	ServiceAuth = "service_auth"
)

// Policy is one Access policy. It has Check rather than Validate on
// purpose: the section holding policies checks them, so that messages can
// name the app and the policy.
type Policy struct {
	Name    string     `yaml:"name"`
	Action  string     `yaml:"action"` // allow | block | bypass | service_auth
	Include []Selector `yaml:"include"`
	Require []Selector `yaml:"require"`
	Exclude []Selector `yaml:"exclude"`
}

// Selector is one rule of a policy; exactly one of its keys is set. The
// booleans are pointers so that `everyone: false` is seen and refused rather
// than silently meaning "no selector".
type Selector struct {
	Email           string `yaml:"email"`             // identity: exact address, case-insensitive
	EmailDomain     string `yaml:"email_domain"`      // identity: address ends in @domain
	Group           string `yaml:"group"`             // identity: a value of the provider's groups claim
	Claim           *Claim `yaml:"claim"`             // identity: an ID token claim has this value
	IP              string `yaml:"ip"`                // network: source address in this CIDR (or address)
	Everyone        *bool  `yaml:"everyone"`          // always true
	ServiceToken    string `yaml:"service_token"`     // network: this named service token was presented
	AnyServiceToken *bool  `yaml:"any_service_token"` // network: any valid service token
	Certificate     *bool  `yaml:"certificate"`       // network: a client certificate verified by the configured CA
	CommonName      string `yaml:"common_name"`       // network: the verified client certificate has this CN
	Device          *bool  `yaml:"device"`            // network: the request comes from a device the requesting user enrolled
	Geo             string `yaml:"geo"`               // network: the source address is in this country (ISO 3166-1 alpha-2, by the GeoIP databases)
	// DevicePosture: network: the request comes from a device the
	// requesting user enrolled, and its posture passes (posture:): it is
	// not quarantined. Without posture: it never matches.
	DevicePosture *bool `yaml:"device_posture"`
	// Posture: network: the request comes from a device the requesting
	// user enrolled, and its posture attributes satisfy this expression
	// in the rules language over the device.posture.* fields (as in
	// firewall rules and DNS policies), e.g.
	// `device.posture.disk_encrypted and device.posture.os_version >= "6.1"`.
	// An unknown attribute satisfies no comparison; without posture: or
	// without a report it never matches.
	Posture string `yaml:"posture"`
}

// Claim matches an ID token claim by name; a list claim matches when any of
// its values is Value.
type Claim struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// Kind tells whether a selector is about the login, the connection, or
// neither.
type Kind int

// Selector kinds.
const (
	KindNone Kind = iota // everyone
	KindIdentity
	KindNetwork
)

// key returns the selector's key name and how many keys are set.
func (s Selector) keys() []string {
	var k []string
	add := func(set bool, name string) {
		if set {
			k = append(k, name)
		}
	}
	add(s.Email != "", "email")
	add(s.EmailDomain != "", "email_domain")
	add(s.Group != "", "group")
	add(s.Claim != nil, "claim")
	add(s.IP != "", "ip")
	add(s.Everyone != nil, "everyone")
	add(s.ServiceToken != "", "service_token")
	add(s.AnyServiceToken != nil, "any_service_token")
	add(s.Certificate != nil, "certificate")
	add(s.CommonName != "", "common_name")
	add(s.Device != nil, "device")
	add(s.Geo != "", "geo")
	add(s.DevicePosture != nil, "device_posture")
	add(s.Posture != "", "posture")
	return k
}

// Key is the name of the selector's one key, or "" when it has none or
// several.
func (s Selector) Key() string {
	if k := s.keys(); len(k) == 1 {
		return k[0]
	}
	return ""
}

// Kind classifies the selector.
func (s Selector) Kind() Kind {
	switch s.Key() {
	case "email", "email_domain", "group", "claim":
		return KindIdentity
	case "everyone", "":
		return KindNone
	default:
		return KindNetwork
	}
}

// UsesIdentity reports whether any selector of p is an identity selector.
func (p Policy) UsesIdentity() bool {
	return anySelector([]Policy{p}, func(s Selector) bool { return s.Kind() == KindIdentity })
}

// Claims lists the claim names that the policies' claim selectors read, so a
// login keeps only those.
func Claims(ps []Policy) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		for _, list := range [][]Selector{p.Include, p.Require, p.Exclude} {
			for _, s := range list {
				if s.Claim != nil && !seen[s.Claim.Name] {
					seen[s.Claim.Name] = true
					out = append(out, s.Claim.Name)
				}
			}
		}
	}
	return out
}

// Check reports every problem of a policy; fields are relative to it
// ("include[0].ip"). serviceTokens, when not nil, are the names a
// service_token selector may use.
func (p Policy) Check(serviceTokens map[string]bool, report func(field, msg string)) {
	if p.Name == "" {
		report("name", "missing: every policy needs a name")
	}
	switch p.Action {
	case Allow, Block, Bypass, ServiceAuth:
	case "":
		report("action", "missing: expected one of allow, block, bypass, service_auth")
	default:
		report("action", fmt.Sprintf("%q is not one of allow, block, bypass, service_auth", p.Action))
	}
	if len(p.Include) == 0 {
		report("include", "missing: a policy needs at least one include selector (use [{everyone: true}] to mean anyone)")
	}
	for _, l := range []struct {
		name string
		list []Selector
	}{{"include", p.Include}, {"require", p.Require}, {"exclude", p.Exclude}} {
		for i, s := range l.list {
			f := fmt.Sprintf("%s[%d]", l.name, i)
			s.check(serviceTokens, func(field, msg string) {
				if field != "" {
					field = f + "." + field
				} else {
					field = f
				}
				report(field, msg)
			})
			if (p.Action == Bypass || p.Action == ServiceAuth) && s.Kind() == KindIdentity {
				report(f, fmt.Sprintf("%s policies run without a login and may not use the identity selector %s", p.Action, s.Key()))
			}
		}
	}
}

func (s Selector) check(serviceTokens map[string]bool, report func(field, msg string)) {
	keys := s.keys()
	switch len(keys) {
	case 0:
		report("", "empty selector: expected exactly one of email, email_domain, group, claim, ip, everyone, service_token, any_service_token, certificate, common_name, device, geo")
		return
	case 1:
	default:
		report("", fmt.Sprintf("expected exactly one key per selector, found %s; list them as separate selectors", strings.Join(keys, ", ")))
		return
	}
	mustTrue := func(name string, b *bool) {
		if !*b {
			report(name, "must be true (leave the selector out instead of setting it false)")
		}
	}
	switch keys[0] {
	case "email":
		if at := strings.LastIndexByte(s.Email, '@'); at <= 0 || at == len(s.Email)-1 || strings.ContainsAny(s.Email, " \t") {
			report("email", fmt.Sprintf("%q is not an email address such as user@example.com", s.Email))
		}
	case "email_domain":
		d := strings.TrimPrefix(s.EmailDomain, "@")
		if d == "" || strings.ContainsAny(d, "@ \t/") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
			report("email_domain", fmt.Sprintf("%q is not a domain such as example.com", s.EmailDomain))
		}
	case "claim":
		if s.Claim.Name == "" {
			report("claim.name", "missing: expected the claim's name")
		}
		if s.Claim.Value == "" {
			report("claim.value", "missing: expected the value the claim must have")
		}
	case "ip":
		if _, err := parsePrefix(s.IP); err != nil {
			report("ip", fmt.Sprintf("%q is not a CIDR such as 10.0.0.0/8 or an address", s.IP))
		}
	case "geo":
		if !validCountry(s.Geo) {
			report("geo", fmt.Sprintf("%q is not a country code such as DE (ISO 3166-1 alpha-2)", s.Geo))
		}
	case "everyone":
		mustTrue("everyone", s.Everyone)
	case "any_service_token":
		mustTrue("any_service_token", s.AnyServiceToken)
	case "certificate":
		mustTrue("certificate", s.Certificate)
	case "device":
		mustTrue("device", s.Device)
	case "device_posture":
		mustTrue("device_posture", s.DevicePosture)
	case "posture":
		if _, err := rules.Compile(s.Posture, PostureSchema(), nil); err != nil {
			report("posture", fmt.Sprintf("%q: %v", s.Posture, err))
		}
	case "service_token":
		if serviceTokens != nil && !serviceTokens[s.ServiceToken] {
			report("service_token", fmt.Sprintf("%q is not a service token defined in access.service_tokens", s.ServiceToken))
		}
	}
}

// PostureSchema is the schema of posture selectors: the device.posture.*
// fields of the rules language and nothing else.
var PostureSchema = sync.OnceValue(func() *rules.Schema {
	s, err := rules.NewSchema(rules.PostureFields()...)
	if err != nil {
		panic("policy: posture schema: " + err.Error())
	}
	return s
})

// UsesPosture reports whether any selector of ps is a posture selector.
func UsesPosture(ps []Policy) bool {
	return anySelector(ps, func(s Selector) bool { return s.Posture != "" })
}

// anySelector reports whether f holds for a selector of ps.
func anySelector(ps []Policy, f func(Selector) bool) bool {
	for _, p := range ps {
		for _, list := range [][]Selector{p.Include, p.Require, p.Exclude} {
			if slices.ContainsFunc(list, f) {
				return true
			}
		}
	}
	return false
}

// validCountry reports whether s is two ASCII letters, either case.
func validCountry(s string) bool {
	if len(s) != 2 {
		return false
	}
	for _, c := range []byte(strings.ToUpper(s)) {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// UsesGeo reports whether any selector of ps is a geo selector: the
// caller must then fill [Network.Country], and refuse the policies when
// there is no GeoIP database to fill it from.
func UsesGeo(ps []Policy) bool {
	return anySelector(ps, func(s Selector) bool { return s.Geo != "" })
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zone not allowed")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
