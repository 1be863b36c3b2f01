package wireguard

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/tunnel"
)

// syncLink makes the interface match c: MTU, the one address, up, and a
// route for every allowed prefix outside the interface's own prefix,
// through the route manager every tunnel kind shares (protocol
// tunnel.RouteProtocol, and under each route the prefix's unreachable
// fallback, so a peer's prefix is refused rather than sent to the WAN
// while the interface is gone). Close removes them; a crash's leftovers
// are removed at the next start with every proto-237 route.
func (d *Device) syncLink(c *Config) error {
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		return fmt.Errorf("find interface: %w", err)
	}
	if link.Attrs().MTU != c.MTU {
		if err := d.nl.LinkSetMTU(link, c.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", c.MTU, err)
		}
	}
	if err := d.syncAddress(link, c.Address); err != nil {
		return err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set link up: %w", err)
		}
	}
	return d.syncRoutes(link, wantRoutes(c))
}

func (d *Device) syncAddress(link netlink.Link, want netip.Prefix) error {
	addrs, err := d.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	// Remove stale addresses first: deleting a primary IPv4 address also
	// deletes the secondaries of its subnet, which a new address added
	// first would be. (Removing an interface's last IPv4 address also
	// flushes its IPv4 routes; syncRoutes, which runs next, restores them.)
	for _, a := range addrs {
		p, ok := tunnel.PrefixOf(a.IPNet)
		switch {
		case !ok || p.Addr().IsLinkLocalUnicast():
		case p == want:
			have = true
		default:
			if err := d.nl.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove address %s: %w", p, err)
			}
			d.log.Info("removed interface address", "address", p)
		}
	}
	if !have {
		if err := d.nl.AddrAdd(link, &netlink.Addr{IPNet: tunnel.IPNet(want)}); err != nil {
			return fmt.Errorf("add address %s: %w", want, err)
		}
	}
	return nil
}

// wantRoutes lists the allowed prefixes the interface's own (connected)
// prefix does not already route.
func wantRoutes(c *Config) []netip.Prefix {
	own := c.Address.Masked()
	var out []netip.Prefix
	for _, p := range c.Peers {
		for _, a := range p.AllowedIPs {
			if a.Bits() >= own.Bits() && own.Contains(a.Addr()) {
				continue
			}
			out = append(out, a)
		}
	}
	return sortedPrefixes(out)
}

// syncRoutes hands the routes to the device's route manager: every prefix
// via this interface, which is up while the device runs.
func (d *Device) syncRoutes(link netlink.Link, want []netip.Prefix) error {
	if d.routes == nil {
		rm, err := tunnel.NewRouteManager(d.nl, tunnel.RouteOptions{
			Logger: d.log,
			// The multipath hash policy is the site-to-site manager's:
			// WireGuard routes have one path each.
			Sysctl: func(string, string) (func() error, error) { return func() error { return nil }, nil },
		})
		if err != nil {
			return err
		}
		d.routes = rm
	}
	name := link.Attrs().Name
	routes := make([]tunnel.Route, 0, len(want))
	for _, p := range want {
		r := tunnel.Route{Prefix: p, Via: name}
		r.SetDefaults()
		routes = append(routes, r)
	}
	return d.routes.Set(routes, map[string]tunnel.State{name: tunnel.Healthy})
}
