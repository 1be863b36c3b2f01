package tunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestTable: every configured and learned route is a row with its
// source, its metric is what the route manager plans (health and
// steering penalties included), the lowest metric of each prefix is
// active (ECMP when tied), and every prefix has its fallback.
func TestTable(t *testing.T) {
	r := func(p, via string, prio, w int) Route {
		return Route{Prefix: netip.MustParsePrefix(p), Via: via, Priority: prio, Weight: w}
	}
	configured := []Route{
		r("10.20.0.0/16", "gre1", 100, 1), r("10.20.0.0/16", "gre2", 200, 1),
		r("10.30.0.0/16", "gre1", 100, 1), r("10.30.0.0/16", "gre2", 100, 3),
		r("10.40.0.0/16", "gre1", 100, 1), r("10.40.0.0/16", "gre2", 100, 1),
	}
	learned := map[string][]Route{
		"bgp:fra":  {r("10.20.7.0/24", "gre1", 100, 0), r("10.50.0.0/24", "gre1", 100, 0)},
		"bgp:fra2": {r("10.50.0.0/24", "gre2", 150, 0)},
	}
	states := map[string]State{"gre1": Down}
	steer := Steering{netip.MustParsePrefix("10.40.0.0/16"): {Via: "gre2"}}
	rows := Table(configured, learned, states, steer)

	var got []string
	for _, x := range rows {
		a := " "
		if x.Active {
			a = "*"
		}
		got = append(got, fmt.Sprintf("%s %s %s %s prio=%d w=%d %s %s metric=%d", a, x.Prefix, x.Via, x.Source, x.Priority, x.Weight, x.State, x.Steering, x.Metric))
	}
	want := []string{
		"* 10.20.0.0/16 gre2 static prio=200 w=1 healthy  metric=200",
		"  10.20.0.0/16 gre1 static prio=100 w=1 down  metric=1000100",
		"  10.20.0.0/16  fallback prio=0 w=0   metric=2000000000",
		"* 10.20.7.0/24 gre1 bgp:fra prio=100 w=1 down  metric=1000100", // its only tunnel is down: still the way out
		"  10.20.7.0/24  fallback prio=0 w=0   metric=2000000000",
		"* 10.30.0.0/16 gre2 static prio=100 w=3 healthy  metric=100",
		"  10.30.0.0/16 gre1 static prio=100 w=1 down  metric=1000100",
		"  10.30.0.0/16  fallback prio=0 w=0   metric=2000000000",
		"* 10.40.0.0/16 gre2 static prio=100 w=1 healthy chosen metric=100",
		"  10.40.0.0/16 gre1 static prio=100 w=1 down away metric=1250100",
		"  10.40.0.0/16  fallback prio=0 w=0   metric=2000000000",
		"* 10.50.0.0/24 gre2 bgp:fra2 prio=150 w=1 healthy  metric=150",
		"  10.50.0.0/24 gre1 bgp:fra prio=100 w=1 down  metric=1000100",
		"  10.50.0.0/24  fallback prio=0 w=0   metric=2000000000",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The table agrees with the route manager's plan: each prefix's
	// active rows are the nexthops of its lowest-metric kernel route.
	for _, states := range []map[string]State{nil, states, {"gre2": Degraded}} {
		rows := Table(configured, learned, states, steer)
		all := append(slices.Clone(configured), learned["bgp:fra"]...)
		all = append(all, learned["bgp:fra2"]...)
		seen := map[netip.Prefix]bool{}
		for _, kr := range PlanSteered(all, states, steer) {
			if seen[kr.Prefix] {
				continue
			}
			seen[kr.Prefix] = true
			var planned, active []string
			for _, n := range kr.Nexthops {
				planned = append(planned, fmt.Sprintf("%s@%d", n.Via, kr.Metric))
			}
			for _, x := range rows {
				if x.Prefix == kr.Prefix && x.Active {
					active = append(active, fmt.Sprintf("%s@%d", x.Via, x.Metric))
				}
			}
			slices.Sort(active)
			if !slices.Equal(planned, slices.Compact(active)) {
				t.Errorf("states %v, %s: plan %v, table's active rows %v", states, kr.Prefix, planned, active)
			}
		}
	}
}
