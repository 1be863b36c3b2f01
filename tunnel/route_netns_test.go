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
	var m *RouteManager
	changes := 0
	var nl *netlink.Handle
	err = ns.Do(func() error {
		var err error
		if nl, err = netlink.NewHandle(); err != nil {
			return err
		}
		m, err = NewRouteManager(&countingNetlink{Netlink: nl, n: &changes}, RouteOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
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
			"10.30.0.0/16 scope link metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 2"},
		{map[string]State{"gre1": Down}, "10.20.0.0/16 dev gre2 scope link metric 200 " +
			"10.20.0.0/16 dev gre1 scope link metric 1000100 " +
			"10.30.0.0/16 dev gre2 scope link metric 100 " +
			"10.30.0.0/16 dev gre1 scope link metric 1000100"},
		{nil, "10.20.0.0/16 dev gre1 scope link metric 100 " +
			"10.20.0.0/16 dev gre2 scope link metric 200 " +
			"10.30.0.0/16 scope link metric 100 nexthop dev gre1 weight 1 nexthop dev gre2 weight 2"},
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

type countingNetlink struct {
	Netlink
	n *int
}

func (c *countingNetlink) RouteReplace(r *netlink.Route) error {
	*c.n++
	return c.Netlink.RouteReplace(r)
}
func (c *countingNetlink) RouteDel(r *netlink.Route) error { *c.n++; return c.Netlink.RouteDel(r) }
