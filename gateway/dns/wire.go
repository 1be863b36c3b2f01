package dns

import (
	"encoding/binary"

	mdns "github.com/miekg/dns"
)

// The wire fast path. A cached answer that a UDP reader sends as it was
// cached (no policy rewrote it, no Extended DNS Error, nothing stale)
// and that fits the client's size is the query's question, the cached
// sections and edgegw's OPT record. Packing its records one by one was
// a quarter of a cache hit's time in the reader (BenchmarkCacheHitPath),
// so the sections' wire form is kept with the records they came from
// (agedRRs.packed, once per entry and second) and such an answer is
// made by writing the header, copying the question as received and the
// sections, and writing the OPT record. It gives the bytes PackBuffer
// gives for the same message (TestWireAnswerMatchesPack); anything the
// checks below do not recognise is packed as before.

// fitsWire reports whether out, the answer to q, is one the fast path
// makes, fitting size, and if so sets q.wire.
func (s *Server) fitsWire(q *query, out *mdns.Msg, size int) bool {
	a := q.rrs
	if len(q.ede) > 0 || out.Rcode < 0 || out.Rcode > 0xF || len(out.Question) != 1 ||
		!sameRRs(out.Answer, a.answer) || !sameRRs(out.Ns, a.ns) {
		return false
	}
	extra, optLen := out.Extra, 0
	if q.opt != nil {
		// finish added the reader's OPT record, without options.
		if len(extra) != len(a.extra)+1 || extra[len(extra)-1] != mdns.RR(&q.sc.opt) || len(q.sc.opt.Option) != 0 {
			return false
		}
		extra, optLen = extra[:len(extra)-1], 11
	}
	if !sameRRs(extra, a.extra) {
		return false
	}
	w := a.packed()
	if w == nil || 12+len(q.qwire)+len(w)+optLen > size {
		return false
	}
	q.wire = w
	return true
}

// sameRRs reports whether got holds exactly the records of want.
func sameRRs(got, want []mdns.RR) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// packWire appends out, an answer fitsWire accepted for q, to buf.
func packWire(q *query, out *mdns.Msg, buf []byte) []byte {
	bits := uint16(out.Opcode)<<11 | uint16(out.Rcode&0xF) |
		bit(out.Response, 1<<15) | bit(out.Authoritative, 1<<10) | bit(out.Truncated, 1<<9) |
		bit(out.RecursionDesired, 1<<8) | bit(out.RecursionAvailable, 1<<7) | bit(out.Zero, 1<<6) |
		bit(out.AuthenticatedData, 1<<5) | bit(out.CheckingDisabled, 1<<4)
	b := binary.BigEndian.AppendUint16(buf, out.Id)
	b = binary.BigEndian.AppendUint16(b, bits)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(out.Answer)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(out.Ns)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(out.Extra)))
	b = append(b, q.qwire...)
	b = append(b, q.wire...)
	if q.opt != nil {
		o := &q.sc.opt
		o.SetExtendedRcode(uint16(out.Rcode)) // as Pack does
		b = append(b, 0)                      // the root name
		b = binary.BigEndian.AppendUint16(b, mdns.TypeOPT)
		b = binary.BigEndian.AppendUint16(b, o.Hdr.Class)
		b = binary.BigEndian.AppendUint32(b, o.Hdr.Ttl)
		b = binary.BigEndian.AppendUint16(b, 0) // no options
	}
	return b
}

func bit(set bool, b uint16) uint16 {
	if set {
		return b
	}
	return 0
}
