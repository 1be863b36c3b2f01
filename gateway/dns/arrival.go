package dns

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Where a query came from, for identities. An identity names the
// interface that owns its addresses (the WireGuard interface); a query
// carries it only when it arrived through that interface:
//
//   - UDP: the arrival interface of the datagram itself, from IP_PKTINFO
//     or IPV6_PKTINFO. A LAN or WAN host that forges a tunnel address gets
//     no identity, whatever its source address.
//   - TCP, DNS over TLS, DNS over HTTPS: a connection is served only after
//     its handshake completed, and the server's SYN-ACK went where the
//     kernel routes the client's address. So the client is whoever
//     receives packets routed to it: identified only when that route
//     leaves through the identity's interface (for a tunnel address, the
//     WireGuard interface, which encrypts to the one peer that holds it).
//     A host forging the address elsewhere never sees the SYN-ACK and
//     cannot complete the handshake. TLS adds that nothing can be injected
//     into an established connection; plain TCP relies on TCP's own
//     defences against blind in-window injection (RFC 5961).
//
// Lookups go through a netlink handle opened in the network namespace
// where the listeners are bound (Run's), cached for a few seconds.
type arrival struct {
	mu sync.RWMutex // guards h against Close
	h  *netlink.Handle

	cmu    sync.Mutex
	names  map[int]cachedName
	routes map[netip.Addr]cachedRoute
}

type cachedName struct {
	name string
	at   time.Time
}

type cachedRoute struct {
	ifindex int
	at      time.Time
}

const (
	arrivalCacheFor = 5 * time.Second
	maxCachedRoutes = 4096 // the cache is emptied when it is full
)

// openArrival opens the netlink handle in the calling thread's network
// namespace.
func openArrival() (*arrival, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &arrival{h: h, names: map[int]cachedName{}, routes: map[netip.Addr]cachedRoute{}}, nil
}

func (a *arrival) close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	if a.h != nil {
		a.h.Close()
		a.h = nil
	}
	a.mu.Unlock()
}

var errClosed = errors.New("dns: interface lookups closed")

// ifName returns the name of the interface with index idx, or "".
func (a *arrival) ifName(idx int, now time.Time) string {
	if a == nil || idx <= 0 {
		return ""
	}
	a.cmu.Lock()
	c, ok := a.names[idx]
	a.cmu.Unlock()
	if ok && now.Sub(c.at) < arrivalCacheFor {
		return c.name
	}
	name := ""
	err := a.with(func(h *netlink.Handle) error {
		l, err := h.LinkByIndex(idx)
		if err == nil {
			name = l.Attrs().Name
		}
		return err
	})
	if err != nil {
		return ""
	}
	a.cmu.Lock()
	a.names[idx] = cachedName{name, now}
	a.cmu.Unlock()
	return name
}

// routeIf returns the index of the interface the route to dst (from the
// local address src, if valid) leaves through, or 0.
func (a *arrival) routeIf(dst, src netip.Addr, now time.Time) int {
	if a == nil || !dst.IsValid() {
		return 0
	}
	a.cmu.Lock()
	c, ok := a.routes[dst]
	a.cmu.Unlock()
	if ok && now.Sub(c.at) < arrivalCacheFor {
		return c.ifindex
	}
	idx := 0
	err := a.with(func(h *netlink.Handle) error {
		opts := &netlink.RouteGetOptions{}
		if src.IsValid() && src.Is4() == dst.Is4() {
			opts.SrcAddr = net.IP(src.AsSlice())
		}
		rs, err := h.RouteGetWithOptions(net.IP(dst.AsSlice()), opts)
		if err == nil && len(rs) > 0 {
			idx = rs[0].LinkIndex
		}
		return err
	})
	if err != nil {
		return 0
	}
	a.cmu.Lock()
	if len(a.routes) >= maxCachedRoutes {
		clear(a.routes)
	}
	a.routes[dst] = cachedRoute{idx, now}
	a.cmu.Unlock()
	return idx
}

func (a *arrival) with(f func(*netlink.Handle) error) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.h == nil {
		return errClosed
	}
	return f(a.h)
}

// pktinfo returns the destination address and the arrival interface that
// IP_PKTINFO or IPV6_PKTINFO put in a datagram's control messages; an
// invalid address and 0 when there is none. It does not allocate.
func pktinfo(oob []byte) (dst netip.Addr, ifindex int) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return netip.Addr{}, 0
		}
		switch {
		case h.Level == unix.SOL_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
			ifindex = int(int32(binary.NativeEndian.Uint32(data[0:4])))
			dst = netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.SOL_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
			dst = netip.AddrFrom16([16]byte(data[0:16])).Unmap()
			ifindex = int(int32(binary.NativeEndian.Uint32(data[16:20])))
		}
		oob = rest
	}
	return dst, ifindex
}

// srcInfo writes into b (of at least oobSize bytes) the control message
// that sends a datagram from src: IP_PKTINFO's ipi_spec_dst on an IPv4
// socket, IPV6_PKTINFO (src v4-mapped for IPv4 clients) on an IPv6 one.
// It returns the used part of b.
func srcInfo(b []byte, v6 bool, src netip.Addr) []byte {
	hdr := unix.CmsgLen(0)
	if v6 {
		b = b[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)]
		clear(b)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		a := src.As16()
		copy(b[hdr:], a[:])
		return b
	}
	b = b[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	a := src.Unmap().As4()
	copy(b[hdr+4:], a[:])
	return b
}

// oobSize holds either control message, received or sent.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(unix.SizeofInet4Pktinfo)
