package gre

import (
	"encoding/binary"
	"math/bits"
)

// A receiving NIC's GRO (Linux's gre_gro_receive, built into kernels
// without ip_gre too) coalesces consecutive TCP segments of one flow inside
// GRE into one large packet before the raw socket sees it: one outer
// header, one inner IP and TCP header, and the payload of up to ~45
// segments, the inner TCP checksum field holding only the pseudo-header sum
// (CHECKSUM_PARTIAL: the kernel verified the segments' checksums before
// merging them). Such a packet is larger than the tunnel MTU and cannot be
// forwarded as it is. It is handed to the TUN device as one TSO super-packet
// with a virtio-net header, so the kernel re-segments it only where it has
// to (or never, for a local socket): one write instead of ~45.

// virtio-net header fields (linux/virtio_net.h).
const (
	vnetHdrLen       = 10
	vnetFlagNeedCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSOTCPv4     = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOTCPv6     = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	vnetGSOECN       = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the segments carry CWR
	tcpFlagCWR       = 0x80
	protoTCP         = 6
)

// superPacket checks whether pkt, a decapsulated inner packet longer than
// the tunnel MTU, is a coalesced TCP packet that can go to the TUN device
// as a TSO super-packet. If so it writes the virtio-net header into vnet
// (vnetHdrLen bytes), leaves the pseudo-header sum in the TCP checksum field
// as NEEDS_CSUM asks, and returns the packet's length (0: not a
// super-packet). Segments are cut at the largest
// size that fits mtu: which size the sender used is lost in coalescing, and
// no segment may exceed the tunnel MTU.
//
// The checksum field must hold either the pseudo-header sum (coalesced by
// GRO, payload verified by the kernel) or a valid full checksum (a packet
// reassembled from fragments); anything else is refused, so a corrupt
// packet is never given a fresh checksum.
func superPacket(pkt []byte, mtu int, vnet []byte) int {
	var ipLen, total int
	var pseudo uint64
	var gso byte
	switch {
	case len(pkt) >= ipv4HeaderLen && pkt[0]>>4 == 4:
		ipLen = int(pkt[0]&0xf) * 4
		total = int(binary.BigEndian.Uint16(pkt[2:]))
		frag := binary.BigEndian.Uint16(pkt[6:]) & 0x3fff // MF and offset
		if pkt[9] != protoTCP || frag != 0 || ipLen < ipv4HeaderLen || total > len(pkt) {
			return 0
		}
		pseudo = sum16(pkt[12:20], 0) + protoTCP + uint64(total-ipLen)
		gso = vnetGSOTCPv4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		ipLen = 40
		total = 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		if pkt[6] != protoTCP || total > len(pkt) {
			return 0 // extension headers: not coalesced by GRO
		}
		pseudo = sum16(pkt[8:40], 0) + protoTCP + uint64(total-ipLen)
		gso = vnetGSOTCPv6
	default:
		return 0
	}
	if total-ipLen < 20 {
		return 0
	}
	tcp := pkt[ipLen:total]
	tcpLen := int(tcp[12]>>4) * 4
	mss := mtu - ipLen - tcpLen
	if tcpLen < 20 || tcpLen > len(tcp) || mss <= 0 || len(tcp)-tcpLen <= mss {
		return 0 // needs no segmentation, or cannot be segmented
	}
	seed := fold(pseudo)
	if got := binary.BigEndian.Uint16(tcp[16:]); got != seed {
		if fold(sum16(tcp, pseudo)) != 0xffff {
			return 0
		}
		binary.BigEndian.PutUint16(tcp[16:], seed)
	}
	if tcp[13]&tcpFlagCWR != 0 {
		gso |= vnetGSOECN
	}
	vnet[0] = vnetFlagNeedCsum
	vnet[1] = gso
	binary.NativeEndian.PutUint16(vnet[2:], uint16(ipLen+tcpLen)) // hdr_len
	binary.NativeEndian.PutUint16(vnet[4:], uint16(mss))          // gso_size
	binary.NativeEndian.PutUint16(vnet[6:], uint16(ipLen))        // csum_start
	binary.NativeEndian.PutUint16(vnet[8:], 16)                   // csum_offset in TCP
	return total
}

// sum16 adds b as big-endian 16-bit words to acc, without folding.
func sum16(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b)>>32, 0)
		acc += carry
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b)&0xffffffff, 0)
		acc += carry
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces a one's-complement sum to 16 bits (not complemented).
func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
