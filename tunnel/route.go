package tunnel

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxPriority is the highest priority a configured route may have
// ([Route.Validate] rejects more).
const MaxPriority = 65535

// UnreachableMetric is the metric of the unreachable route [Plan] adds
// under every routed prefix. It is far above the worst metric a tunnel
// route can get (MaxPriority + DownPenalty = 1,065,535), so any route
// through any tunnel, healthy or not, wins over it; and it stays below
// 2^31 so that no tool reading metrics as signed 32-bit numbers shows it
// negative. When every tunnel interface of a prefix is gone (a GRE TUN
// being recreated, charon restarting with the IPsec device) the kernel
// removes their routes with them, and this route is what is left: the
// prefix's traffic is refused with ICMP unreachable instead of following
// the default route out of the WAN in cleartext.
const UnreachableMetric = 2_000_000_000

// A compile-time check: the constant conversion fails to compile if a
// configured route could reach the unreachable route's metric.
const _ = uint(UnreachableMetric - (MaxPriority + DownPenalty) - 1)

// KernelRoute is one route the manager wants in the kernel: a prefix at a
// metric (priority plus health penalty), through one or more tunnels.
// More than one nexthop is an ECMP multipath route. An Unreachable route
// has no nexthops: the kernel refuses packets that match it (RTN_UNREACHABLE).
type KernelRoute struct {
	Prefix      netip.Prefix
	Metric      int
	Unreachable bool
	Nexthops    []Nexthop // ordered by tunnel name
}

// Nexthop is a tunnel interface with an ECMP weight.
type Nexthop struct {
	Via    string
	Weight int
}

// String renders r like `ip route`: "10.20.0.0/16 metric 100 nexthop
// dev a weight 1 nexthop dev b weight 2", "… dev a" for one nexthop, or
// "unreachable 10.20.0.0/16 metric 2000000000".
func (r KernelRoute) String() string {
	var b strings.Builder
	if r.Unreachable {
		b.WriteString("unreachable ")
	}
	fmt.Fprintf(&b, "%s metric %d", r.Prefix, r.Metric)
	if r.Unreachable {
		return b.String()
	}
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
// from states is healthy. Every prefix also gets an unreachable route at
// [UnreachableMetric], last, so that it is refused rather than leaked when
// none of its tunnels' interfaces exist. The result is sorted by prefix
// and metric.
func Plan(routes []Route, states map[string]State) []KernelRoute {
	return plan(routes, states, nil)
}

func plan(routes []Route, states map[string]State, steer Steering) []KernelRoute {
	type key struct {
		p      netip.Prefix
		metric int
	}
	groups := map[key]*KernelRoute{}
	for _, r := range routes {
		p := r.Prefix.Masked()
		uk := key{p, UnreachableMetric}
		if groups[uk] == nil {
			groups[uk] = &KernelRoute{Prefix: p, Metric: UnreachableMetric, Unreachable: true}
		}
		// Validated priorities stay far below; an unvalidated one is
		// kept under the unreachable route rather than replacing it.
		metric := r.Priority + states[r.Via].Penalty()
		if c, ok := steer[p]; ok && c.Via != r.Via {
			metric += SteeredAwayPenalty
		}
		k := key{p, min(metric, UnreachableMetric-1)}
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
