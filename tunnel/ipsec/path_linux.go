package ipsec

import (
	"errors"
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
type prober struct {
	log  *slog.Logger
	send int // AF_INET, SOCK_RAW, IPPROTO_RAW (IP_HDRINCL)
	recv *os.File
	up   atomic.Bool // the device exists: without it a probe would leave unencrypted by another route

	mu       sync.Mutex
	handlers map[string]func([]byte) bool
}

func newProber(log *slog.Logger) (*prober, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("health-check socket: %w", err)
	}
	r, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
	if err != nil {
		unix.Close(s)
		return nil, fmt.Errorf("health-check socket: %w", err)
	}
	return &prober{log: log, send: s, recv: os.NewFile(uintptr(r), "ipsec-icmp"), handlers: map[string]func([]byte) bool{}}, nil
}

func (p *prober) setUp(up bool) { p.up.Store(up) }

// run reads ICMP until close.
func (p *prober) run() {
	buf := make([]byte, 2048)
	for {
		n, err := p.recv.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		for _, h := range p.handlers {
			if h(buf[:n]) {
				break
			}
		}
		p.mu.Unlock()
	}
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
