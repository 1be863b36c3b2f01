package gre

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// Backend is the dataplane that carries a tunnel.
type Backend string

const (
	// BackendAuto uses the kernel's ip_gre where the kernel has it and
	// the userspace dataplane elsewhere.
	BackendAuto Backend = ""
	// BackendUserspace terminates GRE in this process (raw socket and
	// TUN device). On a kernel that also has ip_gre loaded, the kernel
	// answers each GRE packet that matches none of its own tunnels with
	// an ICMP port unreachable, so prefer BackendAuto there.
	BackendUserspace Backend = "userspace"
	// BackendKernel configures an ip_gre interface over netlink; the
	// kernel encapsulates and decapsulates.
	BackendKernel Backend = "kernel"
)

// ErrNoKernelGRE is returned (wrapped) by New with BackendKernel on a
// kernel without ip_gre.
var ErrNoKernelGRE = errors.New("the kernel has no GRE tunnel support (ip_gre)")

// kernelTunnel is the ip_gre dataplane of a Tunnel: the interface, a
// netlink handle in its namespace for counters, and a packet socket on the
// interface through which health checks send (Inject) and see arriving
// ICMP (the probe handler). The kernel routes everything else.
type kernelTunnel struct {
	mu   sync.Mutex // serialises nl
	nl   *netlink.Handle
	sock *os.File // AF_PACKET, SOCK_DGRAM, bound to the interface
	done chan struct{}
}

// openKernel creates the tunnel's ip_gre interface in the calling thread's
// network namespace and configures it like the userspace one.
func (t *Tunnel) openKernel() (err error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	k := &kernelTunnel{nl: h, done: make(chan struct{})}
	link := &netlink.Gretun{
		LinkAttrs: netlink.LinkAttrs{Name: t.cfg.Name, MTU: t.cfg.MTU},
		Local:     t.cfg.Local.AsSlice(),
		Remote:    t.cfg.Remote.AsSlice(),
		Ttl:       uint8(t.cfg.TTL),
		PMtuDisc:  1,
	}
	if t.cfg.Key != nil {
		link.IKey, link.OKey = *t.cfg.Key, *t.cfg.Key
		link.IFlags |= nl.GRE_KEY
		link.OFlags |= nl.GRE_KEY
	}
	if t.cfg.Sequence {
		link.IFlags |= nl.GRE_SEQ
		link.OFlags |= nl.GRE_SEQ
	}
	err = h.LinkAdd(link)
	if errors.Is(err, unix.EEXIST) {
		// An interface of this name left by a crashed edgegw is ours
		// to replace; anything else of that name is not.
		l, lerr := h.LinkByName(t.cfg.Name)
		switch {
		case lerr != nil:
		case l.Type() != "gre":
			err = fmt.Errorf("interface %s exists and is a %s device", t.cfg.Name, l.Type())
		default:
			if err = h.LinkDel(l); err == nil {
				err = h.LinkAdd(link)
			}
		}
	}
	if err != nil {
		h.Close()
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("%w: %w", ErrNoKernelGRE, err)
		}
		return fmt.Errorf("create ip_gre interface: %w", err)
	}
	defer func() {
		if err != nil {
			h.LinkDel(link)
			h.Close()
		}
	}()
	if err := t.configureLink(); err != nil { // sets t.ifindex
		return err
	}
	if k.sock, err = probeSocket(t.ifindex); err != nil {
		return err
	}
	t.kern = k
	go t.kernelProbeLoop()
	return nil
}

// probeFilter passes arriving ICMP packets only: the packet socket must
// not copy the tunnel's traffic to userspace. SOCK_DGRAM on a GRE device
// delivers from the IP header on.
var probeFilter = func() []bpf.RawInstruction {
	raw, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 5},
		bpf.LoadAbsolute{Off: 0, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x45, SkipFalse: 3}, // IPv4 without options
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipFalse: 1}, // ICMP
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(err)
	}
	return raw
}()

// probeSocket opens a packet socket on interface ifindex with probeFilter.
func probeSocket(ifindex int) (*os.File, error) {
	proto := htons(unix.ETH_P_IP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	filter := make([]unix.SockFilter, len(probeFilter))
	for i, ins := range probeFilter {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	err = unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex})
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket on the tunnel interface: %w", err)
	}
	// Packets that arrived between socket and filter: drop them.
	buf := make([]byte, 2048)
	for {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
			break
		}
	}
	return os.NewFile(uintptr(fd), "gre-probe"), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// kernelProbeLoop hands arriving ICMP packets to the probe handler until
// the socket closes. The kernel sees them too: it ignores echo replies
// that no ping socket waits for, which is what health checks receive.
func (t *Tunnel) kernelProbeLoop() {
	defer close(t.kern.done)
	if err := tunnel.ReadProbes(t.kern.sock, t.rxProbe); err != nil {
		t.log.Error("probe socket", "err", err)
	}
}

// rxProbe offers an arriving ICMP packet to the probe handler.
func (t *Tunnel) rxProbe(p []byte) {
	if len(p) < ipv4HeaderLen || p[9] != 1 {
		return
	}
	if f := t.probe.Load(); f != nil {
		(*f)(p)
	}
}

// kernelInject sends an IP packet out of the ip_gre interface.
func (t *Tunnel) kernelInject(pkt []byte) error {
	var proto uint16
	switch {
	case len(pkt) > 0 && pkt[0]>>4 == 4:
		proto = unix.ETH_P_IP
	case len(pkt) > 0 && pkt[0]>>4 == 6:
		proto = unix.ETH_P_IPV6
	default:
		return errors.New("gre: not an IP packet")
	}
	rc, err := t.kern.sock.SyscallConn()
	if err != nil {
		return net.ErrClosed
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), pkt, 0, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: t.ifindex})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return net.ErrClosed
	}
	return serr
}

// closeKernel removes the interface and stops the probe reader.
func (t *Tunnel) closeKernel() error {
	k := t.kern
	err := k.sock.Close()
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	if l, lerr := k.nl.LinkByIndex(t.ifindex); lerr == nil {
		err = errors.Join(err, k.nl.LinkDel(l))
	}
	k.nl.Close()
	k.nl = nil
	return err
}

// kernelCounters are the interface's counters (ip_tunnel counts a bad
// GRE checksum as rx_crc_errors and a sequence number out of order as
// rx_fifo_errors).
type kernelCounters struct {
	rxPackets, rxBytes, txPackets, txBytes uint64
	drops                                  map[string]uint64
}

func (t *Tunnel) kernelCounters() kernelCounters {
	k := t.kern
	k.mu.Lock()
	defer k.mu.Unlock()
	c := kernelCounters{drops: map[string]uint64{}}
	for _, name := range kernelDropNames {
		c.drops[name] = 0
	}
	if k.nl == nil {
		return c
	}
	l, err := k.nl.LinkByIndex(t.ifindex)
	if err != nil || l.Attrs().Statistics == nil {
		return c
	}
	s := l.Attrs().Statistics
	c.rxPackets, c.rxBytes, c.txPackets, c.txBytes = s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes
	c.drops["out_of_order"] = s.RxFifoErrors
	c.drops["malformed"] = s.RxCrcErrors
	c.drops["rx_errors"] = s.RxErrors - min(s.RxErrors, s.RxFifoErrors+s.RxCrcErrors)
	c.drops["rx_dropped"] = s.RxDropped
	c.drops["tx_errors"] = s.TxErrors
	c.drops["tx_dropped"] = s.TxDropped
	return c
}

// kernelDropNames are the drop reasons of a kernel tunnel, in metric order.
var kernelDropNames = []string{"out_of_order", "malformed", "rx_errors", "rx_dropped", "tx_errors", "tx_dropped"}
