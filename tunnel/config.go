package tunnel

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// HealthCheck configures Magic-WAN-style probes through a tunnel. Checks are
// on unless disabled, as in Magic WAN.
type HealthCheck struct {
	Enabled *bool  `yaml:"enabled"` // default true
	Type    string `yaml:"type"`    // reply | request
	Rate    string `yaml:"rate"`    // low | mid | high
	// Direction is bidirectional (probe and answer both through the
	// tunnel, the default here) or unidirectional (answer over the
	// Internet), which Validate refuses until it is implemented: a
	// setting that is accepted and ignored would make a check report on
	// a path the operator did not ask for.
	Direction string     `yaml:"direction"`
	Target    netip.Addr `yaml:"target"` // default: the far end of the tunnel's /31 or /30
}

// SetDefaults applies Magic WAN's defaults.
func (h *HealthCheck) SetDefaults() {
	if h.Enabled == nil {
		on := true
		h.Enabled = &on
	}
	if h.Type == "" {
		h.Type = "reply"
	}
	if h.Rate == "" {
		h.Rate = "mid"
	}
	// Magic WAN defaults to unidirectional; edgegw's checks are
	// bidirectional only (see Validate), so that is the default here.
	if h.Direction == "" {
		h.Direction = "bidirectional"
	}
}

// Validate reports values outside the documented sets.
func (h *HealthCheck) Validate(report func(field, msg string)) {
	oneOf(report, "type", h.Type, "reply", "request")
	oneOf(report, "rate", h.Rate, "low", "mid", "high")
	switch h.Direction {
	case "bidirectional":
	case "unidirectional":
		report("direction", "not supported yet: unidirectional (answer over the Internet, outside the tunnel); "+
			"edgegw's probes and their answers both go through the tunnel: use direction: bidirectional or leave it out")
	default:
		report("direction", fmt.Sprintf("%q: expected bidirectional (unidirectional is not supported yet)", h.Direction))
	}
}

// Route sends a prefix through a named tunnel. Among routes for the same
// prefix the lowest priority wins; equal priorities share flows (ECMP).
type Route struct {
	Prefix   netip.Prefix `yaml:"prefix"`
	Via      string       `yaml:"via"`
	Priority int          `yaml:"priority"` // default 100
	Weight   int          `yaml:"weight"`   // ECMP weight, default 1
	// Steering is how the prefix's tunnels share it: "priority" (the
	// default: lowest priority plus health penalty wins, equal ones are
	// ECMP) or "quality" (see [Steerer]: the best-scoring healthy tunnel
	// carries it, and a tunnel whose loss or latency crosses a threshold
	// is left before its health check calls it down). Every route of a
	// prefix must name the same steering ([CheckRoutes]).
	Steering string `yaml:"steering"`
}

// Route steering modes.
const (
	SteerPriority = "priority"
	SteerQuality  = "quality"
)

// QualitySteered reports whether the route's prefix is steered by quality.
func (r Route) QualitySteered() bool { return r.Steering == SteerQuality }

func (r Route) steering() string { return cmp.Or(r.Steering, SteerPriority) }

// SetDefaults gives a route Magic WAN's default priority.
func (r *Route) SetDefaults() {
	if r.Priority == 0 {
		r.Priority = 100
	}
	if r.Weight == 0 {
		r.Weight = 1
	}
	if r.Steering == "" {
		r.Steering = SteerPriority
	}
}

// Validate checks one route on its own; that Via names a tunnel is checked
// by the owner of all tunnels' configuration.
func (r *Route) Validate(report func(field, msg string)) {
	CheckPrefix(report, "prefix", r.Prefix)
	if r.Via == "" {
		report("via", "missing: name the tunnel this route goes through")
	}
	if r.Priority < 1 || r.Priority > MaxPriority {
		report("priority", fmt.Sprintf("must be from 1 to %d, got %d", MaxPriority, r.Priority))
	}
	if r.Weight < 1 || r.Weight > 256 {
		report("weight", fmt.Sprintf("must be from 1 to 256, got %d", r.Weight))
	}
	switch r.Steering {
	case "", SteerPriority, SteerQuality: // "" before SetDefaults is priority
	default:
		report("steering", fmt.Sprintf("%q: expected priority (the default) or quality", r.Steering))
	}
}

var ifname = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// CheckName reports a tunnel name that cannot name a Linux interface.
func CheckName(report func(field, msg string), field, name string) {
	switch {
	case name == "":
		report(field, "missing: every tunnel needs a name")
	case len(name) > 15:
		report(field, fmt.Sprintf("%q is %d characters; a tunnel name names an interface and may have at most 15", name, len(name)))
	case !ifname.MatchString(name):
		report(field, fmt.Sprintf("%q may contain only letters, digits, '_', '.' and '-', and must start with a letter or digit", name))
	}
}

// CheckPrefix reports a missing prefix or one with host bits set.
func CheckPrefix(report func(field, msg string), field string, p netip.Prefix) {
	switch {
	case !p.IsValid():
		report(field, "missing: expected a prefix such as 10.20.0.0/16")
	case p.Masked() != p:
		report(field, fmt.Sprintf("%s has host bits set; did you mean %s?", p, p.Masked()))
	}
}

// CheckTunnelAddress reports an interface address that is not a usable host
// address of a /31 or /30 (IPv4) or /127 or /126 (IPv6) point-to-point link.
func CheckTunnelAddress(report func(field, msg string), field string, p netip.Prefix) {
	if !p.IsValid() {
		report(field, "missing: expected this end's address on a /31 or /30, such as 10.200.1.0/31")
		return
	}
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits < 1 || hostBits > 2 {
		report(field, fmt.Sprintf("%s: a tunnel address must be on a /31 or /30 (IPv6 /127 or /126)", p))
		return
	}
	if hostBits == 2 {
		net := p.Masked().Addr()
		last := net.Next().Next().Next()
		if p.Addr() == net || p.Addr() == last {
			report(field, fmt.Sprintf("%s is the network or broadcast address of a /30; use %s or %s", p.Addr(), net.Next(), net.Next().Next()))
		}
	}
}

// Peer returns the other host address of a point-to-point tunnel prefix.
func Peer(p netip.Prefix) netip.Addr {
	if p.Addr().BitLen()-p.Bits() == 1 {
		a := p.Addr().As16()
		a[15] ^= 1
		addr := netip.AddrFrom16(a)
		if p.Addr().Is4() {
			addr = addr.Unmap()
		}
		return addr
	}
	net := p.Masked().Addr()
	if p.Addr() == net.Next() {
		return net.Next().Next()
	}
	return net.Next()
}

func oneOf(report func(field, msg string), field, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	report(field, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
}

// OneOf reports v unless it is one of allowed.
func OneOf(report func(field, msg string), field, v string, allowed ...string) {
	oneOf(report, field, v, allowed...)
}

// CheckRoutes reports routes whose via names none of tunnels (the names
// of every configured tunnel, of every kind), and routes of one prefix
// that disagree on steering. Fields are "[i].via" and "[i].steering",
// relative to the routes list.
func CheckRoutes(report func(field, msg string), routes []Route, tunnels []string) {
	first := map[netip.Prefix]int{}
	for i, r := range routes {
		if r.Via != "" && !slices.Contains(tunnels, r.Via) {
			report(fmt.Sprintf("[%d].via", i), fmt.Sprintf("route %s: no tunnel is named %q (tunnels: %s)",
				r.Prefix, r.Via, strings.Join(tunnels, ", ")))
		}
		p := r.Prefix.Masked()
		j, seen := first[p]
		if !seen {
			first[p] = i
			continue
		}
		if r.QualitySteered() != routes[j].QualitySteered() {
			report(fmt.Sprintf("[%d].steering", i), fmt.Sprintf("route %s via %s: steering %s, but routes[%d] for the same prefix says %s; "+
				"a prefix is steered one way", r.Prefix, r.Via, r.steering(), j, routes[j].steering()))
		}
	}
}
