package ipsec

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// prober carries health-check probes for every tunnel. Probes cannot be
// written into the device as GRE's are (charon owns the TUN; an xfrm
// interface has no packet socket path into ESP): they are sent through a
// raw IP socket to the far end of the tunnel address, which the kernel
// routes into the tunnel's device (the address's connected route), where
// the tunnel's child SA picks them up. Answers come back decrypted
// through the device to the local stack and are read from a raw ICMP
// socket.
//
// That socket sees every ICMP packet the namespace receives, from any
// interface, so each comes with the interface it arrived on (IP_PKTINFO)
// and goes only to the handlers of the tunnels that device carries: an
// echo reply forged on the WAN with the tunnel's addresses never counts
// as an answer through the tunnel.
type prober struct {
	log     *slog.Logger
	send    int // AF_INET, SOCK_RAW, IPPROTO_RAW (IP_HDRINCL)
	recv    *os.File
	up      atomic.Bool             // the device exists: without it a probe would leave unencrypted by another route
	ifindex func(tunnel string) int // the interface index of the tunnel's device, 0 if none
	wrongIf atomic.Uint64           // ICMP packets that arrived on no tunnel's device

	mu       sync.Mutex
	handlers map[string]func([]byte) bool
}

func newProber(log *slog.Logger, ifindex func(tunnel string) int) (*prober, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("health-check socket: %w", err)
	}
	r, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
	if err != nil {
		unix.Close(s)
		return nil, fmt.Errorf("health-check socket: %w", err)
	}
	if err := unix.SetsockoptInt(r, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		unix.Close(s)
		unix.Close(r)
		return nil, fmt.Errorf("health-check socket: IP_PKTINFO: %w", err)
	}
	return &prober{log: log, send: s, recv: os.NewFile(uintptr(r), "ipsec-icmp"), ifindex: ifindex,
		handlers: map[string]func([]byte) bool{}}, nil
}

func (p *prober) setUp(up bool) { p.up.Store(up) }

// run reads ICMP until close.
func (p *prober) run() {
	rc, err := p.recv.SyscallConn()
	if err != nil {
		p.log.Error("health-check socket", "err", err)
		return
	}
	buf := make([]byte, 2048)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	for {
		var n, oobn int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			// The socket was closed (RawConn says so with poll's own
			// error, not os.ErrClosed); nothing else fails a raw read.
			return
		}
		if rerr != nil {
			continue
		}
		p.dispatch(buf[:n], arrivalIndex(oob[:oobn]))
	}
}

// dispatch hands pkt, which arrived on interface ifindex, to the handler
// of a tunnel carried by that interface until one consumes it.
func (p *prober) dispatch(pkt []byte, ifindex int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	matched := false
	for name, h := range p.handlers {
		if ifindex == 0 || p.ifindex(name) != ifindex {
			continue
		}
		matched = true
		if h(pkt) {
			return
		}
	}
	if !matched && len(p.handlers) > 0 {
		p.wrongIf.Add(1)
	}
}

// arrivalIndex reads the interface index from an IP_PKTINFO control
// message; 0 if there is none.
func arrivalIndex(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo {
			return int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return 0
}

func (p *prober) close() {
	p.recv.Close()
	unix.Close(p.send)
}

// Path is one tunnel's health-check path (a health.Path).
type Path struct {
	p    *prober
	name string
	dev  func(name string) string
}

// Path returns the health-check path of the named tunnel.
func (e *Engine) Path(name string) *Path { return &Path{p: e.probe, name: name, dev: e.Device} }

// Inject sends an IPv4 packet (a probe) into the tunnel.
func (t *Path) Inject(pkt []byte) error {
	if !t.p.up.Load() {
		return fmt.Errorf("tunnel %q: charon is not running", t.name)
	}
	if t.dev(t.name) == "" {
		// Without the tunnel's device the probe would leave in the clear
		// by another route.
		return fmt.Errorf("tunnel %q: no device", t.name)
	}
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return fmt.Errorf("tunnel %q: not an IPv4 packet", t.name)
	}
	dst, _ := netip.AddrFromSlice(pkt[16:20])
	sa := &unix.SockaddrInet4{Addr: dst.As4()}
	if err := unix.Sendto(t.p.send, pkt, 0, sa); err != nil {
		return fmt.Errorf("tunnel %q: send probe to %s: %w", t.name, dst, err)
	}
	return nil
}

// SetProbeHandler installs f for packets arriving through the tunnels;
// nil removes it.
func (t *Path) SetProbeHandler(f func(pkt []byte) bool) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	if f == nil {
		delete(t.p.handlers, t.name)
		return
	}
	t.p.handlers[t.name] = f
}
