package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// pkt describes a test packet. build turns it into IP bytes.
type pkt struct {
	src, dst         netip.Addr
	proto            uint8 // tcp, udp, icmp/icmpv6 or another (no transport header)
	ttl              uint8
	sport, dport     uint16 // tcp, udp
	flags            uint8  // tcp
	icmpType, icmpCd uint8
	opts             int // IPv4 option words (NOPs), 0..2
	payload          int // bytes after the transport header, at least 8
	marker           uint64
}

func csum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// build returns the IP packet.
func (p pkt) build() []byte {
	var l4 []byte
	pl := make([]byte, max(p.payload, 8))
	binary.BigEndian.PutUint64(pl, p.marker)
	switch p.proto {
	case unix.IPPROTO_TCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint32(l4[4:], 1)
		l4[12] = 5 << 4
		l4[13] = p.flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
	case unix.IPPROTO_UDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(pl)))
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		l4 = []byte{p.icmpType, p.icmpCd, 0, 0, 0, 1, 0, 1}
	}
	l4 = append(l4, pl...)
	ckOff := map[uint8]int{unix.IPPROTO_TCP: 16, unix.IPPROTO_UDP: 6, unix.IPPROTO_ICMP: 2, unix.IPPROTO_ICMPV6: 2}
	if off, ok := ckOff[p.proto]; ok {
		var sum uint32
		if p.proto != unix.IPPROTO_ICMP { // pseudo-header
			sum = csum(sum, p.src.AsSlice())
			sum = csum(sum, p.dst.AsSlice())
			sum += uint32(p.proto) + uint32(len(l4))
		}
		binary.BigEndian.PutUint16(l4[off:], fold(csum(sum, l4)))
	}
	if p.src.Is4() {
		hl := 20 + 4*p.opts
		h := make([]byte, hl)
		h[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(h[2:], uint16(hl+len(l4)))
		binary.BigEndian.PutUint16(h[4:], uint16(p.marker))
		h[8], h[9] = p.ttl, p.proto
		copy(h[12:], p.src.AsSlice())
		copy(h[16:], p.dst.AsSlice())
		for i := 20; i < hl; i++ {
			h[i] = 1 // NOP
		}
		binary.BigEndian.PutUint16(h[10:], fold(csum(0, h)))
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6], h[7] = p.proto, p.ttl
	copy(h[8:], p.src.AsSlice())
	copy(h[24:], p.dst.AsSlice())
	return append(h, l4...)
}

// ipLen is ip.len as the rules define it: IPv4 total length, IPv6 payload
// length.
func ipLen(b []byte) uint64 {
	if b[0]>>4 == 4 {
		return uint64(binary.BigEndian.Uint16(b[2:]))
	}
	return uint64(binary.BigEndian.Uint16(b[4:]))
}

// markerOf returns the marker of a packet built by build, if it is one.
func markerOf(b []byte) (uint64, bool) {
	if len(b) < 20 {
		return 0, false
	}
	var hl int
	var proto byte
	switch b[0] >> 4 {
	case 4:
		hl, proto = int(b[0]&0x0f)*4, b[9]
	case 6:
		hl, proto = 40, b[6]
	default:
		return 0, false
	}
	off := hl + map[byte]int{unix.IPPROTO_TCP: 20, unix.IPPROTO_UDP: 8, unix.IPPROTO_ICMP: 8, unix.IPPROTO_ICMPV6: 8}[proto]
	if len(b) < off+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[off:]), true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSock is an AF_PACKET datagram socket on one interface: it sends
// IP packets to a fixed next-hop MAC and receives every IP packet.
type packetSock struct {
	fd      int
	ifindex int
	nextHop net.HardwareAddr
}

// openPacketSock must run inside the interface's namespace.
func openPacketSock(ifname string, nextHop net.HardwareAddr) (*packetSock, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	return &packetSock{fd: fd, ifindex: ifc.Index, nextHop: nextHop}, nil
}

func (s *packetSock) send(b []byte) error {
	proto := uint16(unix.ETH_P_IP)
	if b[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: s.ifindex, Halen: 6}
	copy(sa.Addr[:], s.nextHop)
	for {
		err := unix.Sendto(s.fd, b, 0, sa)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.ENOBUFS) {
			return err
		}
		time.Sleep(time.Millisecond) // the veth queue is full: back off
	}
}

// receive returns the markers of packets seen until quiet passes without
// one, or until the deadline.
func (s *packetSock) receive(quiet time.Duration, deadline time.Time) (map[uint64]int, error) {
	got := map[uint64]int{}
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		tv := unix.NsecToTimeval(quiet.Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, err
		}
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue // the Go runtime's preemption signal; the timeout restarts
		}
		if errors.Is(err, unix.EAGAIN) {
			return got, nil
		}
		if err != nil {
			return nil, err
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if m, ok := markerOf(buf[:n]); ok {
			got[m]++
		}
	}
	return got, fmt.Errorf("receive: deadline passed")
}

func (s *packetSock) Close() error { return unix.Close(s.fd) }
