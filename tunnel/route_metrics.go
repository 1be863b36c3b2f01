package tunnel

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	routeInstalledDesc = prometheus.NewDesc("edgegw_routes_installed",
		"1 for each path of a routed prefix in the kernel after the last route update: via is the tunnel "+
			"(\"unreachable\" for the fallback that refuses the prefix's traffic), role is active for the "+
			"lowest metric, which carries the traffic, and backup for the others.",
		[]string{"prefix", "via", "role"}, nil)
	routeFailoversDesc = prometheus.NewDesc("edgegw_route_failovers_total",
		"Times the active path of a routed prefix changed to other tunnels (or to the unreachable fallback) "+
			"while the prefix stayed routed.",
		[]string{"prefix"}, nil)
)

// routeMetrics is what the route manager exports: the paths installed by
// the last update, and failovers per prefix. It is not safe for
// concurrent use; the manager guards it.
type routeMetrics struct {
	paths     []routePath
	active    map[netip.Prefix]string // the active path's vias, comma-separated
	failovers map[netip.Prefix]uint64
}

type routePath struct {
	prefix netip.Prefix
	metric int
	via    string
	active bool
}

func newRouteMetrics() routeMetrics {
	return routeMetrics{active: map[netip.Prefix]string{}, failovers: map[netip.Prefix]uint64{}}
}

// update records the routes in the kernel after an update: each with its
// nexthops, none for an unreachable route. A prefix whose active path (its
// lowest metric) differs from the last update's has failed over; a prefix
// no longer routed forgets its count.
func (rm *routeMetrics) update(installed map[routeKey][]Nexthop) {
	rm.paths = rm.paths[:0]
	best := map[netip.Prefix]int{}
	for k := range installed {
		if m, ok := best[k.p]; !ok || k.metric < m {
			best[k.p] = k.metric
		}
	}
	active := map[netip.Prefix]string{}
	for k, hops := range installed {
		vias := []string{"unreachable"}
		if len(hops) > 0 {
			vias = vias[:0]
			for _, h := range hops {
				vias = append(vias, h.Via)
			}
		}
		isActive := k.metric == best[k.p]
		if isActive {
			active[k.p] = strings.Join(vias, ",")
		}
		for _, v := range vias {
			rm.paths = append(rm.paths, routePath{prefix: k.p, metric: k.metric, via: v, active: isActive})
		}
	}
	slices.SortFunc(rm.paths, func(a, b routePath) int {
		return cmp.Or(a.prefix.Addr().Compare(b.prefix.Addr()), cmp.Compare(a.prefix.Bits(), b.prefix.Bits()),
			cmp.Compare(a.metric, b.metric), strings.Compare(a.via, b.via))
	})
	for p, was := range rm.active {
		now, ok := active[p]
		switch {
		case !ok:
			delete(rm.failovers, p)
		case now != was:
			rm.failovers[p]++
		}
	}
	for p := range active {
		if _, ok := rm.failovers[p]; !ok {
			rm.failovers[p] = 0
		}
	}
	rm.active = active
}

// collect sends the metrics to ch.
func (rm *routeMetrics) collect(ch chan<- prometheus.Metric) {
	for _, p := range rm.paths {
		role := "backup"
		if p.active {
			role = "active"
		}
		ch <- prometheus.MustNewConstMetric(routeInstalledDesc, prometheus.GaugeValue, 1, p.prefix.String(), p.via, role)
	}
	for p, n := range rm.failovers {
		ch <- prometheus.MustNewConstMetric(routeFailoversDesc, prometheus.CounterValue, float64(n), p.String())
	}
}
