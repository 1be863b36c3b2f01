package gre

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// batchSize is how many packets one recvmmsg/sendmmsg call moves; it
// matches wireguard-go's conn.IdealBatchSize.
const batchSize = 128

// bufSize holds the largest IPv4 datagram.
const bufSize = 65535

// sndBuf is the raw socket's send buffer as set; the kernel doubles it,
// to 1 MiB: about 400 full-size packets at its accounting (truesize),
// well under an interface's default queue of 1000, so that sendmmsg waits
// rather than the qdisc dropping.
const sndBuf = 512 << 10

// Endpoints shares one raw IPPROTO_GRE socket per local address among the
// tunnels that use it, and hands each received packet to the tunnel its
// source address and key select. A raw socket sees every GRE packet for
// its address, so two tunnels on one local address must share a socket
// (give both the same Endpoints); otherwise each would count the other's
// packets as coming from an unknown source.
//
// Endpoints is a prometheus.Collector of the drops that belong to no
// tunnel. Close it after every tunnel using it.
type Endpoints struct {
	log *slog.Logger

	mu     sync.Mutex
	socks  map[netip.Addr]*endpoint
	closed bool
	gone   map[netip.Addr]*[numEndpointDrops]uint64 // counters of closed sockets
}

// NewEndpoints returns an empty set of sockets. A nil log discards.
func NewEndpoints(log *slog.Logger) *Endpoints {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Endpoints{log: log, socks: map[netip.Addr]*endpoint{}, gone: map[netip.Addr]*[numEndpointDrops]uint64{}}
}

// Close closes every socket still open. It is idempotent.
func (e *Endpoints) Close() error {
	e.mu.Lock()
	e.closed = true
	socks := e.socks
	e.socks = map[netip.Addr]*endpoint{}
	e.mu.Unlock()
	var errs error
	for _, s := range socks {
		errs = errors.Join(errs, s.close())
	}
	return errs
}

// Endpoint-level drop reasons, in metric label order.
const (
	dropTruncated = iota
	dropMalformed
	dropUnknownSource
	numEndpointDrops
)

var endpointDropNames = [numEndpointDrops]string{"truncated", "malformed", "unknown_source"}

type demuxKey struct {
	remote [4]byte
	hasKey bool
	key    uint32
}

// demux is an immutable snapshot of the tunnels on one socket.
type demux struct {
	byKey    map[demuxKey]*Tunnel
	byRemote map[[4]byte]*Tunnel // any tunnel to that remote, for wrong-key drops
}

type endpoint struct {
	owner *Endpoints
	local netip.Addr
	conn  *net.IPConn
	pc    *ipv4.PacketConn
	refs  int // under owner.mu
	dmx   atomic.Pointer[demux]
	drops [numEndpointDrops]atomic.Uint64
	done  chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// attach registers t on the socket for t's local address, opening it if
// needed (in the calling thread's network namespace).
func (e *Endpoints) attach(t *Tunnel) (*endpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, net.ErrClosed
	}
	ep := e.socks[t.cfg.Local]
	if ep == nil {
		var err error
		if ep, err = e.open(t.cfg.Local); err != nil {
			return nil, err
		}
		e.socks[t.cfg.Local] = ep
	}
	k := t.demuxKey()
	old := ep.dmx.Load()
	if _, dup := old.byKey[k]; dup {
		return nil, fmt.Errorf("another tunnel on %s already receives from %s with this key", t.cfg.Local, t.cfg.Remote)
	}
	next := &demux{byKey: map[demuxKey]*Tunnel{k: t}, byRemote: map[[4]byte]*Tunnel{k.remote: t}}
	for kk, tt := range old.byKey {
		next.byKey[kk] = tt
		next.byRemote[kk.remote] = tt
	}
	t.ep = ep // before the reader can see t
	ep.dmx.Store(next)
	ep.refs++
	return ep, nil
}

// detach removes t; the last tunnel closes the socket.
func (e *Endpoints) detach(ep *endpoint, t *Tunnel) error {
	e.mu.Lock()
	next := &demux{byKey: map[demuxKey]*Tunnel{}, byRemote: map[[4]byte]*Tunnel{}}
	for kk, tt := range ep.dmx.Load().byKey {
		if tt != t {
			next.byKey[kk] = tt
			next.byRemote[kk.remote] = tt
		}
	}
	ep.dmx.Store(next)
	ep.refs--
	last := ep.refs == 0
	if last && e.socks[ep.local] == ep {
		delete(e.socks, ep.local)
		c := e.gone[ep.local]
		if c == nil {
			c = new([numEndpointDrops]uint64)
			e.gone[ep.local] = c
		}
		for i := range c {
			c[i] += ep.drops[i].Load()
		}
	}
	e.mu.Unlock()
	if last {
		return ep.close()
	}
	return nil
}

func (e *Endpoints) open(local netip.Addr) (*endpoint, error) {
	// IP_FREEBIND: the local address may not be on this host yet (an HA
	// pair's virtual address on the standby); packets to it arrive once
	// it is, and IP_HDRINCL sends from it meanwhile.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	// Opening a raw socket never waits: there is nothing to cancel.
	pconn, err := lc.ListenPacket(context.Background(), "ip4:gre", local.String())
	if err != nil {
		return nil, fmt.Errorf("open GRE socket on %s: %w", local, err)
	}
	conn := pconn.(*net.IPConn)
	rc, err := conn.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_HDRINCL, 1)
			if err == nil {
				// A large receive buffer absorbs bursts while the
				// reader is descheduled; FORCE ignores rmem_max as root
				// may. The send buffer stays small: a raw socket learns
				// of a full interface queue only by running out of send
				// buffer (the qdisc drops silently otherwise), so it must
				// fill before the queue does (sndBuf).
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBuf)
			}
		})
		err = errors.Join(err, cerr)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("configure GRE socket on %s: %w", local, err)
	}
	ep := &endpoint{owner: e, local: local, conn: conn, pc: ipv4.NewPacketConn(conn), done: make(chan struct{})}
	ep.dmx.Store(&demux{byKey: map[demuxKey]*Tunnel{}, byRemote: map[[4]byte]*Tunnel{}})
	go ep.readLoop()
	e.log.Info("opened GRE socket", "local", local)
	return ep, nil
}

func (ep *endpoint) close() error {
	ep.closeOnce.Do(func() {
		ep.closeErr = ep.conn.Close()
		<-ep.done
		ep.owner.log.Info("closed GRE socket", "local", ep.local)
	})
	return ep.closeErr
}

// readLoop receives batches, decapsulates them and writes each tunnel's
// share of a batch to its TUN device in one call, so the device can
// coalesce TCP segments (GRO) before the kernel sees them.
func (ep *endpoint) readLoop() {
	defer close(ep.done)
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		// The inner packet is written to the TUN device in place, and
		// coalescing may grow it: every buffer is a full datagram.
		msgs[i].Buffers = [][]byte{make([]byte, bufSize)}
	}
	var pending []*Tunnel
	for {
		for i := range msgs {
			msgs[i].Buffers[0] = msgs[i].Buffers[0][:cap(msgs[i].Buffers[0])]
		}
		n, err := ep.pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			ep.owner.log.Warn("GRE socket read", "local", ep.local, "err", err)
			continue
		}
		dmx := ep.dmx.Load()
		for i := range n {
			if t := ep.receive(dmx, msgs[i].Buffers[0][:msgs[i].N]); t != nil && len(t.rx) == 1 {
				pending = append(pending, t)
			}
		}
		for _, t := range pending {
			t.flushRx()
		}
		pending = pending[:0]
	}
}

// receive parses one datagram, finds its tunnel and queues the inner
// packet on it. It returns the tunnel that queued it, or nil if dropped.
func (ep *endpoint) receive(dmx *demux, b []byte) *Tunnel {
	o, err := parseIPv4(b)
	if err != nil {
		ep.drops[dropTruncated].Add(1)
		return nil
	}
	h, inner, err := Parse(o.payload)
	switch {
	case errors.Is(err, ErrTruncated):
		ep.drops[dropTruncated].Add(1)
		return nil
	case err != nil:
		ep.drops[dropMalformed].Add(1)
		return nil
	}
	t := dmx.byKey[demuxKey{remote: o.src, hasKey: h.HasKey, key: h.Key}]
	if t == nil {
		if t = dmx.byRemote[o.src]; t != nil {
			t.drop(dropWrongKey)
			return nil
		}
		ep.drops[dropUnknownSource].Add(1)
		return nil
	}
	innerOff := cap(b) - cap(inner) // where inner starts in b
	if !t.accept(&h, inner) {
		return nil
	}
	if len(inner) > t.cfg.MTU && t.file != nil {
		// Coalesced by the NIC's GRO: one TSO write (see gro.go). The
		// virtio-net header goes into the outer headers' room.
		if n := superPacket(inner, t.cfg.MTU, b[innerOff-vnetHdrLen:innerOff]); n > 0 {
			t.writeSuper(b[innerOff-vnetHdrLen : innerOff+n])
			return nil
		}
	}
	// The TUN device wants virtioNetHdrLen (10) bytes of headroom in
	// front of the packet; the outer headers (≥ 24 bytes) provide it.
	t.rx = append(t.rx, b[innerOff-tunOffset:innerOff+len(inner)])
	return t
}

// send writes encapsulated packets (outer IPv4 header included) to
// remote, retrying the rest of a batch after a partial write.
func (ep *endpoint) send(msgs []ipv4.Message) (sent int, err error) {
	for sent < len(msgs) {
		n, err := ep.pc.WriteBatch(msgs[sent:], 0)
		if err != nil {
			return sent, err
		}
		sent += n
	}
	return sent, nil
}
