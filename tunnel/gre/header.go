package gre

import (
	"encoding/binary"
	"errors"
)

// GRE header flag bits (RFC 2784 section 2, RFC 2890 section 2).
const (
	flagChecksum = 0x8000 // C: checksum and reserved1 present
	flagRouting  = 0x4000 // R: RFC 1701 routing, not supported
	flagKey      = 0x2000 // K: key present (RFC 2890)
	flagSequence = 0x1000 // S: sequence number present (RFC 2890)
	flagStrict   = 0x0800 // s: RFC 1701 strict source route, not supported
	maskRecur    = 0x0700 // RFC 1701 recursion control, not supported
	maskVersion  = 0x0007 // must be 0

	// ProtoIPv4 and ProtoIPv6 are the EtherTypes GRE carries here.
	ProtoIPv4 = 0x0800
	ProtoIPv6 = 0x86dd

	// MaxHeaderLen is the longest GRE header: flags, checksum, key and
	// sequence number.
	MaxHeaderLen = 16
	// Overhead is what GRE over IPv4 without options adds to a packet:
	// 20 bytes of IPv4 and 4 of GRE, so a 1500-byte path carries 1476.
	Overhead = 24
)

// Header is a parsed GRE header. Only version 0 with the optional
// checksum, key and sequence number fields is understood.
type Header struct {
	Proto       uint16 // EtherType of the payload
	HasChecksum bool
	HasKey      bool
	Key         uint32
	HasSequence bool
	Sequence    uint32
}

// Errors returned by [Parse]; each names a drop reason.
var (
	ErrTruncated   = errors.New("gre: truncated header")
	ErrVersion     = errors.New("gre: version is not 0")
	ErrUnsupported = errors.New("gre: RFC 1701 routing or recursion bits set")
	ErrChecksum    = errors.New("gre: bad checksum")
	ErrProtocol    = errors.New("gre: payload is neither IPv4 nor IPv6")
)

// Len is the encoded length of h.
func (h *Header) Len() int {
	n := 4
	if h.HasChecksum {
		n += 4
	}
	if h.HasKey {
		n += 4
	}
	if h.HasSequence {
		n += 4
	}
	return n
}

// Parse decodes the GRE header at the start of b and returns it with the
// payload that follows. A present checksum is verified over b whole, so b
// must end where the GRE packet ends. Receivers discard packets with the
// RFC 1701 routing, strict-route or recursion bits set, as RFC 2784
// section 2.5.1 asks; reserved flag bits 6-12 are ignored.
func Parse(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < 4 {
		return h, nil, ErrTruncated
	}
	flags := binary.BigEndian.Uint16(b)
	h.Proto = binary.BigEndian.Uint16(b[2:])
	if flags&maskVersion != 0 {
		return h, nil, ErrVersion
	}
	if flags&(flagRouting|flagStrict|maskRecur) != 0 {
		return h, nil, ErrUnsupported
	}
	h.HasChecksum = flags&flagChecksum != 0
	h.HasKey = flags&flagKey != 0
	h.HasSequence = flags&flagSequence != 0
	n := h.Len()
	if len(b) < n {
		return h, nil, ErrTruncated
	}
	off := 4
	if h.HasChecksum {
		if checksum(b) != 0 {
			return h, nil, ErrChecksum
		}
		off += 4
	}
	if h.HasKey {
		h.Key = binary.BigEndian.Uint32(b[off:])
		off += 4
	}
	if h.HasSequence {
		h.Sequence = binary.BigEndian.Uint32(b[off:])
	}
	if h.Proto != ProtoIPv4 && h.Proto != ProtoIPv6 {
		return h, nil, ErrProtocol
	}
	return h, b[n:], nil
}

// Put writes h into b[:h.Len()]. If h has a checksum, the payload must
// already follow the header in b, and b must end where the packet ends.
func (h *Header) Put(b []byte) {
	var flags uint16
	if h.HasChecksum {
		flags |= flagChecksum
	}
	if h.HasKey {
		flags |= flagKey
	}
	if h.HasSequence {
		flags |= flagSequence
	}
	binary.BigEndian.PutUint16(b, flags)
	binary.BigEndian.PutUint16(b[2:], h.Proto)
	off := 4
	if h.HasChecksum {
		binary.BigEndian.PutUint32(b[off:], 0)
		off += 4
	}
	if h.HasKey {
		binary.BigEndian.PutUint32(b[off:], h.Key)
		off += 4
	}
	if h.HasSequence {
		binary.BigEndian.PutUint32(b[off:], h.Sequence)
	}
	if h.HasChecksum {
		binary.BigEndian.PutUint16(b[4:], checksum(b))
	}
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// seqAfter reports whether sequence number a comes after b in serial
// number arithmetic (RFC 1982), as RFC 2890 section 2.2 asks receivers
// to compare them.
func seqAfter(a, b uint32) bool {
	return a != b && int32(a-b) > 0
}

// ipv4Header is the outer header of an encapsulated packet.
const ipv4HeaderLen = 20

// putIPv4 writes a 20-byte IPv4 header for a GRE packet of total length
// total. The kernel fills in the identification and checksum of a raw
// IP_HDRINCL socket when they are zero.
func putIPv4(b []byte, total int, ttl uint8, src, dst [4]byte) {
	b[0] = 0x45
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:], uint16(total))
	binary.BigEndian.PutUint32(b[4:], 0) // id, flags (DF clear), fragment offset
	b[8] = ttl
	b[9] = 47 // IPPROTO_GRE
	b[10], b[11] = 0, 0
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
}

// outer is a parsed outer IPv4 header of a received GRE packet.
type outer struct {
	src, dst [4]byte
	payload  []byte // the GRE packet
}

// parseIPv4 decodes the outer IPv4 header the raw socket delivers.
func parseIPv4(b []byte) (outer, error) {
	var o outer
	if len(b) < ipv4HeaderLen || b[0]>>4 != 4 {
		return o, ErrTruncated
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < ipv4HeaderLen || total < ihl || len(b) < total {
		return o, ErrTruncated
	}
	copy(o.src[:], b[12:16])
	copy(o.dst[:], b[16:20])
	o.payload = b[ihl:total]
	return o, nil
}

// seqWindowSize is how far behind the newest sequence number a packet may
// arrive and still be accepted (once): enough for the reordering of
// multipath routes on the way, small enough that a replayed packet is
// refused.
const seqWindowSize = 64

// seqWindow is a receiver's record of the RFC 2890 sequence numbers it has
// accepted: the newest, and which of the seqWindowSize before it arrived.
// RFC 2890 (section 2.2) lets a receiver drop out-of-order packets or
// hold them; this accepts each number once as long as it is within the
// window, as IPsec's anti-replay window does (RFC 4303 section 3.4.3).
type seqWindow struct {
	top   uint32 // the newest accepted
	seen  uint64 // bit i: top-i was accepted
	valid bool   // something was accepted
}

// seqVerdict is what a window says of a sequence number.
type seqVerdict int

const (
	seqAccept   seqVerdict = iota
	seqTooOld              // seqWindowSize or more behind the newest
	seqReplayed            // within the window, but accepted before
)

// check records seq if the window accepts it and says why not otherwise.
// Numbers compare in serial number arithmetic (RFC 1982), so the counter
// wraps around.
func (w *seqWindow) check(seq uint32) seqVerdict {
	if !w.valid {
		w.top, w.seen, w.valid = seq, 1, true
		return seqAccept
	}
	if seqAfter(seq, w.top) {
		if d := seq - w.top; d < seqWindowSize {
			w.seen = w.seen<<d | 1
		} else {
			w.seen = 1
		}
		w.top = seq
		return seqAccept
	}
	back := w.top - seq
	switch {
	case back >= seqWindowSize:
		return seqTooOld
	case w.seen&(1<<back) != 0:
		return seqReplayed
	}
	w.seen |= 1 << back
	return seqAccept
}
