//go:build linux

package netlab

import (
	"errors"
	"net/netip"
)

// RemoteAccess is the remote-access topology built by [Lab.RemoteAccess]:
//
//	user ──eth0  192.0.2.0/24  eth0── wan ──eth1  198.51.100.0/24  eth0── gw ──eth1  10.0.0.0/24  eth0── lan
//
//	user: eth0 192.0.2.2/24, default via 192.0.2.1            (remote laptop on the internet)
//	wan:  eth0 192.0.2.1/24, eth1 198.51.100.1/24, forwarding  (the internet)
//	gw:   eth0 198.51.100.2/24, default via 198.51.100.1,      (edgegw: eth0 is its WAN,
//	      eth1 10.0.0.1/24, forwarding                          eth1 its LAN)
//	lan:  eth0 10.0.0.5/24, default via 10.0.0.1               (office server)
//
// Routes are only the connected ones and the default routes above. Like the
// real internet, wan has no route to the private 10.0.0.0/24, so user and
// lan cannot reach each other until edgegw provides a tunnel (or NAT); the
// office server's only way towards the user is its default route via gw.
type RemoteAccess struct {
	User, WAN, GW, LAN *NS

	UserAddr    netip.Addr // user eth0: 192.0.2.2
	WANUserAddr netip.Addr // wan eth0, the user's default gateway: 192.0.2.1
	WANGWAddr   netip.Addr // wan eth1, gw's default gateway: 198.51.100.1
	GWWANAddr   netip.Addr // gw eth0, edgegw's public address: 198.51.100.2
	GWLANAddr   netip.Addr // gw eth1, the office's default gateway: 10.0.0.1
	ServerAddr  netip.Addr // lan eth0, the office server: 10.0.0.5

	UserNet    netip.Prefix // 192.0.2.0/24
	TransitNet netip.Prefix // 198.51.100.0/24, between wan and gw
	LANNet     netip.Prefix // 10.0.0.0/24
}

// Interface names in [RemoteAccess] namespaces.
const (
	RAUserIf    = "eth0" // user, towards wan
	RAWANUserIf = "eth0" // wan, towards user
	RAWANGWIf   = "eth1" // wan, towards gw
	RAGWWANIf   = "eth0" // gw, edgegw's WAN interface
	RAGWLANIf   = "eth1" // gw, edgegw's LAN interface
	RALANIf     = "eth0" // lan, towards gw
)

// RemoteAccess builds the [RemoteAccess] topology with namespaces named
// "user", "wan", "gw" and "lan". On error the namespaces it created are
// deleted again.
func (l *Lab) RemoteAccess() (*RemoteAccess, error) {
	ra := &RemoteAccess{
		UserAddr:    netip.MustParseAddr("192.0.2.2"),
		WANUserAddr: netip.MustParseAddr("192.0.2.1"),
		WANGWAddr:   netip.MustParseAddr("198.51.100.1"),
		GWWANAddr:   netip.MustParseAddr("198.51.100.2"),
		GWLANAddr:   netip.MustParseAddr("10.0.0.1"),
		ServerAddr:  netip.MustParseAddr("10.0.0.5"),
		UserNet:     netip.MustParsePrefix("192.0.2.0/24"),
		TransitNet:  netip.MustParsePrefix("198.51.100.0/24"),
		LANNet:      netip.MustParsePrefix("10.0.0.0/24"),
	}
	cidr := func(a netip.Addr, p netip.Prefix) string {
		return netip.PrefixFrom(a, p.Bits()).String()
	}
	var created []*NS
	fail := func(err error) (*RemoteAccess, error) {
		errs := []error{err}
		for _, n := range created {
			errs = append(errs, l.removeNS(n))
		}
		return nil, errors.Join(errs...)
	}
	for _, name := range []string{"user", "wan", "gw", "lan"} {
		n, err := l.NS(name)
		if err != nil {
			return fail(err)
		}
		created = append(created, n)
	}
	ra.User, ra.WAN, ra.GW, ra.LAN = created[0], created[1], created[2], created[3]
	steps := []func() error{
		func() error {
			return l.Link(ra.User, RAUserIf, cidr(ra.UserAddr, ra.UserNet),
				ra.WAN, RAWANUserIf, cidr(ra.WANUserAddr, ra.UserNet))
		},
		func() error {
			return l.Link(ra.WAN, RAWANGWIf, cidr(ra.WANGWAddr, ra.TransitNet),
				ra.GW, RAGWWANIf, cidr(ra.GWWANAddr, ra.TransitNet))
		},
		func() error {
			return l.Link(ra.GW, RAGWLANIf, cidr(ra.GWLANAddr, ra.LANNet),
				ra.LAN, RALANIf, cidr(ra.ServerAddr, ra.LANNet))
		},
		func() error { return ra.User.Route("default", ra.WANUserAddr.String()) },
		func() error { return ra.GW.Route("default", ra.WANGWAddr.String()) },
		func() error { return ra.LAN.Route("default", ra.GWLANAddr.String()) },
		func() error { return ra.WAN.Sysctl("net.ipv4.ip_forward", "1") },
		func() error { return ra.GW.Sysctl("net.ipv4.ip_forward", "1") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fail(err)
		}
	}
	return ra, nil
}

// removeNS deletes namespace n and forgets it.
func (l *Lab) removeNS(n *NS) error {
	l.mu.Lock()
	for i, m := range l.nss {
		if m == n {
			l.nss = append(l.nss[:i], l.nss[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	return deleteNS(n.name)
}
