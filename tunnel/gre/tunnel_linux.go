package gre

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/edgegw/edgegw/tunnel"
)

// nl6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h): no
// IPv6 link-local address on the interface.
const nl6AddrGenModeNone = 1

const (
	// tunOffset is the headroom the TUN device needs in front of a packet
	// it writes: its virtio-net header (virtioNetHdrLen in the tun package).
	tunOffset = vnetHdrLen
	// sendOffset is where the TUN device reads a packet into a buffer,
	// leaving room for the outer IPv4 header and the longest GRE header
	// we send (flags, key, sequence).
	sendOffset = ipv4HeaderLen + 12
)

// Options are a tunnel's collaborators.
type Options struct {
	// Logger receives state changes; nil discards.
	Logger *slog.Logger
	// Endpoints shares raw sockets with other tunnels on the same local
	// address. Nil: the tunnel opens (and closes) its own, which only
	// works if no other tunnel uses its local address. Kernel tunnels
	// need none.
	Endpoints *Endpoints
	// Backend chooses the dataplane; the zero value, BackendAuto, takes
	// the kernel's ip_gre where it exists.
	Backend Backend
}

// Tunnel is one GRE tunnel: an interface named after the tunnel, with the
// tunnel's address. On the userspace backend it is a TUN device fed by and
// feeding a shared raw GRE socket; on the kernel backend an ip_gre
// interface. Its methods are safe for concurrent use.
type Tunnel struct {
	cfg     Config
	log     *slog.Logger
	eps     *Endpoints
	ownEps  bool
	ep      *endpoint
	dev     tun.Device
	file    *os.File // dev's file, for writes with our own virtio-net header; nil if dev has none
	ifindex int
	src     [4]byte
	dst     [4]byte
	peer    [4]byte // the far end's tunnel address
	hdrLen  int     // GRE header length we send
	metrics *metrics
	kern    *kernelTunnel // the ip_gre dataplane; nil: userspace

	txSeq atomic.Uint32
	probe atomic.Pointer[func([]byte) bool]

	// Owned by the endpoint's reader goroutine.
	rx    [][]byte
	rxSeq seqWindow

	rxPackets, rxBytes, txPackets, txBytes atomic.Uint64
	rxCoalesced                            atomic.Uint64 // of rxPackets, GRO super-packets
	drops                                  [numTunnelDrops]atomic.Uint64

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
	done      chan struct{} // sendLoop and event drain ended
}

// Tunnel-level drop reasons, in metric label order.
const (
	dropWrongKey = iota
	dropMissingSequence
	dropOutOfOrder
	dropReplayed
	dropInvalidInner
	dropTunWrite
	dropSendError
	dropTooManySegments
	numTunnelDrops
)

var tunnelDropNames = [numTunnelDrops]string{"wrong_key", "missing_sequence", "out_of_order", "replayed", "invalid_inner_packet", "tun_write_error", "send_error", "too_many_segments"}

// New creates the tunnel's TUN device and brings it up with its address
// and MTU, in the network namespace of the calling thread, and starts
// forwarding. cfg must have passed SetDefaults and Validate. If New
// fails, it has undone what it did.
func New(cfg Config, opts Options) (*Tunnel, error) {
	var problems []string
	cfg.Validate(func(field, msg string) { problems = append(problems, field+": "+msg) })
	if len(problems) > 0 {
		return nil, fmt.Errorf("open GRE tunnel %q: invalid config: %s", cfg.Name, strings.Join(problems, "; "))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tunnel{
		cfg:  cfg,
		log:  log.With("component", "gre", "tunnel", cfg.Name),
		eps:  opts.Endpoints,
		src:  cfg.Local.As4(),
		dst:  cfg.Remote.As4(),
		peer: tunnel.Peer(cfg.Address).As4(),
		done: make(chan struct{}),
	}
	t.hdrLen = (&Header{HasKey: cfg.Key != nil, HasSequence: cfg.Sequence}).Len()
	t.metrics = newMetrics(t)
	switch opts.Backend {
	case BackendAuto, BackendKernel:
		err := t.openKernel()
		if err == nil {
			close(t.done)
			t.log.Info("GRE tunnel up", "backend", BackendKernel, "local", cfg.Local, "remote", cfg.Remote, "address", cfg.Address, "mtu", cfg.MTU)
			return t, nil
		}
		if opts.Backend == BackendKernel || !errors.Is(err, ErrNoKernelGRE) {
			return nil, fmt.Errorf("open GRE tunnel %q: %w", cfg.Name, err)
		}
	case BackendUserspace:
	default:
		return nil, fmt.Errorf("open GRE tunnel %q: unknown backend %q", cfg.Name, opts.Backend)
	}
	if t.eps == nil {
		t.eps, t.ownEps = NewEndpoints(log), true
	}
	if err := t.open(); err != nil {
		if t.ownEps {
			t.eps.Close()
		}
		return nil, fmt.Errorf("open GRE tunnel %q: %w", cfg.Name, err)
	}
	go t.sendLoop()
	t.log.Info("GRE tunnel up", "backend", BackendUserspace, "local", cfg.Local, "remote", cfg.Remote, "address", cfg.Address, "mtu", cfg.MTU)
	return t, nil
}

// Backend is the dataplane the tunnel runs on: BackendKernel or
// BackendUserspace.
func (t *Tunnel) Backend() Backend {
	if t.kern != nil {
		return BackendKernel
	}
	return BackendUserspace
}

func (t *Tunnel) open() (err error) {
	t.dev, err = tun.CreateTUN(t.cfg.Name, t.cfg.MTU)
	if err != nil {
		return fmt.Errorf("create TUN device: %w", err)
	}
	defer func() {
		if err != nil {
			t.dev.Close()
		}
	}()
	if f, ok := t.dev.(interface{ File() *os.File }); ok {
		t.file = f.File()
	}
	go func() {
		for range t.dev.Events() { // closed by dev.Close
		}
	}()
	if err = t.configureLink(); err != nil {
		return err
	}
	_, err = t.eps.attach(t) // sets t.ep
	return err
}

// configureLink sets the address and MTU and brings the device up.
func (t *Tunnel) configureLink() error {
	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(t.cfg.Name)
	if err != nil {
		return fmt.Errorf("find interface: %w", err)
	}
	t.ifindex = link.Attrs().Index
	if link.Attrs().MTU != t.cfg.MTU {
		if err := nl.LinkSetMTU(link, t.cfg.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", t.cfg.MTU, err)
		}
	}
	p := t.cfg.Address
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := nl.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add address %s: %w", p, err)
	}
	// The tunnel carries IPv4 only: no IPv6 link-local address, so the
	// kernel sends no router or multicast-listener chatter to the peer.
	// (A kernel without IPv6 refuses; that is fine too.)
	_ = nl.LinkSetIP6AddrGenMode(link, nl6AddrGenModeNone)
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	return nil
}

// Close stops forwarding and removes the TUN device (its address and
// routes go with it). It is idempotent and waits for its goroutines.
func (t *Tunnel) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		if t.kern != nil {
			t.closeErr = t.closeKernel()
			t.log.Info("GRE tunnel closed")
			return
		}
		err := t.eps.detach(t.ep, t)
		err = errors.Join(err, t.dev.Close())
		<-t.done
		if t.ownEps {
			err = errors.Join(err, t.eps.Close())
		}
		t.closeErr = err
		t.log.Info("GRE tunnel closed")
	})
	return t.closeErr
}

// Name is the tunnel's (and its interface's) name.
func (t *Tunnel) Name() string { return t.cfg.Name }

// Config returns the configuration the tunnel runs.
func (t *Tunnel) Config() Config { return t.cfg }

// LinkIndex is the interface index of the tunnel's TUN device.
func (t *Tunnel) LinkIndex() int { return t.ifindex }

// SetProbeHandler installs f to see ICMP packets arriving through the
// tunnel before they reach the TUN device; f returns true to consume a
// packet (a health-check answer). f runs on the receive path and must not
// block or keep pkt. Nil removes it.
func (t *Tunnel) SetProbeHandler(f func(pkt []byte) bool) {
	if f == nil {
		t.probe.Store(nil)
		return
	}
	t.probe.Store(&f)
}

// Inject sends an IP packet through the tunnel as if the kernel had routed
// it into the TUN device; health checks use it.
func (t *Tunnel) Inject(pkt []byte) error {
	if t.closed.Load() {
		return net.ErrClosed
	}
	if t.kern != nil {
		return t.kernelInject(pkt)
	}
	if t.ep == nil {
		return net.ErrClosed
	}
	b := make([]byte, sendOffset+len(pkt))
	copy(b[sendOffset:], pkt)
	start, ok := t.encap(b, len(pkt))
	if !ok {
		return errors.New("gre: not an IP packet")
	}
	msg := []ipv4.Message{{Buffers: [][]byte{b[start:]}, Addr: &net.IPAddr{IP: t.cfg.Remote.AsSlice()}}}
	if _, err := t.ep.send(msg); err != nil {
		t.drop(dropSendError)
		return err
	}
	t.txPackets.Add(1)
	t.txBytes.Add(uint64(len(pkt)))
	return nil
}

func (t *Tunnel) drop(reason int) { t.drops[reason].Add(1) }

func (t *Tunnel) demuxKey() demuxKey {
	k := demuxKey{remote: t.dst}
	if t.cfg.Key != nil {
		k.hasKey, k.key = true, *t.cfg.Key
	}
	return k
}

// encap writes the outer IPv4 and GRE headers in front of the packet of
// length size at b[sendOffset:] and returns where the datagram starts.
func (t *Tunnel) encap(b []byte, size int) (int, bool) {
	h := Header{HasKey: t.cfg.Key != nil, HasSequence: t.cfg.Sequence}
	switch b[sendOffset] >> 4 {
	case 4:
		h.Proto = ProtoIPv4
	case 6:
		h.Proto = ProtoIPv6
	default:
		return 0, false
	}
	if h.HasKey {
		h.Key = *t.cfg.Key
	}
	if h.HasSequence {
		h.Sequence = t.txSeq.Add(1) - 1
	}
	start := sendOffset - t.hdrLen - ipv4HeaderLen
	putIPv4(b[start:], ipv4HeaderLen+t.hdrLen+size, uint8(t.cfg.TTL), t.src, t.dst)
	h.Put(b[start+ipv4HeaderLen:])
	return start, true
}

// sendLoop reads batches from the TUN device (TSO segments already split
// to the MTU by the tun package), encapsulates them in place and sends
// them with one sendmmsg per batch.
func (t *Tunnel) sendLoop() {
	defer close(t.done)
	n := t.dev.BatchSize()
	bufs := make([][]byte, n)
	sizes := make([]int, n)
	msgs := make([]ipv4.Message, n)
	remote := &net.IPAddr{IP: t.cfg.Remote.AsSlice()}
	for i := range bufs {
		bufs[i] = make([]byte, sendOffset+bufSize)
		msgs[i].Buffers = [][]byte{nil}
		msgs[i].Addr = remote
	}
	for {
		n, err := t.dev.Read(bufs, sizes, sendOffset)
		m := 0
		var bytes uint64
		for i := range n {
			start, ok := t.encap(bufs[i], sizes[i])
			if !ok {
				t.drop(dropInvalidInner)
				continue
			}
			msgs[m].Buffers[0] = bufs[i][start : sendOffset+sizes[i]]
			bytes += uint64(sizes[i])
			m++
		}
		if m > 0 {
			sent, serr := t.ep.send(msgs[:m])
			t.txPackets.Add(uint64(sent))
			if sent < m {
				t.drops[dropSendError].Add(uint64(m - sent))
				t.log.Debug("GRE send", "err", serr)
				bytes = 0
				for i := range sent {
					bytes += uint64(len(msgs[i].Buffers[0]) - ipv4HeaderLen - t.hdrLen)
				}
			}
			t.txBytes.Add(bytes)
		}
		switch {
		case err == nil:
		case errors.Is(err, tun.ErrTooManySegments):
			t.drop(dropTooManySegments)
		case errors.Is(err, os.ErrClosed), t.closed.Load():
			return
		default:
			t.log.Warn("TUN read", "err", err)
		}
	}
}

// accept checks a decapsulated packet on the receive path and counts it.
// It reports whether the packet goes to the TUN device.
//
// A tunnel that requires sequence numbers (sequence: true) drops packets
// without one, and packets whose number is seqWindowSize or more behind
// the newest or was seen before: a replayed packet never reaches the
// LAN. A tunnel that does not require them ignores them, as Magic WAN
// does.
func (t *Tunnel) accept(h *Header, inner []byte) bool {
	if t.cfg.Sequence {
		if !h.HasSequence {
			t.drop(dropMissingSequence)
			return false
		}
		switch t.rxSeq.check(h.Sequence) {
		case seqTooOld:
			t.drop(dropOutOfOrder)
			return false
		case seqReplayed:
			t.drop(dropReplayed)
			return false
		}
	}
	if !validInner(h.Proto, inner) {
		t.drop(dropInvalidInner)
		return false
	}
	t.rxPackets.Add(1)
	t.rxBytes.Add(uint64(len(inner)))
	if h.Proto == ProtoIPv4 && inner[9] == 1 { // ICMP
		if f := t.probe.Load(); f != nil && (*f)(inner) {
			return false
		}
		if [4]byte(inner[16:20]) == t.peer {
			t.hairpin(inner)
			return false
		}
	}
	return true
}

// hairpin sends an ICMP packet from the far end addressed to the far
// end's own tunnel address straight back, as the kernel would route it:
// that is the peer's reply-style health probe (Magic WAN's "the customer
// router just routes it back"). Done here, it needs neither forwarding
// nor accept_local on the tunnel interface.
func (t *Tunnel) hairpin(p []byte) {
	if p[8] <= 1 {
		return // TTL expired; a router would drop it too
	}
	b := make([]byte, len(p))
	copy(b, p)
	b[8]--
	// Incremental checksum update for the TTL decrement (RFC 1624).
	sum := uint32(b[10])<<8 | uint32(b[11])
	sum += 0x0100
	sum = sum&0xffff + sum>>16
	b[10], b[11] = byte(sum>>8), byte(sum)
	if err := t.Inject(b); err != nil {
		t.log.Debug("hairpin", "err", err)
	}
}

// validInner checks that the payload is a whole IP packet of the kind the
// GRE header announces.
func validInner(proto uint16, b []byte) bool {
	switch proto {
	case ProtoIPv4:
		return len(b) >= ipv4HeaderLen && b[0]>>4 == 4 && int(b[0]&0xf)*4 >= ipv4HeaderLen &&
			int(b[2])<<8|int(b[3]) <= len(b) && int(b[2])<<8|int(b[3]) >= int(b[0]&0xf)*4
	case ProtoIPv6:
		return len(b) >= 40 && b[0]>>4 == 6 && 40+(int(b[4])<<8|int(b[5])) <= len(b)
	}
	return false
}

// writeSuper writes one TSO super-packet, virtio-net header included,
// after the packets queued before it, so that a flow keeps its order.
func (t *Tunnel) writeSuper(b []byte) {
	t.rxCoalesced.Add(1)
	t.flushRx()
	if _, err := t.file.Write(b); err != nil && !t.closed.Load() {
		t.drops[dropTunWrite].Add(1)
		t.log.Debug("TUN write", "err", err)
	}
}

// flushRx writes the packets queued by the reader in one call.
func (t *Tunnel) flushRx() {
	if len(t.rx) == 0 {
		return
	}
	if _, err := t.dev.Write(t.rx, tunOffset); err != nil && !t.closed.Load() {
		t.drops[dropTunWrite].Add(1)
		t.log.Debug("TUN write", "err", err)
	}
	clear(t.rx)
	t.rx = t.rx[:0]
}
