package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// GuardMetric is the metric of the unreachable route edgegw keeps under
// each import range of a neighbor on a tunnel: one above the route
// manager's own fallback (tunnel.UnreachableMetric), so that the two
// never share a kernel key.
const GuardMetric = tunnel.UnreachableMetric + 1

// guards keeps an unreachable route, stamped with edgegw's route
// protocol, for each import range of the neighbors on tunnels. A learned
// route takes its prefix's own unreachable fallback with it when it is
// withdrawn; the range's guard stays, so traffic to a branch whose
// session is down is refused instead of following the default route out
// of the WAN in cleartext. (A gateway start removes the guards of a
// crashed run with every other proto-237 route.)
type guards struct {
	nl   *netlink.Handle
	have []netip.Prefix
}

// wantGuards returns the import ranges of c's neighbors on tunnels.
func wantGuards(c *Config) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range c.Neighbors {
		if n.Tunnel == "" {
			continue
		}
		for _, r := range n.Import.Prefixes {
			if p := r.Prefix.Masked(); !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return out
}

func guardRoute(p netip.Prefix) *netlink.Route {
	return &netlink.Route{Dst: tunnel.IPNet(p), Priority: GuardMetric, Protocol: tunnel.RouteProtocol,
		Scope: netlink.SCOPE_UNIVERSE, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNREACHABLE}
}

// set installs the guards of want and removes the others it installed.
func (g *guards) set(want []netip.Prefix) error {
	var errs error
	kept := []netip.Prefix{}
	for _, p := range g.have {
		if slices.Contains(want, p) {
			kept = append(kept, p)
			continue
		}
		if err := g.nl.RouteDel(guardRoute(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = errors.Join(errs, fmt.Errorf("bgp: remove the unreachable guard of %s: %w", p, err))
			kept = append(kept, p)
		}
	}
	for _, p := range want {
		// Replace also puts back a guard someone deleted.
		if err := g.nl.RouteReplace(guardRoute(p)); err != nil {
			errs = errors.Join(errs, fmt.Errorf("bgp: install the unreachable guard of %s: %w", p, err))
			continue
		}
		if !slices.Contains(kept, p) {
			kept = append(kept, p)
		}
	}
	g.have = kept
	return errs
}

// Guards returns the import ranges whose unreachable guards are
// installed now (at [GuardMetric]).
func (m *Manager) Guards() []netip.Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.guards.have)
}
