package dns

import (
	"encoding/binary"

	mdns "github.com/miekg/dns"
)

// queryParser parses the common shape of a query (one question with a
// name of letters, digits, '-' and '_', and at most an OPT record
// without options) into a message whose question and OPT live in the
// parser's memory, so that a cache hit does not pay for a general
// unpack. Anything else is left to [mdns.Msg.Unpack]; FuzzQueryParser
// checks that whatever this accepts, Unpack gives the same message for.
// A message parsed here shares the parser's memory until the next parse:
// [queryParser.detach] copies it for a query that outlives that.
type queryParser struct {
	// names interns the names of recent queries, so that a name asked
	// again (what a cache hit is) costs no string. Bounded: cleared when
	// full, so a flood of random names only costs what it did before.
	names    map[string]string
	hdr      [12]byte
	name     [255]byte
	question [1]mdns.Question
	opt      mdns.OPT
	extra    [1]mdns.RR
	// qwire is the question section of the query parse last took, in
	// the caller's buffer (valid as long as that is).
	qwire []byte
}

// maxInterned bounds queryParser.names.
const maxInterned = 4096

// parse fills req from b and reports whether b had the common shape;
// when it reports false, req is to be unpacked in full.
func (p *queryParser) parse(b []byte, req *mdns.Msg) bool {
	if len(b) < 12+1+4 {
		return false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return false
	}
	// The name: plain labels only (no compression, nothing that
	// Unpack would escape), presented as Unpack presents it.
	off, n := 12, 0
	for {
		if off >= len(b) {
			return false
		}
		l := int(b[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(b) || n+l+1 > 254 {
			return false
		}
		for _, c := range b[off : off+l] {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
		n += copy(p.name[n:], b[off:off+l])
		p.name[n] = '.'
		n++
		off += l
	}
	if off+4 > len(b) {
		return false
	}
	q := mdns.Question{Qtype: binary.BigEndian.Uint16(b[off:]), Qclass: binary.BigEndian.Uint16(b[off+2:])}
	off += 4
	qwire := b[12:off]
	switch name, ok := p.names[string(p.name[:n])]; {
	case n == 0:
		q.Name = "."
	case ok:
		q.Name = name
	default:
		q.Name = string(p.name[:n])
		if p.names == nil {
			p.names = make(map[string]string)
		} else if len(p.names) >= maxInterned {
			clear(p.names)
		}
		p.names[q.Name] = q.Name
	}
	var opt *mdns.OPT
	if ar == 1 {
		// An OPT record without options: root name, type, UDP size,
		// extended rcode and flags, zero data length.
		if len(b) != off+11 || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != mdns.TypeOPT || binary.BigEndian.Uint16(b[off+9:]) != 0 {
			return false
		}
		p.opt = mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT,
			Class: binary.BigEndian.Uint16(b[off+3:]), Ttl: binary.BigEndian.Uint32(b[off+5:])}}
		opt = &p.opt
	} else if len(b) != off {
		return false
	}
	// The header as Unpack sets it: unpacking a bare header (no
	// sections) allocates nothing.
	copy(p.hdr[:4], b)
	clear(p.hdr[4:])
	*req = mdns.Msg{}
	if req.Unpack(p.hdr[:]) != nil {
		return false
	}
	p.question[0] = q
	req.Question = p.question[:1:1]
	p.qwire = qwire
	if opt != nil {
		p.extra[0] = opt
		req.Extra = p.extra[:1:1]
		req.Rcode |= opt.ExtendedRcode()
	}
	return true
}

// detach gives req memory of its own if it shares the parser's.
func (p *queryParser) detach(req *mdns.Msg) {
	if len(req.Question) > 0 && &req.Question[0] == &p.question[0] {
		req.Question = []mdns.Question{req.Question[0]}
	}
	if len(req.Extra) > 0 && &req.Extra[0] == &p.extra[0] {
		o := p.opt
		req.Extra = []mdns.RR{&o}
	}
}
