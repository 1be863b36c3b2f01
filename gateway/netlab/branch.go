//go:build linux

package netlab

import (
	"errors"
	"fmt"
)

// Branch is the site-to-site topology built by [Lab.Branch]: an office
// LAN behind a gateway, the WAN, and a branch router with its own LAN,
// as the tunnel tests (GRE, IPsec, the site manager) use it:
//
//	lan 10.10.0.2 ─ 10.10.0.1 gw 203.0.113.10 ─ 203.0.113.1 wan 198.51.100.1 ─ 198.51.100.20 br 10.20.0.1 ─ 10.20.0.2 blan
//
//	lan:  eth0 10.10.0.2/24, default via 10.10.0.1       (office host)
//	gw:   eth1 10.10.0.1/24, eth0 203.0.113.10/24,       (the gateway: eth0 its WAN)
//	      default via 203.0.113.1
//	wan:  togw 203.0.113.1/24, tobr 198.51.100.1/24      (the internet)
//	br:   eth0 198.51.100.20/24, eth1 10.20.0.1/24,      (the branch router)
//	      default via 198.51.100.1
//	blan: eth0 10.20.0.2/24, default via 10.20.0.1       (branch host)
//
// gw, wan and br forward, with rp_filter off: tunnel traffic arrives on
// interfaces other than the route back. wan routes no private prefix, so
// the LANs reach each other only through a tunnel.
type Branch struct {
	LAN, GW, WAN, BR, BLAN *NS
}

// Branch builds the [Branch] topology with namespaces named "lan", "gw",
// "wan", "br" and "blan". On error the namespaces it created are deleted
// again.
func (l *Lab) Branch() (*Branch, error) {
	var created []*NS
	fail := func(err error) (*Branch, error) {
		errs := []error{fmt.Errorf("netlab: branch topology: %w", err)}
		for _, n := range created {
			errs = append(errs, l.removeNS(n))
		}
		return nil, errors.Join(errs...)
	}
	for _, name := range []string{"lan", "gw", "wan", "br", "blan"} {
		n, err := l.NS(name)
		if err != nil {
			return fail(err)
		}
		created = append(created, n)
	}
	b := &Branch{LAN: created[0], GW: created[1], WAN: created[2], BR: created[3], BLAN: created[4]}
	steps := []func() error{
		func() error { return l.Link(b.LAN, "eth0", "10.10.0.2/24", b.GW, "eth1", "10.10.0.1/24") },
		func() error { return l.Link(b.GW, "eth0", "203.0.113.10/24", b.WAN, "togw", "203.0.113.1/24") },
		func() error { return l.Link(b.BR, "eth0", "198.51.100.20/24", b.WAN, "tobr", "198.51.100.1/24") },
		func() error { return l.Link(b.BR, "eth1", "10.20.0.1/24", b.BLAN, "eth0", "10.20.0.2/24") },
		func() error { return b.LAN.Route("default", "10.10.0.1") },
		func() error { return b.BLAN.Route("default", "10.20.0.1") },
		func() error { return b.GW.Route("default", "203.0.113.1") },
		func() error { return b.BR.Route("default", "198.51.100.1") },
	}
	for _, ns := range []*NS{b.GW, b.WAN, b.BR} {
		for _, kv := range [][2]string{
			{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
		} {
			steps = append(steps, func() error { return ns.Sysctl(kv[0], kv[1]) })
		}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fail(err)
		}
	}
	return b, nil
}
