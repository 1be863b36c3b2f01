package netflow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Packet is what the decoder read from a sampled packet: the IP header and
// the transport header after it. For a GRE packet that carries IPv4 or
// IPv6, the IP and transport fields describe the inner packet (the traffic
// the tunnel carries), the GRE fields the GRE header, and Outer the outer
// IP header. Fields of headers that were absent or cut off by the copy
// range are left zero and their Has… flag false.
type Packet struct {
	IP    IPHeader
	Outer *IPHeader // the outer header of a GRE-encapsulated packet, else nil

	HasGRE bool
	GRE    GREHeader

	HasPorts         bool // TCP or UDP ports were read
	SrcPort, DstPort uint16

	HasTCP bool
	TCP    TCPHeader

	HasUDP bool
	UDP    UDPHeader

	HasICMP bool
	ICMP    ICMPHeader
}

// IPHeader is an IPv4 or IPv6 header.
type IPHeader struct {
	Version      uint8 // 4 or 6
	Src, Dst     netip.Addr
	Protocol     uint8 // IPv4 protocol, or IPv6 next header after the extension headers
	TotalLength  uint16
	TTL          uint8  // IPv4 TTL or IPv6 hop limit
	HeaderLength uint16 // bytes, including IPv6 extension headers
	DSCP, ECN    uint8
	// IPv4 only.
	Identification uint16
	DontFragment   bool
	MoreFragments  bool
	FragmentOffset uint16 // in 8-byte units, as on the wire
	Checksum       uint16
	// IPv6 only.
	FlowLabel uint32
	// Fragment is true for an IPv4 fragment other than the first, or an
	// IPv6 fragment header with a non-zero offset: no transport header.
	Fragment bool
}

// GREHeader is an RFC 2784/2890 GRE header.
type GREHeader struct {
	Version      uint8
	EtherType    uint16
	HeaderLength uint16 // bytes
	Checksum     uint16 // 0 unless the C bit is set
	Key          uint32 // 0 unless the K bit is set
	Sequence     uint32 // 0 unless the S bit is set
	HasKey       bool
	HasSequence  bool
	HasChecksum  bool
}

// TCPHeader is the part of a TCP header that records carry.
type TCPHeader struct {
	Seq, Ack   uint32
	DataOffset uint8 // in 32-bit words, as on the wire
	Flags      uint8 // CWR ECE URG ACK PSH RST SYN FIN, high bit first
	Window     uint16
	Checksum   uint16
	Urgent     uint16
	// Options, when present.
	MSS           uint16
	WindowScale   uint8
	SACKPermitted bool
	TSVal, TSEcr  uint32
	HasMSS        bool
	HasWScale     bool
	HasTimestamps bool
}

// UDPHeader is a UDP header.
type UDPHeader struct {
	Length   uint16
	Checksum uint16
}

// ICMPHeader is an ICMP or ICMPv6 header.
type ICMPHeader struct {
	Type, Code uint8
	Checksum   uint16
}

// Errors the decoder returns; each sample that fails is counted by reason.
var (
	ErrTruncated   = errors.New("truncated header")
	ErrBadVersion  = errors.New("not an IPv4 or IPv6 packet")
	ErrBadHeader   = errors.New("malformed header")
	ErrNestedGRE   = errors.New("GRE inside GRE")
	ErrEmptyPacket = errors.New("empty packet")
)

// IP protocol numbers the decoder knows.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoGRE    = 47
	protoICMPv6 = 58
)

// DecodePacket reads an IP packet (network header onward, as NFLOG copies
// it) into p. It never reads outside b. An error means the IP header itself
// is unusable; a transport header cut off by the copy range is not an
// error (its Has… flag stays false).
func DecodePacket(b []byte, p *Packet) error {
	*p = Packet{}
	if len(b) == 0 {
		return ErrEmptyPacket
	}
	payload, err := decodeIP(b, &p.IP)
	if err != nil {
		return err
	}
	if p.IP.Protocol == protoGRE && !p.IP.Fragment {
		inner, ok, err := decodeGRE(payload, &p.GRE)
		if err != nil {
			return fmt.Errorf("GRE: %w", err)
		}
		p.HasGRE = true
		if ok && len(inner) > 0 {
			var in IPHeader
			rest, err := decodeIP(inner, &in)
			if err == nil {
				if in.Protocol == protoGRE {
					return ErrNestedGRE
				}
				outer := p.IP
				p.Outer = &outer
				p.IP = in
				payload = rest
			} else if !errors.Is(err, ErrTruncated) {
				return fmt.Errorf("GRE inner packet: %w", err)
			} else {
				payload = nil // the inner header was cut off: report the outer one
			}
		} else {
			payload = nil
		}
	}
	if p.IP.Fragment || payload == nil {
		return nil
	}
	decodeTransport(p, payload)
	return nil
}

// decodeIP reads an IPv4 or IPv6 header and returns the bytes after it
// (possibly fewer than the header says, if the copy was cut short).
func decodeIP(b []byte, h *IPHeader) ([]byte, error) {
	if len(b) < 1 {
		return nil, ErrTruncated
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return nil, ErrTruncated
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 {
			return nil, fmt.Errorf("%w: IPv4 header length %d", ErrBadHeader, ihl)
		}
		if len(b) < ihl {
			return nil, ErrTruncated
		}
		tl := binary.BigEndian.Uint16(b[2:4])
		if int(tl) < ihl {
			return nil, fmt.Errorf("%w: IPv4 total length %d below header length %d", ErrBadHeader, tl, ihl)
		}
		frag := binary.BigEndian.Uint16(b[6:8])
		*h = IPHeader{
			Version:        4,
			Src:            netip.AddrFrom4([4]byte(b[12:16])),
			Dst:            netip.AddrFrom4([4]byte(b[16:20])),
			Protocol:       b[9],
			TotalLength:    tl,
			TTL:            b[8],
			HeaderLength:   uint16(ihl),
			DSCP:           b[1] >> 2,
			ECN:            b[1] & 3,
			Identification: binary.BigEndian.Uint16(b[4:6]),
			DontFragment:   frag&0x4000 != 0,
			MoreFragments:  frag&0x2000 != 0,
			FragmentOffset: frag & 0x1fff,
			Checksum:       binary.BigEndian.Uint16(b[10:12]),
		}
		h.Fragment = h.FragmentOffset != 0
		end := min(len(b), int(tl))
		return b[ihl:end], nil
	case 6:
		if len(b) < 40 {
			return nil, ErrTruncated
		}
		vtf := binary.BigEndian.Uint32(b[0:4])
		pl := binary.BigEndian.Uint16(b[4:6])
		*h = IPHeader{
			Version:     6,
			Src:         netip.AddrFrom16([16]byte(b[8:24])),
			Dst:         netip.AddrFrom16([16]byte(b[24:40])),
			TotalLength: pl + 40, // jumbograms (payload length 0) are not forwarded here
			TTL:         b[7],
			DSCP:        uint8(vtf>>22) & 0x3f,
			ECN:         uint8(vtf>>20) & 3,
			FlowLabel:   vtf & 0xfffff,
		}
		if pl > 0xffff-40 {
			h.TotalLength = 0xffff
		}
		next, off := b[6], 40
		end := min(len(b), 40+int(pl))
		// Walk the extension headers to the transport header.
		for range 8 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if end < off+2 {
					h.Protocol, h.HeaderLength = next, uint16(off)
					return nil, nil
				}
				n := int(b[off+1])*8 + 8
				next, off = b[off], off+n
			case 44: // fragment
				if end < off+8 {
					h.Protocol, h.HeaderLength = next, uint16(off)
					return nil, nil
				}
				if binary.BigEndian.Uint16(b[off+2:off+4])>>3 != 0 {
					h.Fragment = true
				}
				next, off = b[off], off+8
			default:
				h.Protocol, h.HeaderLength = next, uint16(off)
				if off > end {
					return nil, nil
				}
				return b[off:end], nil
			}
		}
		return nil, fmt.Errorf("%w: more than 8 IPv6 extension headers", ErrBadHeader)
	}
	return nil, ErrBadVersion
}

// decodeGRE reads a GRE header and returns its payload and whether that is
// an IPv4 or IPv6 packet.
func decodeGRE(b []byte, g *GREHeader) ([]byte, bool, error) {
	if len(b) < 4 {
		return nil, false, ErrTruncated
	}
	flags := binary.BigEndian.Uint16(b[0:2])
	*g = GREHeader{Version: uint8(flags & 7), EtherType: binary.BigEndian.Uint16(b[2:4]),
		HasChecksum: flags&0x8000 != 0, HasKey: flags&0x2000 != 0, HasSequence: flags&0x1000 != 0}
	if flags&0x4000 != 0 {
		return nil, false, fmt.Errorf("%w: GRE routing (RFC 1701) is not supported", ErrBadHeader)
	}
	n := 4
	if g.HasChecksum {
		if len(b) < n+4 {
			return nil, false, ErrTruncated
		}
		g.Checksum = binary.BigEndian.Uint16(b[n : n+2])
		n += 4
	}
	if g.HasKey {
		if len(b) < n+4 {
			return nil, false, ErrTruncated
		}
		g.Key = binary.BigEndian.Uint32(b[n : n+4])
		n += 4
	}
	if g.HasSequence {
		if len(b) < n+4 {
			return nil, false, ErrTruncated
		}
		g.Sequence = binary.BigEndian.Uint32(b[n : n+4])
		n += 4
	}
	g.HeaderLength = uint16(n)
	ip := g.Version == 0 && (g.EtherType == 0x0800 || g.EtherType == 0x86dd)
	return b[n:], ip, nil
}

// decodeTransport reads the TCP, UDP or ICMP header at the start of b, as
// far as b goes.
func decodeTransport(p *Packet, b []byte) {
	switch p.IP.Protocol {
	case protoTCP:
		if len(b) >= 4 {
			p.HasPorts = true
			p.SrcPort, p.DstPort = binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4])
		}
		if len(b) < 20 {
			return
		}
		t := &p.TCP
		p.HasTCP = true
		*t = TCPHeader{Seq: binary.BigEndian.Uint32(b[4:8]), Ack: binary.BigEndian.Uint32(b[8:12]),
			DataOffset: b[12] >> 4, Flags: b[13], Window: binary.BigEndian.Uint16(b[14:16]),
			Checksum: binary.BigEndian.Uint16(b[16:18]), Urgent: binary.BigEndian.Uint16(b[18:20])}
		end := min(len(b), int(t.DataOffset)*4)
		decodeTCPOptions(t, b[20:max(end, 20)])
	case protoUDP:
		if len(b) >= 4 {
			p.HasPorts = true
			p.SrcPort, p.DstPort = binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4])
		}
		if len(b) >= 8 {
			p.HasUDP = true
			p.UDP = UDPHeader{Length: binary.BigEndian.Uint16(b[4:6]), Checksum: binary.BigEndian.Uint16(b[6:8])}
		}
	case protoICMP, protoICMPv6:
		if (p.IP.Protocol == protoICMP) != (p.IP.Version == 4) {
			return // ICMPv4 in IPv6 or ICMPv6 in IPv4 is not ICMP to anyone
		}
		if len(b) >= 4 {
			p.HasICMP = true
			p.ICMP = ICMPHeader{Type: b[0], Code: b[1], Checksum: binary.BigEndian.Uint16(b[2:4])}
		}
	}
}

// decodeTCPOptions reads MSS, window scale, SACK-permitted and timestamps;
// it stops at the first malformed option.
func decodeTCPOptions(t *TCPHeader, b []byte) {
	for len(b) > 0 {
		kind := b[0]
		switch kind {
		case 0: // end of options
			return
		case 1: // no-op
			b = b[1:]
			continue
		}
		if len(b) < 2 || b[1] < 2 || int(b[1]) > len(b) {
			return
		}
		opt := b[:b[1]]
		switch {
		case kind == 2 && len(opt) == 4:
			t.MSS, t.HasMSS = binary.BigEndian.Uint16(opt[2:4]), true
		case kind == 3 && len(opt) == 3:
			t.WindowScale, t.HasWScale = opt[2], true
		case kind == 4 && len(opt) == 2:
			t.SACKPermitted = true
		case kind == 8 && len(opt) == 10:
			t.TSVal, t.TSEcr, t.HasTimestamps = binary.BigEndian.Uint32(opt[2:6]), binary.BigEndian.Uint32(opt[6:10]), true
		}
		b = b[len(opt):]
	}
}

// TCP flag bits.
const (
	tcpFIN = 1 << iota
	tcpSYN
	tcpRST
	tcpPSH
	tcpACK
	tcpURG
	tcpECE
	tcpCWR
)

// TCPFlagsString names the set flags, lowest bit first: F S R P A U E C,
// e.g. "SA" for SYN+ACK and "PA" for PSH+ACK; "" for none.
func TCPFlagsString(flags uint8) string {
	const letters = "FSRPAUEC"
	var buf [8]byte
	n := 0
	for i := range 8 {
		if flags&(1<<i) != 0 {
			buf[n] = letters[i]
			n++
		}
	}
	return string(buf[:n])
}

// ProtocolName is the lower-case IANA keyword of an IP protocol number, or
// "" for one without a well-known name.
func ProtocolName(p uint8) string {
	switch p {
	case protoICMP:
		return "icmp"
	case 2:
		return "igmp"
	case 4:
		return "ipip"
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case 41:
		return "ipv6"
	case protoGRE:
		return "gre"
	case 50:
		return "esp"
	case 51:
		return "ah"
	case protoICMPv6:
		return "icmpv6"
	case 89:
		return "ospf"
	case 132:
		return "sctp"
	}
	return ""
}
