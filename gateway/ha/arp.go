package ha

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// arpPacket is the part of an Ethernet/IPv4 ARP packet the split-brain
// probe reads.
type arpPacket struct {
	op       uint16
	sha      net.HardwareAddr
	spa, tpa netip.Addr
}

const (
	arpRequest = 1
	arpReply   = 2
	arpLen     = 28
)

// parseARP reads an Ethernet/IPv4 ARP packet (without its link header):
// the probe's replies, and anything else a peer on the link sends.
func parseARP(b []byte) (arpPacket, bool) {
	if len(b) < arpLen {
		return arpPacket{}, false
	}
	if binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != unix.ETH_P_IP || b[4] != 6 || b[5] != 4 {
		return arpPacket{}, false
	}
	p := arpPacket{op: binary.BigEndian.Uint16(b[6:8]), sha: net.HardwareAddr(bytes.Clone(b[8:14]))}
	p.spa = netip.AddrFrom4([4]byte(b[14:18]))
	p.tpa = netip.AddrFrom4([4]byte(b[24:28]))
	if p.op != arpRequest && p.op != arpReply {
		return arpPacket{}, false
	}
	return p, true
}

// arpProbe builds an RFC 5227 probe for ip from mac: sender address
// 0.0.0.0, so no neighbour learns anything from it, and every host that
// holds ip answers.
func arpProbe(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:2], 1)
	binary.BigEndian.PutUint16(b[2:4], unix.ETH_P_IP)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], arpRequest)
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[24:28], a[:])
	return b
}

// othersHolding sends an ARP probe for ip on ifname and returns the
// hardware addresses other than the interface's own that claim ip within
// wait: replies to the probe, and the other node's gratuitous ARPs. It
// runs in the node's network namespace.
func othersHolding(ifname string, ip netip.Addr, wait time.Duration) ([]net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("arp probe on %q: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("arp probe on %q: not an Ethernet interface", ifname)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("arp probe: packet socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("arp probe: bind to %q: %w", ifname, err)
	}
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, arpProbe(ifi.HardwareAddr, ip), 0, to); err != nil {
		return nil, fmt.Errorf("arp probe: send on %q: %w", ifname, err)
	}
	var seen []net.HardwareAddr
	buf := make([]byte, 128)
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return seen, nil
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, fmt.Errorf("arp probe: %w", err)
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("arp probe: receive on %q: %w", ifname, err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p, ok := parseARP(buf[:n])
		if !ok || p.spa != ip || bytes.Equal(p.sha, ifi.HardwareAddr) {
			continue
		}
		if !containsMAC(seen, p.sha) {
			seen = append(seen, p.sha)
		}
	}
}

func containsMAC(s []net.HardwareAddr, m net.HardwareAddr) bool {
	for _, x := range s {
		if bytes.Equal(x, m) {
			return true
		}
	}
	return false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// vrrpProto is VRRP's IP protocol number.
const vrrpProto = 112

// vrrpFilter passes IPv4 packets carrying VRRP (the socket is cooked, so
// the IP header is at offset 0).
var vrrpFilter = func() []bpf.RawInstruction {
	raw, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: vrrpProto, SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(err)
	}
	return raw
}()

// advertListener sees the VRRP adverts that reach the sync link: a node
// that yielded after a split brain learns from them that the link works
// again. It does not take part in VRRP; keepalived does.
type advertListener struct {
	fd   int
	peer netip.Addr
}

// listenAdverts opens the listener on ifname; it runs in the node's
// network namespace.
func listenAdverts(ifname string, peer netip.Addr) (*advertListener, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrp listener on %q: %w", ifname, err)
	}
	proto := htons(unix.ETH_P_IP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto))
	if err != nil {
		return nil, fmt.Errorf("vrrp listener: packet socket: %w", err)
	}
	filter := make([]unix.SockFilter, len(vrrpFilter))
	for i, ins := range vrrpFilter {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	err = unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vrrp listener on %q: %w", ifname, err)
	}
	return &advertListener{fd: fd, peer: peer}, nil
}

// fromPeer drains what arrived since the last call and tells whether an
// advert from the peer was among it.
func (l *advertListener) fromPeer() bool {
	buf := make([]byte, 128)
	seen := false
	for {
		n, from, err := unix.Recvfrom(l.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return seen
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if src, ok := vrrpSource(buf[:n]); ok && src == l.peer {
			seen = true
		}
	}
}

// vrrpSource returns the source of an IPv4 packet carrying VRRP.
func vrrpSource(b []byte) (netip.Addr, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || int(b[0]&0x0f)*4 < 20 || b[9] != vrrpProto {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(b[12:16])), true
}

func (l *advertListener) close() error { return unix.Close(l.fd) }
