package wireguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// syncLink makes the interface match c: MTU, the one address, up, and a
// route (protocol tunnel.RouteProtocol) for every allowed prefix outside the
// interface's own prefix. Routes go away with the interface, so Close needs
// no bookkeeping, and none survive a crash.
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

func (d *Device) syncRoutes(link netlink.Link, want []netip.Prefix) error {
	filter := &netlink.Route{LinkIndex: d.index, Protocol: tunnel.RouteProtocol}
	routes, err := d.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list routes: %w", err)
	}
	var have []netip.Prefix
	for _, r := range routes {
		p, ok := tunnel.PrefixOf(r.Dst)
		if ok && slices.Contains(want, p) {
			have = append(have, p)
			continue
		}
		if err := d.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %s: %w", r.Dst, err)
		}
		d.log.Info("removed route", "prefix", r.Dst)
	}
	for _, p := range want {
		if slices.Contains(have, p) {
			continue
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: tunnel.IPNet(p), Protocol: tunnel.RouteProtocol}
		if p.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := d.nl.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add route %s: another route for this prefix exists already: %w", p, err)
			}
			return fmt.Errorf("add route %s: %w", p, err)
		}
		d.log.Info("added route", "prefix", p)
	}
	return nil
}
