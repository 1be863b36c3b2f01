//go:build linux

package netlab

import (
	"errors"
	"net/netip"
)

// Office is the whole-office topology built by [Lab.Office]: the
// [RemoteAccess] topology plus a second remote user and two branch offices,
// each behind its own router on the internet:
//
//	user  ──eth0 192.0.2.0/24    eth0── ┐
//	user2 ──eth0 198.18.2.0/24   eth2── │
//	                                    wan ──eth1 198.51.100.0/24 eth0── gw ──eth1 10.0.0.0/24 eth0── lan
//	gbr   ──eth0 203.0.113.0/24  eth3── │
//	ibr   ──eth0 198.18.3.0/24   eth4── ┘
//
//	gbr ──eth1 10.20.0.0/24 eth0── glan      (the GRE branch: router 203.0.113.20, server 10.20.0.5)
//	ibr ──eth1 10.30.0.0/24 eth0── ilan      (the IPsec branch: router 198.18.3.20, server 10.30.0.5)
//
// user2 is a second laptop (198.18.2.2, default via 198.18.2.1). The
// branch routers forward, with rp_filter off (tunnel traffic arrives on
// interfaces other than the route back), and have a default route via wan;
// their LAN servers' default route is the branch router. As in
// [RemoteAccess], wan routes no private prefix: the offices reach each
// other only through tunnels.
type Office struct {
	*RemoteAccess
	User2                 *NS
	GREBranch, GRELAN     *NS
	IPsecBranch, IPsecLAN *NS

	User2Addr       netip.Addr   // user2 eth0: 198.18.2.2
	GREBranchAddr   netip.Addr   // gbr eth0, the GRE branch router's public address: 203.0.113.20
	GREServerAddr   netip.Addr   // glan eth0: 10.20.0.5
	GRELANNet       netip.Prefix // 10.20.0.0/24
	IPsecBranchAddr netip.Addr   // ibr eth0, the IPsec branch router's public address: 198.18.3.20
	IPsecServerAddr netip.Addr   // ilan eth0: 10.30.0.5
	IPsecLANNet     netip.Prefix // 10.30.0.0/24
}

// Office builds the [Office] topology: [Lab.RemoteAccess]'s namespaces and
// "user2", "gbr", "glan", "ibr", "ilan". On error the namespaces it
// created are deleted again.
func (l *Lab) Office() (*Office, error) {
	ra, err := l.RemoteAccess()
	if err != nil {
		return nil, err
	}
	o := &Office{
		RemoteAccess:    ra,
		User2Addr:       netip.MustParseAddr("198.18.2.2"),
		GREBranchAddr:   netip.MustParseAddr("203.0.113.20"),
		GREServerAddr:   netip.MustParseAddr("10.20.0.5"),
		GRELANNet:       netip.MustParsePrefix("10.20.0.0/24"),
		IPsecBranchAddr: netip.MustParseAddr("198.18.3.20"),
		IPsecServerAddr: netip.MustParseAddr("10.30.0.5"),
		IPsecLANNet:     netip.MustParsePrefix("10.30.0.0/24"),
	}
	created := []*NS{ra.User, ra.WAN, ra.GW, ra.LAN}
	fail := func(err error) (*Office, error) {
		errs := []error{err}
		for _, n := range created {
			errs = append(errs, l.removeNS(n))
		}
		return nil, errors.Join(errs...)
	}
	for _, n := range []struct {
		p    **NS
		name string
	}{{&o.User2, "user2"}, {&o.GREBranch, "gbr"}, {&o.GRELAN, "glan"}, {&o.IPsecBranch, "ibr"}, {&o.IPsecLAN, "ilan"}} {
		ns, err := l.NS(n.name)
		if err != nil {
			return fail(err)
		}
		created = append(created, ns)
		*n.p = ns
	}
	steps := []func() error{
		func() error { return l.Link(o.User2, "eth0", "198.18.2.2/24", ra.WAN, "eth2", "198.18.2.1/24") },
		func() error { return l.Link(o.GREBranch, "eth0", "203.0.113.20/24", ra.WAN, "eth3", "203.0.113.1/24") },
		func() error { return l.Link(o.IPsecBranch, "eth0", "198.18.3.20/24", ra.WAN, "eth4", "198.18.3.1/24") },
		func() error { return l.Link(o.GREBranch, "eth1", "10.20.0.1/24", o.GRELAN, "eth0", "10.20.0.5/24") },
		func() error { return l.Link(o.IPsecBranch, "eth1", "10.30.0.1/24", o.IPsecLAN, "eth0", "10.30.0.5/24") },
		func() error { return o.User2.Route("default", "198.18.2.1") },
		func() error { return o.GREBranch.Route("default", "203.0.113.1") },
		func() error { return o.IPsecBranch.Route("default", "198.18.3.1") },
		func() error { return o.GRELAN.Route("default", "10.20.0.1") },
		func() error { return o.IPsecLAN.Route("default", "10.30.0.1") },
	}
	for _, br := range []*NS{o.GREBranch, o.IPsecBranch} {
		for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
			steps = append(steps, func() error { return br.Sysctl(kv[0], kv[1]) })
		}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fail(err)
		}
	}
	return o, nil
}
