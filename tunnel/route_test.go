//go:build linux

package tunnel

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeNetlink is a kernel routing table that records every change as a
// line of text, in the style of Tailscale's TestRouterStates.
type fakeNetlink struct {
	links  map[string]int
	routes []netlink.Route
	ops    []string
}

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	idx, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("link %s not found", name)
	}
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: idx}}, nil
}

func (f *fakeNetlink) RouteListFiltered(_ int, filter *netlink.Route, _ uint64) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range f.routes {
		if r.Protocol == filter.Protocol {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeNetlink) name(idx int) string {
	for n, i := range f.links {
		if i == idx {
			return n
		}
	}
	return "?"
}

func (f *fakeNetlink) text(r *netlink.Route) string {
	p, _ := PrefixOf(r.Dst)
	return describe(*r, p, map[int]string{1: f.name(1), 2: f.name(2), 3: f.name(3)})
}

func (f *fakeNetlink) RouteReplace(r *netlink.Route) error {
	f.ops = append(f.ops, "replace "+f.text(r))
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool {
		return o.Dst.String() == r.Dst.String() && o.Priority == r.Priority
	})
	f.routes = append(f.routes, *r)
	return nil
}

func (f *fakeNetlink) RouteDel(r *netlink.Route) error {
	f.ops = append(f.ops, "del "+f.text(r))
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool {
		return o.Dst.String() == r.Dst.String() && o.Priority == r.Priority
	})
	return nil
}

// unplug deletes every link and, as the kernel does, the routes through
// them; routes with no device (unreachable, foreign ones) stay.
func (f *fakeNetlink) unplug() {
	f.links = map[string]int{}
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool {
		return r.Type != unix.RTN_UNREACHABLE && r.LinkIndex >= 1 && r.LinkIndex <= 3 || len(r.MultiPath) > 0
	})
}

func (f *fakeNetlink) take() string {
	s := strings.Join(f.ops, "\n")
	f.ops = nil
	return s
}

func rt(prefix, via string, prio, weight int) Route {
	return Route{Prefix: netip.MustParsePrefix(prefix), Via: via, Priority: prio, Weight: weight}
}

func TestRouterStates(t *testing.T) {
	nl := &fakeNetlink{links: map[string]int{"gre1": 1, "gre2": 2, "gre3": 3}}
	// A route someone else (the WireGuard device) installed with our
	// protocol stays untouched.
	nl.routes = append(nl.routes, netlink.Route{Dst: IPNet(netip.MustParsePrefix("100.96.5.0/24")), LinkIndex: 9, Protocol: RouteProtocol})
	var hash []string
	m, err := NewRouteManager(nl, RouteOptions{Sysctl: func(k, v string) (func() error, error) {
		hash = append(hash, k+"="+v)
		return func() error { hash = append(hash, k+"=0"); return nil }, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	failover := []Route{rt("10.20.0.0/16", "gre1", 100, 1), rt("10.20.0.0/16", "gre2", 200, 1)}
	ecmp := []Route{rt("10.30.0.0/16", "gre1", 100, 1), rt("10.30.0.0/16", "gre2", 100, 3)}
	missing := append(slices.Clone(ecmp), rt("10.40.0.0/16", "gone", 100, 1))
	withV6 := append(slices.Clone(missing), rt("fd00:20::/48", "gre3", 100, 1))
	steps := []struct {
		name   string
		routes []Route
		states map[string]State
		want   string
	}{
		{"install", failover, nil, `
replace 10.20.0.0/16 metric 100 dev gre1
replace 10.20.0.0/16 metric 200 dev gre2
replace unreachable 10.20.0.0/16 metric 2000000000`},
		{"same again: nothing", failover, map[string]State{"gre1": Healthy}, ``},
		{"primary down: penalised behind backup", failover, map[string]State{"gre1": Down}, `
replace 10.20.0.0/16 metric 1000100 dev gre1
del 10.20.0.0/16 metric 100 dev gre1`},
		{"recovering: degraded, still behind", failover, map[string]State{"gre1": Degraded}, `
replace 10.20.0.0/16 metric 500100 dev gre1
del 10.20.0.0/16 metric 1000100 dev gre1`},
		{"both down: order kept", failover, map[string]State{"gre1": Down, "gre2": Down}, `
replace 10.20.0.0/16 metric 1000100 dev gre1
replace 10.20.0.0/16 metric 1000200 dev gre2
del 10.20.0.0/16 metric 200 dev gre2
del 10.20.0.0/16 metric 500100 dev gre1`},
		{"healthy again", failover, nil, `
replace 10.20.0.0/16 metric 100 dev gre1
replace 10.20.0.0/16 metric 200 dev gre2
del 10.20.0.0/16 metric 1000100 dev gre1
del 10.20.0.0/16 metric 1000200 dev gre2`},
		{"ecmp added, failover removed", ecmp, nil, `
replace 10.30.0.0/16 metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 3
replace unreachable 10.30.0.0/16 metric 2000000000
del 10.20.0.0/16 metric 100 dev gre1
del 10.20.0.0/16 metric 200 dev gre2
del unreachable 10.20.0.0/16 metric 2000000000`},
		{"ecmp member degraded leaves the group", ecmp, map[string]State{"gre2": Degraded}, `
replace 10.30.0.0/16 metric 100 dev gre1
replace 10.30.0.0/16 metric 500100 dev gre2`},
		{"missing interface left out, its prefix refused", missing, nil, `
replace 10.30.0.0/16 metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 3
replace unreachable 10.40.0.0/16 metric 2000000000
del 10.30.0.0/16 metric 500100 dev gre2`},
		{"ipv6 prefix alongside", withV6, nil, `
replace fd00:20::/48 metric 100 dev gre3
replace unreachable fd00:20::/48 metric 2000000000`},
		{"ipv6 again: nothing", withV6, nil, ``},
		// The kernel deletes a vanished interface's routes with it; the
		// unreachable routes stay and nothing else is touched.
		{"every tunnel interface gone", withV6, nil, ``},
		{"interfaces back", withV6, nil, `
replace 10.30.0.0/16 metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 3
replace fd00:20::/48 metric 100 dev gre3`},
		{"ipv6 prefix removed", missing, nil, `
del fd00:20::/48 metric 100 dev gre3
del unreachable fd00:20::/48 metric 2000000000`},
	}
	for _, s := range steps {
		switch s.name {
		case "every tunnel interface gone":
			nl.unplug()
		case "interfaces back":
			nl.links = map[string]int{"gre1": 1, "gre2": 2, "gre3": 3}
		}
		if err := m.Set(s.routes, s.states); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := nl.take(); got != strings.TrimPrefix(s.want, "\n") {
			t.Errorf("%s:\ngot:\n%s\nwant:%s", s.name, got, s.want)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := nl.take(), `del 10.30.0.0/16 metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 3
del unreachable 10.30.0.0/16 metric 2000000000
del unreachable 10.40.0.0/16 metric 2000000000`; got != want {
		t.Errorf("close: got %s, want %s", got, want)
	}
	if len(nl.routes) != 1 || nl.routes[0].LinkIndex != 9 {
		t.Errorf("foreign route touched: %v", nl.routes)
	}
	if want := []string{hashPolicy + "=1", hashPolicy + "=0"}; !slices.Equal(hash, want) {
		t.Errorf("sysctl %v, want %v", hash, want)
	}
}

func TestPlanWeightsAndOrder(t *testing.T) {
	got := Plan([]Route{
		rt("10.2.0.0/16", "b", 100, 2), rt("10.1.0.0/16", "a", 300, 1), rt("10.2.0.0/16", "a", 100, 1), rt("10.1.0.0/16", "a", 100, 1),
	}, map[string]State{})
	var lines []string
	for _, r := range got {
		lines = append(lines, r.String())
	}
	want := "10.1.0.0/16 metric 100 dev a|10.1.0.0/16 metric 300 dev a|unreachable 10.1.0.0/16 metric 2000000000|" +
		"10.2.0.0/16 metric 100 nexthop dev a weight 1 nexthop dev b weight 2|unreachable 10.2.0.0/16 metric 2000000000"
	if s := strings.Join(lines, "|"); s != want {
		t.Errorf("got %s\nwant %s", s, want)
	}
}

func TestCheckRoutes(t *testing.T) {
	var got []string
	CheckRoutes(func(f, m string) { got = append(got, f+": "+m) }, []Route{rt("10.1.0.0/16", "nyc", 100, 1), rt("10.2.0.0/16", "fra", 100, 1)}, []string{"nyc"})
	if len(got) != 1 || !strings.HasPrefix(got[0], `[1].via: route 10.2.0.0/16: no tunnel is named "fra"`) {
		t.Errorf("%q", got)
	}
}

// TestUnreachableMetricAboveEveryRoute checks that no configured route can
// reach the unreachable route's metric: the highest priority Validate
// accepts, fully penalised, stays below it, and an unvalidated one is kept
// under it rather than merged with it.
func TestUnreachableMetricAboveEveryRoute(t *testing.T) {
	for _, c := range []struct {
		prio int
		ok   bool
	}{{MaxPriority, true}, {MaxPriority + 1, false}} {
		r := rt("10.1.0.0/16", "a", c.prio, 1)
		var errs []string
		r.Validate(func(f, m string) { errs = append(errs, f+": "+m) })
		if (len(errs) == 0) != c.ok {
			t.Errorf("priority %d: errors %q, want ok=%v", c.prio, errs, c.ok)
		}
	}
	if worst := MaxPriority + max(DegradedPenalty, DownPenalty); worst >= UnreachableMetric {
		t.Fatalf("worst tunnel metric %d reaches UnreachableMetric %d", worst, UnreachableMetric)
	}
	got := Plan([]Route{rt("10.1.0.0/16", "a", MaxPriority, 1), rt("10.1.0.0/16", "b", UnreachableMetric+5, 1)},
		map[string]State{"a": Down})
	var lines []string
	for _, r := range got {
		lines = append(lines, r.String())
	}
	want := "10.1.0.0/16 metric 1065535 dev a|10.1.0.0/16 metric 1999999999 dev b|unreachable 10.1.0.0/16 metric 2000000000"
	if s := strings.Join(lines, "|"); s != want {
		t.Errorf("got %s\nwant %s", s, want)
	}
}

// TestRouteMetrics follows a prefix with a primary and a backup tunnel
// through a failover, a failback and the loss of every tunnel interface,
// and checks edgegw_routes_installed and edgegw_route_failovers_total
// after each step, and that they pass promlint.
func TestRouteMetrics(t *testing.T) {
	nl := &fakeNetlink{links: map[string]int{"gre1": 1, "gre2": 2, "gre3": 3}}
	m, err := NewRouteManager(nl, RouteOptions{Sysctl: func(k, v string) (func() error, error) {
		return func() error { return nil }, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	routes := []Route{rt("10.20.0.0/16", "gre1", 100, 1), rt("10.20.0.0/16", "gre2", 200, 1),
		rt("10.30.0.0/16", "gre1", 100, 1), rt("10.30.0.0/16", "gre3", 100, 1)}
	const head = `
# HELP edgegw_route_failovers_total Times the active path of a routed prefix changed to other tunnels (or to the unreachable fallback) while the prefix stayed routed.
# TYPE edgegw_route_failovers_total counter
# HELP edgegw_routes_installed 1 for each path of a routed prefix in the kernel after the last route update: via is the tunnel ("unreachable" for the fallback that refuses the prefix's traffic), role is active for the lowest metric, which carries the traffic, and backup for the others.
# TYPE edgegw_routes_installed gauge
`
	steps := []struct {
		name      string
		states    map[string]State
		installed string
		failovers string
	}{
		{"install", nil, `
edgegw_routes_installed{prefix="10.20.0.0/16",role="active",via="gre1"} 1
edgegw_routes_installed{prefix="10.20.0.0/16",role="backup",via="gre2"} 1
edgegw_routes_installed{prefix="10.20.0.0/16",role="backup",via="unreachable"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="active",via="gre1"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="active",via="gre3"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="backup",via="unreachable"} 1`, `
edgegw_route_failovers_total{prefix="10.20.0.0/16"} 0
edgegw_route_failovers_total{prefix="10.30.0.0/16"} 0`},
		{"gre1 down: both prefixes fail over", map[string]State{"gre1": Down}, `
edgegw_routes_installed{prefix="10.20.0.0/16",role="active",via="gre2"} 1
edgegw_routes_installed{prefix="10.20.0.0/16",role="backup",via="gre1"} 1
edgegw_routes_installed{prefix="10.20.0.0/16",role="backup",via="unreachable"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="active",via="gre3"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="backup",via="gre1"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="backup",via="unreachable"} 1`, `
edgegw_route_failovers_total{prefix="10.20.0.0/16"} 1
edgegw_route_failovers_total{prefix="10.30.0.0/16"} 1`},
		{"same again: no failover", map[string]State{"gre1": Down}, "", `
edgegw_route_failovers_total{prefix="10.20.0.0/16"} 1
edgegw_route_failovers_total{prefix="10.30.0.0/16"} 1`},
		{"gre1 healthy: back", nil, "", `
edgegw_route_failovers_total{prefix="10.20.0.0/16"} 2
edgegw_route_failovers_total{prefix="10.30.0.0/16"} 2`},
		{"every tunnel interface gone: the fallback is active", nil, `
edgegw_routes_installed{prefix="10.20.0.0/16",role="active",via="unreachable"} 1
edgegw_routes_installed{prefix="10.30.0.0/16",role="active",via="unreachable"} 1`, `
edgegw_route_failovers_total{prefix="10.20.0.0/16"} 3
edgegw_route_failovers_total{prefix="10.30.0.0/16"} 3`},
	}
	for _, s := range steps {
		if s.name == "every tunnel interface gone: the fallback is active" {
			nl.unplug()
		}
		if err := m.Set(routes, s.states); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		names := []string{"edgegw_route_failovers_total"}
		want := s.failovers
		if s.installed != "" {
			names = append(names, "edgegw_routes_installed")
			want += s.installed
		}
		if err := testutil.CollectAndCompare(m, strings.NewReader(head+want+"\n"), names...); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
		problems, err := testutil.CollectAndLint(m)
		if err != nil || len(problems) > 0 {
			t.Errorf("%s: promlint: %v %v", s.name, err, problems)
		}
	}
	if err := m.Set(routes[2:], nil); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m, "edgegw_route_failovers_total"); n != 1 {
		t.Errorf("a prefix no longer routed keeps its failover count: %d series, want 1", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series after Close, want 0", n)
	}
}
