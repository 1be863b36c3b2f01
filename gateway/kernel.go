package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/tunnel"
)

// removeLeftovers deletes kernel state a previous edgegw left behind when it
// did not exit cleanly: its nftables table and every route stamped with
// edgegw's route protocol. TUN devices need no sweep: the kernel deletes a
// non-persistent TUN device (and its routes) when its last file descriptor
// closes, which a crash does.
func removeLeftovers(log *slog.Logger) error {
	var errs []error
	if err := firewall.RemoveTable(); err != nil {
		errs = append(errs, err)
	}
	n, err := removeRoutes()
	if err != nil {
		errs = append(errs, err)
	}
	if n > 0 {
		log.Info("removed routes left by an earlier run", "count", n)
	}
	return errors.Join(errs...)
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

// forwarding turns on IPv4 and IPv6 forwarding and returns a function that
// restores the values found, so that a clean exit leaves the host as it was.
func forwarding() (restore func(), err error) {
	keys := []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"}
	old := map[string]string{}
	for _, k := range keys {
		p := "/proc/sys/" + k
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.Contains(k, "ipv6") {
				continue // IPv6 disabled on this host
			}
			return func() {}, fmt.Errorf("read %s: %w", p, err)
		}
		old[p] = strings.TrimSpace(string(b))
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			return func() {}, fmt.Errorf("enable forwarding (%s): %w", p, err)
		}
	}
	return func() {
		for p, v := range old {
			os.WriteFile(p, []byte(v+"\n"), 0o644)
		}
	}, nil
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
