package wireguard

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// Target is a peer the device should reach first rather than wait for:
// after this node of an HA pair took over the virtual address the peers
// know, their sessions are with the other node, and a stock client only
// starts a new handshake on its own after about 15 s (keepalive timeout +
// rekey timeout).
type Target struct {
	// Peer is the peer as the PeerSource gives it; a configured peer
	// needs only its PublicKey.
	Peer Peer
	// Endpoint is where the peer was last seen.
	Endpoint netip.AddrPort
}

// Initiate sends a handshake initiation to each target, from address src
// and the device's port. Targets that are neither configured nor held
// on demand become on-demand peers first (reaped like the others when
// they stay idle). It returns how many initiations were sent; targets
// that fail are skipped and named in the error.
//
// src matters: a peer behind NAT only lets in datagrams from the address
// and port it sent to, the pair's virtual address, while the kernel would
// pick this node's own address for a socket bound to all of them. The
// peer answers to src, and from then on the device replies from the
// address each datagram arrived on, as for every peer.
func (d *Device) Initiate(src netip.Addr, targets []Target) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	var errs []error
	sent := 0
	for _, t := range targets {
		if err := d.initiate(src, t); err != nil {
			errs = append(errs, fmt.Errorf("peer %s at %v: %w", t.Peer.PublicKey, t.Endpoint, err))
			continue
		}
		sent++
	}
	return sent, errors.Join(errs...)
}

// initiate is Initiate for one target; d.mu is held.
func (d *Device) initiate(src netip.Addr, t Target) error {
	if !t.Endpoint.IsValid() || t.Endpoint.Port() == 0 {
		return fmt.Errorf("no endpoint")
	}
	ep, err := sourcedEndpoint(t.Endpoint, src)
	if err != nil {
		return err
	}
	k := t.Peer.PublicKey
	o := d.od
	o.mu.Lock()
	_, held := o.active[k]
	o.mu.Unlock()
	if !held && !(*o.static.Load())[k] {
		var b strings.Builder
		writePeer(&b, k, onDemandState(t.Peer))
		if err := d.wg.IpcSet(b.String()); err != nil {
			return fmt.Errorf("create peer: %w", err)
		}
		o.mu.Lock()
		o.active[k] = odPeer{peer: t.Peer, added: time.Now()}
		o.mu.Unlock()
		o.created.Add(1)
	}
	peer := d.wg.LookupPeer(device.NoisePublicKey(k))
	if peer == nil {
		return fmt.Errorf("wireguard-go holds no such peer")
	}
	peer.SetEndpointFromPacket(ep)
	if err := peer.SendHandshakeInitiation(false); err != nil {
		return fmt.Errorf("send initiation: %w", err)
	}
	return nil
}

// srcOffset is where conn.StdNetEndpoint keeps its sticky source (a
// PKTINFO control message, what the bind sends with), or ok false if the
// field is not where this code expects it. wireguard-go sets the field
// only from a received datagram and offers no setter, so a first
// datagram sent from a chosen address needs it written here; the layout
// is checked rather than assumed, and a wireguard-go that changed it makes
// Initiate fail loudly instead of sending from the wrong address.
var srcOffset, srcOK = func() (uintptr, bool) {
	f, ok := reflect.TypeFor[conn.StdNetEndpoint]().FieldByName("src")
	return f.Offset, ok && f.Type == reflect.TypeFor[[]byte]()
}()

// sourcedEndpoint is an endpoint for dst whose datagrams leave from src.
func sourcedEndpoint(dst netip.AddrPort, src netip.Addr) (*conn.StdNetEndpoint, error) {
	if !srcOK {
		return nil, errors.New("this wireguard-go keeps no sticky source where expected: cannot send from a chosen address")
	}
	if !src.IsValid() || src.Is4() != dst.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("source %v does not fit destination %v", src, dst)
	}
	var cmsg []byte
	if src.Is4() {
		cmsg = make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&cmsg[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&cmsg[unix.CmsgLen(0)]))
		info.Spec_dst = src.As4()
	} else {
		cmsg = make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&cmsg[0]))
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&cmsg[unix.CmsgLen(0)]))
		info.Addr = src.As16()
	}
	ep := &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}
	*(*[]byte)(unsafe.Add(unsafe.Pointer(ep), srcOffset)) = cmsg
	// wireguard-go reads it back the same way it will send it.
	if got := ep.SrcIP(); got != src {
		return nil, fmt.Errorf("sticky source reads back as %v, not %v", got, src)
	}
	return ep, nil
}
