package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DNS from the egress
//
// A CDN answers by where the resolver's query comes from, so a query is
// resolved as it would be from the address the client's traffic leaves
// from: the egress. [Options.Egress] names a client's egress (the
// firewall's egress policies, evaluated for the client's address and
// identity); otherwise it is the default egress, the address of
// [Options.EgressInterface] (re-read on every netlink address event, so a
// DHCP renumbering needs no reload) or [Options.EgressAddr].
//
// Per upstream (ecs, upstream_ecs) the query then carries:
//   - egress: the egress's /24 or /56 as EDNS Client Subnet, unless the
//     egress is not a public address (RFC 1918, ULA, 100.64/10, loopback,
//     link-local): a private address is never sent;
//   - none: no subnet;
//   - fixed PREFIX: that prefix, whatever it is: the configuration named it.
//
// Plain-DNS queries are also sent from the egress address when it is an
// address of the gateway (else from the default source); DoT and DoH keep
// their pooled connections from the default source. Cached answers are
// keyed by the egress, so each egress gets its own answers, and the
// gateway_dns record carries it as EgressIP.

// EgressSource tells which address a client's traffic leaves from. Egress
// is called on every query (after the client's identity is established;
// hasID false: none) and must not block. False: the default egress.
type EgressSource interface {
	Egress(src netip.Addr, id Identity, hasID bool) (netip.Addr, bool)
}

// ecsMode is one upstream's EDNS Client Subnet setting.
type ecsMode struct {
	kind  string       // "egress", "none" or "fixed"
	fixed netip.Prefix // kind fixed
}

// parseECS reads "egress", "none" (or "off"), or "fixed PREFIX".
func parseECS(s string) (ecsMode, error) {
	f := strings.Fields(s)
	switch {
	case len(f) == 1 && f[0] == "egress":
		return ecsMode{kind: "egress"}, nil
	case len(f) == 1 && (f[0] == "none" || f[0] == "off"):
		return ecsMode{kind: "none"}, nil
	case len(f) == 2 && f[0] == "fixed":
		p, err := netip.ParsePrefix(f[1])
		if err != nil {
			return ecsMode{}, fmt.Errorf("fixed %q: expected a prefix such as 198.51.100.0/24", f[1])
		}
		if p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return ecsMode{}, fmt.Errorf("fixed %s: expected a plain IPv4 or IPv6 prefix", p)
		}
		if p.Masked() != p {
			return ecsMode{}, fmt.Errorf("fixed %s has host bits set; did you mean %s?", p, p.Masked())
		}
		return ecsMode{kind: "fixed", fixed: p}, nil
	}
	return ecsMode{}, fmt.Errorf("%q is not one of egress, none, fixed PREFIX", s)
}

// ecsFor returns the upstream's mode from c; c is valid.
func ecsFor(c *Config, upstream string) ecsMode {
	s := c.ECS
	if v, ok := c.UpstreamECS[upstream]; ok {
		s = v
	}
	m, _ := parseECS(s)
	return m
}

// cgnat is RFC 6598 shared address space, which IsPrivate does not cover.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// publicAddr reports whether a may be sent as a client subnet without
// naming a private network.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !cgnat.Contains(a)
}

// subnetOption returns the ECS option the mode gives for egress; nil: none.
func (m ecsMode) subnetOption(egress netip.Addr) *mdns.EDNS0_SUBNET {
	switch m.kind {
	case "egress":
		if !publicAddr(egress) {
			return nil
		}
		return egressSubnet(egress)
	case "fixed":
		e := &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(m.fixed.Bits())}
		if m.fixed.Addr().Is6() {
			e.Family = 2
		}
		e.Address = net.IP(m.fixed.Addr().AsSlice())
		return e
	}
	return nil
}

// egressOf returns the egress of a query from src with identity id.
func (s *Server) egressOf(src netip.Addr, id Identity, hasID bool) netip.Addr {
	if es := s.opts.Egress; es != nil && src.IsValid() {
		if a, ok := es.Egress(src, id, hasID); ok {
			return a.Unmap()
		}
	}
	if a := s.defEgress.Load(); a != nil {
		return *a
	}
	return netip.Addr{}
}

// egressCtxKey carries a query's egress to the dialer.
type egressCtxKey struct{}

// WithEgress returns ctx carrying the address an upstream query should be
// sent from; [Options.Dial] functions read it with [EgressFrom].
func WithEgress(ctx context.Context, a netip.Addr) context.Context {
	return context.WithValue(ctx, egressCtxKey{}, a)
}

// EgressFrom returns the egress address a dial should bind, if any.
func EgressFrom(ctx context.Context) (netip.Addr, bool) {
	a, ok := ctx.Value(egressCtxKey{}).(netip.Addr)
	return a, ok && a.IsValid()
}

// dialFrom binds src when it is an address of the gateway; when the
// kernel refuses it (EADDRNOTAVAIL: the egress is routed to the gateway,
// not assigned), or it is of the other family than addr, the query goes
// from the default source instead.
func dialFrom(ctx context.Context, d *net.Dialer, network, addr string, src netip.Addr) (net.Conn, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Unmap().Is4() != src.Is4() {
		src = netip.Addr{} // an egress of the other family cannot reach this upstream
	}
	if src.IsValid() {
		bound := *d
		if strings.HasPrefix(network, "udp") {
			bound.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		} else {
			bound.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		c, err := bound.DialContext(ctx, network, addr)
		if !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return c, err
		}
	}
	return d.DialContext(ctx, network, addr)
}

// egressWatch follows the addresses of Options.EgressInterface: a
// netlink socket subscribed to address and route events (a DHCP client
// changes the address, then the default route), made in Run's network
// namespace, and a handle to read addresses and routes there.
type egressWatch struct {
	h  *netlink.Handle
	fd int
}

// openEgressWatch subscribes to address events in the caller's network
// namespace (Run's) and reads the interface's addresses once.
func (s *Server) openEgressWatch() (*egressWatch, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK,
			Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE})
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("subscribe to address events: %w", err)
	}
	w := &egressWatch{h: h, fd: fd}
	s.readEgress(w.h)
	return w, nil
}

// egressPoll bounds how long the watch takes to notice that Run ends.
const egressPoll = 250 // milliseconds

// run re-reads the interface's addresses after every burst of address
// events until ctx ends, then closes the watch. Run owns it. The events
// themselves are not parsed: any of them (or a lost one, ENOBUFS) means
// "read again".
func (w *egressWatch) run(ctx context.Context, s *Server) {
	defer w.h.Close()
	defer unix.Close(w.fd)
	buf := make([]byte, 1<<16)
	for ctx.Err() == nil {
		pfd := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, egressPoll)
		if n <= 0 || err != nil {
			continue // timeout, EINTR
		}
		for {
			if _, _, err := unix.Recvfrom(w.fd, buf, unix.MSG_DONTWAIT); err != nil {
				break // EAGAIN: drained; ENOBUFS: events lost, read anyway
			}
		}
		s.readEgress(w.h)
	}
}

// readEgress sets the default egress to the address the kernel sources
// traffic from on the interface's default route, as masquerade does: the
// route's preferred source, else the interface's address on the next
// hop's subnet; without a default route there, the interface's first
// global address. A private address (a NATed uplink) is used as the
// egress, never as a client subnet.
func (s *Server) readEgress(h *netlink.Handle) {
	ifc := s.opts.EgressInterface
	var best netip.Addr
	if l, err := h.LinkByName(ifc); err == nil {
		best = defaultSource(h, l)
	}
	old := s.defEgress.Load()
	if old != nil && *old == best {
		return
	}
	s.defEgress.Store(&best)
	if old != nil {
		s.m.egressChanges.Inc()
	}
	s.log.Info("egress address", "interface", ifc, "address", best, "sent_as_subnet", publicAddr(best))
}

func defaultSource(h *netlink.Handle, l netlink.Link) netip.Addr {
	addrs, _ := h.AddrList(l, netlink.FAMILY_ALL)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, _ := h.RouteList(l, fam)
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if src, ok := netip.AddrFromSlice(r.Src); ok && src.IsValid() {
				return src.Unmap()
			}
			for _, a := range addrs {
				if a.IPNet != nil && r.Gw != nil && a.IPNet.Contains(r.Gw) {
					if ip, ok := netip.AddrFromSlice(a.IP); ok {
						return ip.Unmap()
					}
				}
			}
		}
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}
