package tunnel

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// KernelRoute is one route the manager wants in the kernel: a prefix at a
// metric (priority plus health penalty), through one or more tunnels.
// More than one nexthop is an ECMP multipath route.
type KernelRoute struct {
	Prefix   netip.Prefix
	Metric   int
	Nexthops []Nexthop // ordered by tunnel name
}

// Nexthop is a tunnel interface with an ECMP weight.
type Nexthop struct {
	Via    string
	Weight int
}

// String renders r like `ip route`: "10.20.0.0/16 metric 100 nexthop
// dev a weight 1 nexthop dev b weight 2", or "… dev a" for one nexthop.
func (r KernelRoute) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s metric %d", r.Prefix, r.Metric)
	if len(r.Nexthops) == 1 {
		fmt.Fprintf(&b, " dev %s", r.Nexthops[0].Via)
		if w := r.Nexthops[0].Weight; w != 1 {
			fmt.Fprintf(&b, " weight %d", w)
		}
		return b.String()
	}
	for _, n := range r.Nexthops {
		fmt.Fprintf(&b, " nexthop dev %s weight %d", n.Via, n.Weight)
	}
	return b.String()
}

// Plan computes the kernel routes for routes given each tunnel's health:
// a route's metric is its priority plus its tunnel's [State.Penalty], and
// routes for the same prefix at the same metric become one multipath
// route. Routes are never dropped for health, only penalised, so a prefix
// still has a way out when all its tunnels are unhealthy. A tunnel missing
// from states is healthy. The result is sorted by prefix and metric.
func Plan(routes []Route, states map[string]State) []KernelRoute {
	type key struct {
		p      netip.Prefix
		metric int
	}
	groups := map[key]*KernelRoute{}
	for _, r := range routes {
		k := key{r.Prefix.Masked(), r.Priority + states[r.Via].Penalty()}
		g := groups[k]
		if g == nil {
			g = &KernelRoute{Prefix: k.p, Metric: k.metric}
			groups[k] = g
		}
		w := max(r.Weight, 1)
		if i := slices.IndexFunc(g.Nexthops, func(n Nexthop) bool { return n.Via == r.Via }); i >= 0 {
			g.Nexthops[i].Weight = max(g.Nexthops[i].Weight, w)
			continue
		}
		g.Nexthops = append(g.Nexthops, Nexthop{Via: r.Via, Weight: w})
	}
	out := make([]KernelRoute, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g.Nexthops, func(a, b Nexthop) int { return strings.Compare(a.Via, b.Via) })
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b KernelRoute) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()), cmp.Compare(a.Metric, b.Metric))
	})
	return out
}
