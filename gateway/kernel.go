package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// removeLeftovers deletes kernel state a previous edgegw left behind when it
// did not exit cleanly: every route stamped with edgegw's route protocol.
// Its nftables table stays: the leftover ruleset keeps filtering until
// the firewall part replaces it in one netlink batch (firewall.Table.Apply
// deletes and adds the table in one transaction), so no packet ever meets
// an empty table. TUN devices need no sweep: the kernel deletes a
// non-persistent TUN device (and its routes) when its last file descriptor
// closes, which a crash does.
func removeLeftovers(log *slog.Logger) error {
	n, err := removeRoutes()
	if n > 0 {
		log.Info("removed routes left by an earlier run", "count", n)
	}
	return err
}

// removeRoutes deletes every route with edgegw's protocol, in every table.
func removeRoutes() (int, error) {
	filter := &netlink.Route{Protocol: tunnel.RouteProtocol, Table: unix.RT_TABLE_UNSPEC}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	n := 0
	var errs []error
	for _, r := range routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// forwardingKeys are the sysctls that make the host a router; edgegw owns
// them: they are on only while a running edgegw has its ruleset in the
// kernel.
var forwardingKeys = []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"}

// setForwarding writes on (1) or off (0) to every forwarding sysctl and
// reports whether any was on before. A host without IPv6 has no IPv6 key.
func setForwarding(on bool) (wasOn bool, err error) {
	v := "0\n"
	if on {
		v = "1\n"
	}
	var errs []error
	for _, k := range forwardingKeys {
		p := "/proc/sys/" + k
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.Contains(k, "ipv6") {
				continue // IPv6 disabled on this host
			}
			errs = append(errs, fmt.Errorf("read %s: %w", p, err))
			continue
		}
		if strings.TrimSpace(string(b)) != "0" {
			wasOn = true
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("set %s to %s: %w", p, strings.TrimSpace(v), err))
		}
	}
	return wasOn, errors.Join(errs...)
}

// rpFilter sets reverse-path filtering for edgegw's interfaces and
// remembers the values it found, to put them back at exit:
//
//   - conf/default 2 (loose) before any part starts, for the interfaces
//     edgegw makes later (GRE, xfrm and charon's ipsecN devices), where
//     multipath and backup tunnels make replies arrive through another
//     tunnel than the route names;
//   - conf/all 1, so that the per-interface values decide: the kernel
//     uses the larger of conf/all and the interface's own, and the
//     appliance boots with 2 everywhere, which would make every interface
//     loose;
//   - strict (1) on the WireGuard interface, the LAN and the WAN once they
//     exist (strict), where the route back to a source is the interface
//     it came from.
//
// Anti-spoofing does not depend on it: the firewall drops forged tunnel
// sources in prerouting, before the routing decision that applies
// rp_filter.
type rpFilter struct {
	old map[string]string // sysctl path → the value found
}

// defaults sets conf/default and conf/all.
func (r *rpFilter) defaults() error {
	return errors.Join(r.set("default", "2"), r.set("all", "1"))
}

// strict makes the interfaces strict; those that do not exist are skipped.
func (r *rpFilter) strict(ifcs []string) error {
	var errs []error
	for _, ifc := range ifcs {
		if ifc != "" && ifc != "." && ifc != ".." && !strings.Contains(ifc, "/") {
			errs = append(errs, r.set(ifc, "1"))
		}
	}
	return errors.Join(errs...)
}

func (r *rpFilter) set(ifc, v string) error {
	p := "/proc/sys/net/ipv4/conf/" + ifc + "/rp_filter"
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && ifc != "all" && ifc != "default" {
			return nil
		}
		return fmt.Errorf("read %s: %w", p, err)
	}
	if r.old == nil {
		r.old = map[string]string{}
	}
	if _, ok := r.old[p]; !ok {
		r.old[p] = strings.TrimSpace(string(b))
	}
	if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("set %s to %s: %w", p, v, err)
	}
	return nil
}

// restore puts back the values found (of the interfaces that still exist).
func (r *rpFilter) restore() {
	for p, v := range r.old {
		_ = os.WriteFile(p, []byte(v+"\n"), 0o644)
	}
}

// defaultRouteInterface names the interface of the IPv4 default route: the
// WAN when the configuration names none.
func defaultRouteInterface() (string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.LinkIndex > 0 {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("default route interface: %w", err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", nil
}

func isZeroMask(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}
