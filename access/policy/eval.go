package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Identity is what a login established. Its fields are compared as they
// were at login time.
type Identity struct {
	Email  string
	Groups []string
	Claims map[string][]string // only the claims the policies read
}

// Network is what the current request or connection shows.
type Network struct {
	Addr         netip.Addr
	ServiceToken string // name of a service token whose secret checked out, or ""
	Certificate  bool   // a client certificate verified against the configured CA
	CommonName   string // its subject CN, when Certificate
	Device       bool   // the source is an enrolled device of the requesting user
	Country      string // Addr's country (ISO 3166-1 alpha-2) by the GeoIP databases; "" unknown
	// DevicePosture: Device, and the device's posture passes (it is not
	// quarantined, and posture: is configured).
	DevicePosture bool
	// Posture is the attributes posture selectors see of the device
	// (Device), nil when unknown: not the user's device, or no posture:.
	Posture *rules.Posture
}

// Input is what a Set decides on. Identity is nil when there is no login.
type Input struct {
	Identity *Identity
	Network  Network
}

// Decision is the outcome of evaluating a Set.
type Decision struct {
	Allowed bool
	Action  string // action of the deciding policy; "" when none matched
	Policy  string // name of the deciding policy
}

// Set is a compiled, immutable list of policies, safe for concurrent use.
type Set struct {
	first []compiled // bypass and service_auth, in order
	rest  []compiled // allow and block, in order
}

type compiled struct {
	name, action              string
	include, require, exclude []matcher
}

type matcher struct {
	kind   Kind
	match  func(in *Input) bool
	source string
}

// Compile checks and compiles policies. An empty list compiles to a Set
// that denies everything.
func Compile(ps []Policy) (*Set, error) {
	var errs []error
	for i, p := range ps {
		p.Check(nil, func(field, msg string) {
			errs = append(errs, fmt.Errorf("policies[%d] (%q).%s: %s", i, p.Name, field, msg))
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s := &Set{}
	for _, p := range ps {
		c := compiled{
			name:    p.Name,
			action:  p.Action,
			include: compileList(p.Include),
			require: compileList(p.Require),
			exclude: compileList(p.Exclude),
		}
		if p.Action == Bypass || p.Action == ServiceAuth {
			s.first = append(s.first, c)
		} else {
			s.rest = append(s.rest, c)
		}
	}
	return s, nil
}

func compileList(list []Selector) []matcher {
	out := make([]matcher, 0, len(list))
	for _, sel := range list {
		out = append(out, compileSelector(sel))
	}
	return out
}

func compileSelector(s Selector) matcher {
	m := matcher{kind: s.Kind(), source: s.Key()}
	id := func(f func(*Identity) bool) func(*Input) bool {
		return func(in *Input) bool { return in.Identity != nil && f(in.Identity) }
	}
	switch s.Key() {
	case "email":
		want := s.Email
		m.match = id(func(i *Identity) bool { return i.Email != "" && strings.EqualFold(i.Email, want) })
	case "email_domain":
		suffix := "@" + strings.ToLower(strings.TrimPrefix(s.EmailDomain, "@"))
		m.match = id(func(i *Identity) bool {
			e := strings.ToLower(i.Email)
			return len(e) > len(suffix) && strings.HasSuffix(e, suffix)
		})
	case "group":
		want := s.Group
		m.match = id(func(i *Identity) bool { return slices.Contains(i.Groups, want) })
	case "claim":
		name, want := s.Claim.Name, s.Claim.Value
		m.match = id(func(i *Identity) bool { return slices.Contains(i.Claims[name], want) })
	case "ip":
		p, _ := parsePrefix(s.IP)
		m.match = func(in *Input) bool { return in.Network.Addr.IsValid() && p.Contains(in.Network.Addr.Unmap()) }
	case "geo":
		// An unknown country matches no geo selector: include fails
		// closed, and so does an exclude meant to keep a country out
		// (require a known country with another include to be strict).
		want := strings.ToUpper(s.Geo)
		m.match = func(in *Input) bool { return in.Network.Country != "" && in.Network.Country == want }
	case "everyone":
		m.match = func(*Input) bool { return true }
	case "service_token":
		want := s.ServiceToken
		m.match = func(in *Input) bool { return in.Network.ServiceToken == want }
	case "any_service_token":
		m.match = func(in *Input) bool { return in.Network.ServiceToken != "" }
	case "certificate":
		m.match = func(in *Input) bool { return in.Network.Certificate }
	case "common_name":
		want := s.CommonName
		m.match = func(in *Input) bool { return in.Network.Certificate && in.Network.CommonName == want }
	case "device":
		m.match = func(in *Input) bool { return in.Network.Device }
	case "device_posture":
		m.match = func(in *Input) bool { return in.Network.Device && in.Network.DevicePosture }
	case "posture":
		prog, err := rules.Compile(s.Posture, PostureSchema(), nil)
		if err != nil { // unreachable after Check; fail closed
			m.match = func(*Input) bool { return false }
			break
		}
		m.match = func(in *Input) bool {
			if !in.Network.Device || in.Network.Posture == nil {
				return false
			}
			rec := rules.NewRecord(PostureSchema())
			rec.SetPosture(*in.Network.Posture)
			return prog.Eval(rec)
		}
	default: // unreachable after Check; fail closed
		m.match = func(*Input) bool { return false }
	}
	return m
}

func (c *compiled) matches(in *Input) bool {
	hit := false
	for _, m := range c.include {
		if m.match(in) {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	for _, m := range c.require {
		if !m.match(in) {
			return false
		}
	}
	for _, m := range c.exclude {
		if m.match(in) {
			return false
		}
	}
	return true
}

// Evaluate decides on in. Bypass and service_auth policies are tried first
// and see only the network facts; then, when there is an identity, allow and
// block policies in order. The first match decides; no match denies.
func (s *Set) Evaluate(in Input) Decision {
	if s == nil {
		return Decision{}
	}
	netOnly := Input{Network: in.Network}
	for i := range s.first {
		if s.first[i].matches(&netOnly) {
			return Decision{Allowed: true, Action: s.first[i].action, Policy: s.first[i].name}
		}
	}
	if in.Identity == nil {
		return Decision{}
	}
	for i := range s.rest {
		if s.rest[i].matches(&in) {
			return Decision{Allowed: s.rest[i].action == Allow, Action: s.rest[i].action, Policy: s.rest[i].name}
		}
	}
	return Decision{}
}

// Len is the number of policies in the set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.first) + len(s.rest)
}

// ClaimStrings reads an ID-token claim as the strings policies compare:
// a string, or a list of them; numbers and booleans are written as JSON
// writes them. Access logins and device enrollment read claims with it.
func ClaimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, ClaimStrings(e)...)
		}
		return out
	case float64, bool:
		b, _ := json.Marshal(v)
		return []string{string(b)}
	}
	return nil
}
