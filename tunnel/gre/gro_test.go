package gre

import (
	"encoding/binary"
	"testing"
)

// tcpPacket builds an IPv4 (or IPv6) TCP packet with a payload of n bytes
// and a 32-byte TCP header (timestamps), checksum field left zero.
func tcpPacket(v6 bool, n int, flags byte) []byte {
	const tcpLen = 32
	var p []byte
	if v6 {
		p = make([]byte, 40+tcpLen+n)
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(tcpLen+n))
		p[6], p[7] = protoTCP, 64
		p[8+15], p[24+15] = 1, 2 // ::1 -> ::2
	} else {
		p = make([]byte, 20+tcpLen+n)
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[6] = 0x40 // DF
		p[8], p[9] = 64, protoTCP
		copy(p[12:], []byte{10, 200, 1, 0, 10, 200, 1, 1})
	}
	tcp := p[len(p)-tcpLen-n:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	tcp[12] = tcpLen / 4 << 4
	tcp[13] = flags
	for i := range n {
		tcp[tcpLen+i] = byte(i*7 + 3)
	}
	return p
}

// pseudoAndTCP returns the pseudo-header bytes (RFC 793, RFC 8200) and the
// TCP segment of p, for an independent checksum with [checksum].
func pseudoAndTCP(p []byte) (pseudo, tcp []byte) {
	if p[0]>>4 == 6 {
		tcp = p[40:]
		pseudo = append(append([]byte{}, p[8:40]...), 0, 0, 0, 0, 0, 0, 0, protoTCP)
		binary.BigEndian.PutUint32(pseudo[32:], uint32(len(tcp)))
		return pseudo, tcp
	}
	tcp = p[20:]
	pseudo = append(append([]byte{}, p[12:20]...), 0, protoTCP, 0, 0)
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	return pseudo, tcp
}

// withFullChecksum fills in a valid TCP checksum.
func withFullChecksum(p []byte) []byte {
	pseudo, tcp := pseudoAndTCP(p)
	binary.BigEndian.PutUint16(tcp[16:], 0)
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))
	return p
}

// withSeed puts the pseudo-header sum into the checksum field, as the
// kernel's GRO leaves it.
func withSeed(p []byte) []byte {
	pseudo, tcp := pseudoAndTCP(p)
	binary.BigEndian.PutUint16(tcp[16:], ^checksum(pseudo))
	return p
}

func TestSuperPacket(t *testing.T) {
	const mtu = 1476
	corrupt := withFullChecksum(tcpPacket(false, 5000, 0x10))
	corrupt[100] ^= 1
	frag := withSeed(tcpPacket(false, 5000, 0x10))
	frag[6] = 0x20 // MF
	udp := withSeed(tcpPacket(false, 5000, 0x10))
	udp[9] = 17
	for _, tc := range []struct {
		name string
		pkt  []byte
		// want: 0 for refused, else gso type and gso size
		gso  byte
		size uint16
	}{
		{"GRO seed v4", withSeed(tcpPacket(false, 5000, 0x10)), vnetGSOTCPv4, mtu - 20 - 32},
		{"full checksum v4", withFullChecksum(tcpPacket(false, 5000, 0x18)), vnetGSOTCPv4, mtu - 20 - 32},
		{"GRO seed v6", withSeed(tcpPacket(true, 5000, 0x10)), vnetGSOTCPv6, mtu - 40 - 32},
		{"CWR", withSeed(tcpPacket(false, 5000, 0x90)), vnetGSOTCPv4 | vnetGSOECN, mtu - 20 - 32},
		{"corrupt payload", corrupt, 0, 0},
		{"fragment", frag, 0, 0},
		{"UDP", udp, 0, 0},
		{"one segment", withSeed(tcpPacket(false, mtu-20-32, 0x10)), 0, 0},
		{"truncated", withSeed(tcpPacket(false, 5000, 0x10))[:3000], 0, 0},
		{"empty", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vnet := make([]byte, vnetHdrLen)
			n := superPacket(tc.pkt, mtu, vnet)
			if tc.gso == 0 {
				if n != 0 {
					t.Fatalf("accepted (%d bytes, header % x)", n, vnet)
				}
				return
			}
			if n != len(tc.pkt) {
				t.Fatalf("got length %d, want %d", n, len(tc.pkt))
			}
			ipLen := 20
			if tc.pkt[0]>>4 == 6 {
				ipLen = 40
			}
			ne := binary.NativeEndian
			if vnet[0] != vnetFlagNeedCsum || vnet[1] != tc.gso || ne.Uint16(vnet[2:]) != uint16(ipLen+32) ||
				ne.Uint16(vnet[4:]) != tc.size || ne.Uint16(vnet[6:]) != uint16(ipLen) || ne.Uint16(vnet[8:]) != 16 {
				t.Errorf("virtio-net header % x", vnet)
			}
			// What the kernel will do for NEEDS_CSUM: sum from csum_start
			// with the field as the seed must give a valid checksum.
			pseudo, tcp := pseudoAndTCP(tc.pkt)
			if got, want := binary.BigEndian.Uint16(tcp[16:]), ^checksum(pseudo); got != want {
				t.Errorf("checksum field %#04x, want the pseudo-header sum %#04x", got, want)
			}
		})
	}
}

func FuzzSuperPacket(f *testing.F) {
	f.Add(withSeed(tcpPacket(false, 3000, 0x10)), 1476)
	f.Add(withFullChecksum(tcpPacket(true, 3000, 0x10)), 1400)
	f.Add([]byte{0x45, 0, 0, 20}, 576)
	f.Fuzz(func(t *testing.T, pkt []byte, mtu int) {
		vnet := make([]byte, vnetHdrLen)
		n := superPacket(pkt, mtu, vnet)
		if n == 0 {
			return
		}
		ne := binary.NativeEndian
		hdrLen, size := int(ne.Uint16(vnet[2:])), int(ne.Uint16(vnet[4:]))
		if n > len(pkt) || hdrLen >= n || size <= 0 || hdrLen+size > mtu || n-hdrLen <= size {
			t.Fatalf("accepted %d of %d bytes with header len %d, segment %d, mtu %d", n, len(pkt), hdrLen, size, mtu)
		}
	})
}
