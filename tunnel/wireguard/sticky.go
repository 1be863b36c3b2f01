package wireguard

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	_ "unsafe" // go:linkname

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// wireguard-go answers a peer from the address the peer's datagram was
// sent to (a "sticky" source read from IP_PKTINFO), which is what an HA
// pair needs: peers talk to the pair's virtual address and must hear back
// from it, not from the node's own address the kernel would pick. With
// UDP GRO on (any recent kernel), this wireguard-go loses that address:
// it reads batches at the end of its message array and moves the
// datagrams to the front without their control messages
// (conn.splitCoalescedMessages), so every reply leaves from the kernel's
// choice. A device that must keep its source (Options.KeepSource) has GRO
// turned off on its sockets before wireguard-go asks whether it is on;
// wireguard-go then reads datagrams in place, with their PKTINFO. That
// costs the receive-side batching of GRO, so only such devices pay it.
//
// The sockets are created by wireguard-go's own listen config, whose
// socket-option hooks are the package variable conn.controlFns: one more
// hook goes there, the last, so it runs after wireguard-go enables GRO.

//go:linkname wgControlFns golang.zx2c4.com/wireguard/conn.controlFns
var wgControlFns []func(network, address string, c syscall.RawConn) error

// Appended once, while packages initialise, before any socket exists.
var _ = func() bool {
	wgControlFns = append(wgControlFns, noGRO)
	return true
}()

// keepSourcePorts holds the UDP ports of devices with KeepSource, with a
// count each (tests run several devices).
var keepSourcePorts = struct {
	sync.Mutex
	n map[int]int
}{n: map[int]int{}}

func keepSource(port int, on bool) {
	keepSourcePorts.Lock()
	defer keepSourcePorts.Unlock()
	if on {
		keepSourcePorts.n[port]++
		return
	}
	if keepSourcePorts.n[port]--; keepSourcePorts.n[port] <= 0 {
		delete(keepSourcePorts.n, port)
	}
}

// noGRO turns UDP GRO off on a socket wireguard-go binds to a port of a
// device with KeepSource.
func noGRO(network, address string, c syscall.RawConn) error {
	_, p, err := net.SplitHostPort(address)
	if err != nil {
		return nil
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil
	}
	keepSourcePorts.Lock()
	on := keepSourcePorts.n[port] > 0
	keepSourcePorts.Unlock()
	if !on {
		return nil
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0)
	}); err != nil {
		return err
	}
	return serr
}

// Send sends bufs to ep. While the device answers for an HA pair's
// virtual addresses (a Takeover sets defaultSrc and defaultSrc6), a datagram to an endpoint
// without a sticky source leaves from that address: wireguard-go clears a
// peer's sticky source when a handshake is retried or its bind changes,
// and the kernel would then pick this node's own address, which the
// pair's masquerade rewrites to the virtual address with another port (the
// peer's session already holds virtual address and port): the peer would
// move its endpoint to a port that means nothing after the next failover.
func (b *checkedBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	src4, src6 := b.defaultSrc.Load(), b.defaultSrc6.Load()
	if se, ok := ep.(*conn.StdNetEndpoint); ok && (src4 != nil || src6 != nil) {
		src := src4
		if !se.AddrPort.Addr().Unmap().Is4() {
			src = src6
		}
		if src != nil && !se.SrcIP().IsValid() {
			// A copy: wireguard-go may send to the peer's endpoint from
			// other goroutines.
			if e, err := sourcedEndpoint(se.AddrPort, *src); err == nil {
				ep = e
			}
		}
	}
	return b.Bind.Send(bufs, ep)
}

// setDefaultSource sets (or, with an invalid address, clears) the source
// of datagrams to IPv4 endpoints (a4) and IPv6 endpoints (a6) without a
// sticky one.
func (d *Device) setDefaultSource(a4, a6 netip.Addr) {
	for _, x := range []struct {
		a netip.Addr
		p *atomic.Pointer[netip.Addr]
	}{{a4, &d.bind.defaultSrc}, {a6, &d.bind.defaultSrc6}} {
		if x.a.IsValid() {
			x.p.Store(&x.a)
		} else {
			x.p.Store(nil)
		}
	}
}
