package health

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/edgegw/edgegw/tunnel"
)

// replyChecker is a reply-type checker on 10.200.1.0/31 whose probes are
// echo replies from 10.200.1.1 to 10.200.1.0: what comes back through
// the tunnel is the probe itself.
func replyChecker() *Checker {
	return New("t1", tunnel.HealthCheck{Type: "reply", Rate: "high"}, mustPrefix("10.200.1.0/31"), &loopPath{}, Options{})
}

// fixChecksum recomputes the ICMP checksum of IPv4 packet p.
func fixChecksum(p []byte) []byte {
	ihl := int(p[0]&0xf) * 4
	m := p[ihl:binary.BigEndian.Uint16(p[2:])]
	binary.BigEndian.PutUint16(m[2:], 0)
	binary.BigEndian.PutUint16(m[2:], checksum(m))
	return p
}

func TestParseEchoReply(t *testing.T) {
	c := replyChecker()
	good := c.packet(c.id, 7)
	edit := func(f func(p []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		p    []byte
		ok   bool
	}{
		{"the probe", good, true},
		{"padded past the total length", append(append([]byte(nil), good...), 0, 0, 0, 0), true},
		{"with IP options", edit(func(p []byte) []byte {
			q := append(append(append([]byte{0x46}, p[1:20]...), 1, 1, 1, 0), p[20:]...) // four bytes of NOP/EOL options
			binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
			return q
		}), true},
		{"empty", nil, false},
		{"IP header only", good[:20], false},
		{"ICMP header cut", good[:27], false},
		{"total length past the end", good[:len(good)-1], false},
		{"total length shorter than an ICMP header", edit(func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], 27); return p }), false},
		{"IPv6 version", edit(func(p []byte) []byte { p[0] = 0x65; return p }), false},
		{"IHL 4 (header overlaps the addresses)", edit(func(p []byte) []byte { p[0] = 0x41; return p }), false},
		{"IHL 0", edit(func(p []byte) []byte { p[0] = 0x40; return p }), false},
		{"IHL past the packet", edit(func(p []byte) []byte { p[0] = 0x4f; return p }), false},
		{"TCP", edit(func(p []byte) []byte { p[9] = 6; return p }), false},
		{"echo request", edit(func(p []byte) []byte { p[20] = 8; return fixChecksum(p) }), false},
		{"code 1", edit(func(p []byte) []byte { p[21] = 1; return fixChecksum(p) }), false},
		{"bad checksum", edit(func(p []byte) []byte { p[30] ^= 0xff; return p }), false},
		{"more fragments", edit(func(p []byte) []byte { p[6] |= 0x20; return p }), false},
		{"a later fragment", edit(func(p []byte) []byte { p[7] = 1; return p }), false},
		{"don't fragment is fine", edit(func(p []byte) []byte { p[6] |= 0x40; return p }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := parseEchoReply(tc.p)
			if ok != tc.ok {
				t.Fatalf("parseEchoReply ok = %v, want %v (%+v)", ok, tc.ok, r)
			}
			if ok && (r.src != netip.MustParseAddr("10.200.1.1") || r.dst != netip.MustParseAddr("10.200.1.0") || r.id != c.id || r.seq != 7) {
				t.Errorf("got %+v", r)
			}
			if got := c.handle(tc.p); got != tc.ok {
				t.Errorf("handle = %v, want %v", got, tc.ok)
			}
		})
	}
	// A well-formed reply for another checker, target or local address
	// is not consumed.
	other := replyChecker()
	if other.id != c.id && other.handle(good) {
		t.Error("another checker's identifier consumed")
	}
	spoofed := edit(func(p []byte) []byte {
		p[15] = 9
		binary.BigEndian.PutUint16(p[10:], 0)
		binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
		return p
	})
	if c.handle(spoofed) {
		t.Error("a reply from another source consumed")
	}
}

// FuzzEchoReply: any bytes arriving through a tunnel are either refused or
// read as a well-formed echo reply, never a panic; what is accepted
// carries a correct ICMP checksum over the IP total length, and a packet
// rebuilt from what was read parses back to the same values.
func FuzzEchoReply(f *testing.F) {
	c := replyChecker()
	req := New("t1", tunnel.HealthCheck{Type: "request", Rate: "high"}, mustPrefix("10.200.1.0/31"), &loopPath{}, Options{})
	f.Add(c.packet(c.id, 1))
	f.Add(req.packet(req.id, 2))
	f.Add(append(c.packet(c.qid, 3), 0, 0))
	f.Add([]byte{0x45, 0, 0, 28, 0, 0, 0x20, 0, 64, 1})
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, p []byte) {
		r, ok := parseEchoReply(p)
		if !ok {
			return
		}
		ihl := int(p[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(p[2:]))
		if ihl < 20 || total > len(p) || total < ihl+8 || checksum(p[ihl:total]) != 0 || p[ihl] != 0 {
			t.Fatalf("accepted a malformed reply % x", p)
		}
		back := New("t1", tunnel.HealthCheck{Type: "reply", Rate: "high"}, netip.PrefixFrom(r.dst, 32), &loopPath{}, Options{})
		back.target, back.id = r.src, r.id
		again, ok := parseEchoReply(back.packet(r.id, r.seq))
		if !ok || again != r {
			t.Fatalf("rebuilt %+v parses as %+v, %v", r, again, ok)
		}
		if !back.handle(p) {
			t.Fatalf("a checker for %+v does not consume it", r)
		}
	})
}
