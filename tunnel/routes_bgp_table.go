package tunnel

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Route sources as the routing table names them; a route learned from a
// BGP neighbor has the source it was learned under ("bgp:NEIGHBOR").
const (
	SourceStatic    = "static"    // the routes section
	SourceConnected = "connected" // a tunnel's own subnet, on its device
	SourceFallback  = "fallback"  // the unreachable route under every routed prefix
	SourceGuard     = "bgp guard" // the unreachable route under a BGP neighbor's import range
)

// TableRoute is one route of the site-to-site routing table, as `edgegw
// routes` shows it: where it comes from, what its metric is made of, and
// whether it is the one the prefix uses now.
type TableRoute struct {
	Prefix netip.Prefix `json:"prefix"`
	Via    string       `json:"via,omitempty"` // the tunnel; none for a fallback
	Source string       `json:"source"`
	// Priority is the configured or learned priority; Metric adds the
	// tunnel's health penalty (State) and quality steering's penalty
	// (Steering "away"), exactly as the route manager plans it.
	Priority int    `json:"priority"`
	Weight   int    `json:"weight,omitempty"`
	State    string `json:"state,omitempty"`    // the tunnel's health: healthy, degraded, down
	Steering string `json:"steering,omitempty"` // quality-steered prefixes: "chosen" or "away"
	Metric   int    `json:"metric"`
	// Active: the lowest metric of its prefix, the path the kernel
	// uses (several active routes of one prefix are ECMP). A planned
	// route whose tunnel device is missing is not in the kernel at all,
	// and then the next metric carries the prefix.
	Active bool `json:"active"`
}

// routeMetric is a route's metric as [Plan] computes it.
func routeMetric(r Route, states map[string]State, steer Steering) int {
	m := r.Priority + states[r.Via].Penalty()
	if c, ok := steer[r.Prefix.Masked()]; ok && c.Via != r.Via {
		m += SteeredAwayPenalty
	}
	return min(m, UnreachableMetric-1)
}

// Table lists the routes [PlanSteered] makes of configured and learned
// (by source) routes, one row per route and source rather than merged
// into kernel routes, each prefix's fallback included, sorted by prefix,
// then metric, then source and tunnel.
func Table(configured []Route, learned map[string][]Route, states map[string]State, steer Steering) []TableRoute {
	var out []TableRoute
	prefixes := map[netip.Prefix]bool{}
	add := func(source string, rs []Route) {
		for _, r := range rs {
			p := r.Prefix.Masked()
			prefixes[p] = true
			tr := TableRoute{Prefix: p, Via: r.Via, Source: source, Priority: r.Priority, Weight: max(r.Weight, 1),
				State: states[r.Via].String(), Metric: routeMetric(r, states, steer)}
			if c, ok := steer[p]; ok {
				tr.Steering = "away"
				if c.Via == r.Via {
					tr.Steering = "chosen"
				}
			}
			out = append(out, tr)
		}
	}
	add(SourceStatic, configured)
	for _, src := range slices.Sorted(maps.Keys(learned)) {
		add(src, learned[src])
	}
	for p := range prefixes {
		out = append(out, TableRoute{Prefix: p, Source: SourceFallback, Metric: UnreachableMetric})
	}
	SettleTable(out)
	return out
}

// SettleTable marks the rows with the lowest metric of their prefix
// active, the others not, and sorts rows by prefix, metric, source and
// tunnel. Rows added to a [Table] (connected subnets, BGP's guards) go
// through it again.
func SettleTable(rows []TableRoute) {
	best := map[netip.Prefix]int{}
	for _, r := range rows {
		if b, ok := best[r.Prefix]; !ok || r.Metric < b {
			best[r.Prefix] = r.Metric
		}
	}
	for i := range rows {
		rows[i].Active = rows[i].Metric == best[rows[i].Prefix]
	}
	slices.SortFunc(rows, func(a, b TableRoute) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			cmp.Compare(a.Metric, b.Metric), strings.Compare(a.Source, b.Source), strings.Compare(a.Via, b.Via))
	})
}
