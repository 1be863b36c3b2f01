//go:build linux

package tunnel

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestRouteManagerKernel runs the manager against a real routing table in
// a fresh namespace with two veth interfaces standing in for tunnels.
func TestRouteManagerKernel(t *testing.T) {
	lab := netlab.NewT(t)
	ns, err := lab.NS("r")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"link", "add", "gre1", "type", "veth", "peer", "name", "p1"}, {"link", "add", "gre2", "type", "veth", "peer", "name", "p2"},
		{"link", "set", "p1", "up"}, {"link", "set", "p2", "up"},
		{"addr", "add", "10.200.1.0/31", "dev", "gre1"}, {"addr", "add", "10.200.2.0/31", "dev", "gre2"},
		{"link", "set", "gre1", "up"}, {"link", "set", "gre2", "up"},
	} {
		if out, err := ns.IP(c...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	changes := 0
	m := newKernelManager(t, ns, &changes)
	if out, err := ns.Exec(t.Context(), "cat", "/proc/sys/net/ipv4/fib_multipath_hash_policy"); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("fib_multipath_hash_policy: %s %v", out, err)
	}
	show := func() string {
		out, err := ns.IP("route", "show", "proto", "237")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(out)), " ")
	}
	routes := []Route{
		rt("10.20.0.0/16", "gre1", 100, 1), rt("10.20.0.0/16", "gre2", 200, 1),
		rt("10.30.0.0/16", "gre1", 100, 1), rt("10.30.0.0/16", "gre2", 100, 2),
	}
	for _, step := range []struct {
		states map[string]State
		want   string
	}{
		{nil, "10.20.0.0/16 dev gre1 scope link metric 100 " +
			"10.20.0.0/16 dev gre2 scope link metric 200 " +
			"unreachable 10.20.0.0/16 metric 2000000000 " +
			"10.30.0.0/16 scope link metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 2 " +
			"unreachable 10.30.0.0/16 metric 2000000000"},
		{map[string]State{"gre1": Down}, "10.20.0.0/16 dev gre2 scope link metric 200 " +
			"10.20.0.0/16 dev gre1 scope link metric 1000100 " +
			"unreachable 10.20.0.0/16 metric 2000000000 " +
			"10.30.0.0/16 dev gre2 scope link metric 100 " +
			"10.30.0.0/16 dev gre1 scope link metric 1000100 " +
			"unreachable 10.30.0.0/16 metric 2000000000"},
		{nil, "10.20.0.0/16 dev gre1 scope link metric 100 " +
			"10.20.0.0/16 dev gre2 scope link metric 200 " +
			"unreachable 10.20.0.0/16 metric 2000000000 " +
			"10.30.0.0/16 scope link metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 2 " +
			"unreachable 10.30.0.0/16 metric 2000000000"},
	} {
		if err := m.Set(routes, step.states); err != nil {
			t.Fatal(err)
		}
		if got := show(); !strings.Contains(got, "") || strings.ReplaceAll(got, " proto 237", "") != step.want {
			t.Errorf("states %v:\ngot  %s\nwant %s", step.states, got, step.want)
		}
		// Idempotent against the real kernel's rendering of the routes.
		changes = 0
		if err := m.Set(routes, step.states); err != nil || changes != 0 {
			t.Errorf("states %v again: %d changes, %v", step.states, changes, err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := show(); got != "" {
		t.Errorf("after Close: %s", got)
	}
	// Close ran on a thread outside the namespace; the restore must
	// still reach the namespace's sysctl.
	if out, err := ns.Exec(t.Context(), "cat", "/proc/sys/net/ipv4/fib_multipath_hash_policy"); err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Errorf("fib_multipath_hash_policy after Close: %s %v", out, err)
	}
}

// newKernelManager returns a route manager working in ns whose route
// changes are counted in changes.
func newKernelManager(t *testing.T, ns *netlab.NS, changes *int) *RouteManager {
	t.Helper()
	var m *RouteManager
	var nl *netlink.Handle
	err := ns.Do(func() error {
		var err error
		if nl, err = netlink.NewHandle(); err != nil {
			return err
		}
		m, err = NewRouteManager(&countingNetlink{Netlink: nl, n: changes}, RouteOptions{})
		if err != nil {
			nl.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	return m
}

// TestUnreachableWhenTunnelGone shows the leak the unreachable routes
// close: with every tunnel interface of a prefix deleted (the kernel takes
// their routes with them), the prefix's traffic would follow the default
// route out of the WAN. It must be refused instead, for IPv4 and IPv6,
// until the interface is back and Set routes through it again.
func TestUnreachableWhenTunnelGone(t *testing.T) {
	lab := netlab.NewT(t)
	ns, err := lab.NS("u")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"link", "add", "wan", "type", "veth", "peer", "name", "wanp"},
		{"link", "add", "gre1", "type", "veth", "peer", "name", "p1"},
		{"link", "set", "wan", "up"}, {"link", "set", "wanp", "up"}, {"link", "set", "p1", "up"}, {"link", "set", "gre1", "up"},
		{"addr", "add", "192.0.2.1/24", "dev", "wan"}, {"addr", "add", "2001:db8::1/64", "dev", "wan", "nodad"},
		{"route", "add", "default", "via", "192.0.2.2", "dev", "wan"},
		{"-6", "route", "add", "default", "via", "2001:db8::2", "dev", "wan"},
		{"addr", "add", "10.200.1.0/31", "dev", "gre1"}, {"addr", "add", "fd00:200::/127", "dev", "gre1", "nodad"},
	} {
		if out, err := ns.IP(c...); err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	// get returns the route the kernel picks for addr, or its refusal.
	get := func(addr string) string {
		out, err := ns.IP("route", "get", addr)
		s := strings.Join(strings.Fields(string(out)), " ")
		if err != nil {
			s = "error: " + s
		}
		return s
	}
	for addr, wan := range map[string]string{"10.20.1.1": "via 192.0.2.2 dev wan", "fd00:20::1": "via 2001:db8::2 dev wan"} {
		if got := get(addr); !strings.Contains(got, wan) {
			t.Fatalf("before any route, %s: %q, want the default route (%s)", addr, got, wan)
		}
	}
	changes := 0
	m := newKernelManager(t, ns, &changes)
	routes := []Route{rt("10.20.0.0/16", "gre1", 100, 1), rt("fd00:20::/48", "gre1", 100, 1)}
	if err := m.Set(routes, nil); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.20.1.1", "fd00:20::1"} {
		if got := get(addr); !strings.Contains(got, "dev gre1") {
			t.Errorf("tunnel up, %s: %q, want dev gre1", addr, got)
		}
	}
	// Both families read back as installed: no churn.
	if err := m.Set(routes, nil); err != nil || changes != 2*2 {
		t.Errorf("Set again: %d changes in all, want the 4 of the first Set; %v", changes, err)
	}

	if out, err := ns.IP("link", "del", "gre1"); err != nil {
		t.Fatalf("delete gre1: %v: %s", err, out)
	}
	// The kernel answers a lookup that ends on an RTN_UNREACHABLE route
	// with EHOSTUNREACH ("No route to host"; no route at all would be
	// ENETUNREACH), and the route it ended on is ours.
	refused := func(when string) {
		t.Helper()
		for _, c := range []struct{ fam, addr, route string }{
			{"-4", "10.20.1.1", "unreachable 10.20.0.0/16 metric 2000000000"},
			{"-6", "fd00:20::1", "unreachable fd00:20::/48 dev lo metric 2000000000 pref medium"},
		} {
			if got := get(c.addr); got != "error: RTNETLINK answers: No route to host" {
				t.Errorf("%s, ip route get %s: %q, want No route to host, not the WAN", when, c.addr, got)
			}
			out, err := ns.IP(c.fam, "route", "show", "proto", "237")
			if got := strings.Join(strings.Fields(string(out)), " "); err != nil || got != c.route {
				t.Errorf("%s, ip %s route show proto 237: %q %v, want %q", when, c.fam, got, err, c.route)
			}
		}
	}
	refused("tunnel interface deleted")
	// The manager's next Set (a health change, a reload) finds the
	// interface missing and keeps the refusal without touching it.
	changes = 0
	if err := m.Set(routes, nil); err != nil || changes != 0 {
		t.Errorf("Set with gre1 gone: %d changes, %v", changes, err)
	}
	refused("Set with the interface still gone")

	for _, c := range [][]string{
		{"link", "add", "gre1", "type", "veth", "peer", "name", "p1b"},
		{"link", "set", "p1b", "up"}, {"link", "set", "gre1", "up"},
		{"addr", "add", "10.200.1.0/31", "dev", "gre1"}, {"addr", "add", "fd00:200::/127", "dev", "gre1", "nodad"},
	} {
		if out, err := ns.IP(c...); err != nil {
			t.Fatalf("ip %v: %v: %s", c, err, out)
		}
	}
	if err := m.Set(routes, nil); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.20.1.1", "fd00:20::1"} {
		if got := get(addr); !strings.Contains(got, "dev gre1") {
			t.Errorf("tunnel back, %s: %q, want dev gre1", addr, got)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out, err := ns.IP(fam, "route", "show", "proto", "237"); err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("ip %s route after Close: %q %v", fam, out, err)
		}
	}
}

type countingNetlink struct {
	Netlink
	n *int
}

func (c *countingNetlink) RouteReplace(r *netlink.Route) error {
	*c.n++
	return c.Netlink.RouteReplace(r)
}
func (c *countingNetlink) RouteDel(r *netlink.Route) error { *c.n++; return c.Netlink.RouteDel(r) }
