//go:build linux

package gre

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/edgegw/edgegw/tunnel"
)

// innerPacket is a minimal IPv4 ICMP echo request from 10.0.0.1 to
// 10.0.0.2 with payload.
func innerPacket(payload string) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 1
	copy(b[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	b[20] = 8
	copy(b[28:], payload)
	return b
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Proto: ProtoIPv4},
		{Proto: ProtoIPv4, HasKey: true, Key: 0xdeadbeef},
		{Proto: ProtoIPv6, HasSequence: true, Sequence: 7},
		{Proto: ProtoIPv4, HasChecksum: true, HasKey: true, Key: 1, HasSequence: true, Sequence: 1 << 31},
	} {
		inner := innerPacket("hello")
		b := make([]byte, h.Len()+len(inner))
		copy(b[h.Len():], inner)
		h.Put(b)
		got, payload, err := Parse(b)
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		if got != h || !bytes.Equal(payload, inner) {
			t.Errorf("round trip %+v: got %+v, payload %x", h, got, payload)
		}
	}
}

func TestHeaderWire(t *testing.T) {
	// RFC 2890 layout: flags 0x3000 (K, S), protocol, key, sequence.
	h := Header{Proto: ProtoIPv4, HasKey: true, Key: 0x01020304, HasSequence: true, Sequence: 5}
	b := make([]byte, h.Len())
	h.Put(b)
	want := []byte{0x30, 0x00, 0x08, 0x00, 1, 2, 3, 4, 0, 0, 0, 5}
	if !bytes.Equal(b, want) {
		t.Errorf("got % x, want % x", b, want)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short", []byte{0, 0, 8}, ErrTruncated},
		{"key cut", []byte{0x20, 0, 8, 0, 1, 2}, ErrTruncated},
		{"version 1", []byte{0, 1, 8, 0}, ErrVersion},
		{"routing", []byte{0x40, 0, 8, 0}, ErrUnsupported},
		{"recursion", []byte{0x01, 0, 8, 0}, ErrUnsupported},
		{"bad checksum", []byte{0x80, 0, 8, 0, 0xff, 0xff, 0, 0}, ErrChecksum},
		{"ethernet", []byte{0, 0, 0x65, 0x58}, ErrProtocol},
	} {
		if _, _, err := Parse(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// Reserved flag bits 6-12 are ignored (RFC 2784 2.5.1).
	if _, _, err := Parse([]byte{0x00, 0xf8, 8, 0}); err != nil {
		t.Errorf("reserved bits: %v", err)
	}
}

func TestSeqAfter(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		want bool
	}{{1, 0, true}, {0, 1, false}, {5, 5, false}, {0, 0xffffffff, true}, {0x80000000, 0, false}, {0x7fffffff, 0, true}} {
		if got := seqAfter(tc.a, tc.b); got != tc.want {
			t.Errorf("seqAfter(%d, %d) = %v", tc.a, tc.b, got)
		}
	}
}

// TestSeqWindow walks the receive window through reordering, replays,
// late packets, large jumps and the counter's wrap.
func TestSeqWindow(t *testing.T) {
	type step struct {
		seq  uint32
		want seqVerdict
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, seqAccept}, {2, seqAccept}, {3, seqAccept}}},
		{"first number is anything", []step{{0xdeadbeef, seqAccept}, {0xdeadbef0, seqAccept}}},
		{"duplicate of the newest", []step{{7, seqAccept}, {7, seqReplayed}}},
		{"reordered within the window", []step{{10, seqAccept}, {12, seqAccept}, {11, seqAccept}, {11, seqReplayed}, {12, seqReplayed}, {10, seqReplayed}}},
		{"63 behind is the edge", []step{{100, seqAccept}, {37, seqAccept}, {37, seqReplayed}, {36, seqTooOld}}},
		{"far behind", []step{{100, seqAccept}, {1, seqTooOld}}},
		{"jump past the window forgets it", []step{{100, seqAccept}, {99, seqAccept}, {300, seqAccept}, {299, seqAccept}, {100, seqTooOld}, {237, seqAccept}, {236, seqTooOld}}},
		{"wraps", []step{{0xfffffffe, seqAccept}, {1, seqAccept}, {0xffffffff, seqAccept}, {0, seqAccept}, {0xfffffffe, seqReplayed}, {0xffffffff, seqReplayed}}},
		{"half the space ahead is behind", []step{{5, seqAccept}, {5 + 1<<31, seqTooOld}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w seqWindow
			for i, s := range tc.steps {
				if got := w.check(s.seq); got != s.want {
					t.Fatalf("step %d: check(%d) = %d, want %d", i, s.seq, got, s.want)
				}
			}
		})
	}
}

// FuzzSeqWindow compares the window with a plain model: the newest
// accepted number and the set of accepted numbers fewer than 64 behind
// it. A number is accepted iff it is newer than the newest, or fewer than
// 64 behind it and not in the set. (Forward steps can go round the 32-bit
// space: what fell out of the window is forgotten, in both.)
func FuzzSeqWindow(f *testing.F) {
	f.Add([]byte{0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 4})
	f.Add([]byte{0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 1, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0xbf})
	f.Fuzz(func(t *testing.T, b []byte) {
		var w seqWindow
		seen := map[uint32]bool{}
		var top uint32
		for i := 0; i+4 <= len(b); i += 4 {
			s := binary.BigEndian.Uint32(b[i:])
			want := seqAccept
			switch {
			case len(seen) == 0 || seqAfter(s, top):
			case top-s >= seqWindowSize:
				want = seqTooOld
			case seen[s]:
				want = seqReplayed
			}
			if got := w.check(s); got != want {
				t.Fatalf("check(%d) after top %d = %d, want %d", s, top, got, want)
			}
			if want == seqAccept {
				if len(seen) == 0 || seqAfter(s, top) {
					top = s
				}
				seen[s] = true
				for old := range seen {
					if top-old >= seqWindowSize {
						delete(seen, old)
					}
				}
			}
		}
	})
}

// fakeTunnel builds a tunnel without a device, enough for the packet path.
func fakeTunnel(c Config) *Tunnel {
	c.SetDefaults()
	t := &Tunnel{cfg: c, src: c.Local.As4(), dst: c.Remote.As4(), peer: tunnel.Peer(c.Address).As4()}
	t.hdrLen = (&Header{HasKey: c.Key != nil, HasSequence: c.Sequence}).Len()
	t.metrics = newMetrics(t)
	return t
}

func fakeEndpoint(ts ...*Tunnel) *endpoint {
	ep := &endpoint{owner: NewEndpoints(nil)}
	d := &demux{byKey: map[demuxKey]*Tunnel{}, byRemote: map[[4]byte]*Tunnel{}}
	for _, t := range ts {
		d.byKey[t.demuxKey()] = t
		d.byRemote[t.dst] = t
	}
	ep.dmx.Store(d)
	return ep
}

// encapsulate runs the send path of t on inner and returns the datagram
// as the raw socket of the other end would receive it.
func encapsulate(t *Tunnel, inner []byte) []byte {
	b := make([]byte, sendOffset+len(inner))
	copy(b[sendOffset:], inner)
	start, ok := t.encap(b, len(inner))
	if !ok {
		panic("not IP")
	}
	return b[start:]
}

func u32(v uint32) *uint32 { return &v }

func TestEncapDecap(t *testing.T) {
	key := u32(100)
	a := cfg("a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	b := cfg("b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31")
	a.Key, b.Key, a.Sequence, b.Sequence, a.TTL = key, key, true, true, 9
	ta, tb := fakeTunnel(a), fakeTunnel(b)
	ep := fakeEndpoint(tb)
	inner := innerPacket("payload")
	d := encapsulate(ta, inner)
	if d[8] != 9 || d[9] != 47 || !bytes.Equal(d[12:20], []byte{192, 0, 2, 1, 192, 0, 2, 2}) {
		t.Fatalf("outer header % x", d[:20])
	}
	if len(d) != 20+12+len(inner) {
		t.Fatalf("length %d", len(d))
	}
	if got := ep.receive(ep.dmx.Load(), d); got != tb {
		t.Fatalf("receive: tunnel %v, drops %v", got, tb.Status().Drops)
	}
	if got := tb.rx[0][tunOffset:]; !bytes.Equal(got, inner) {
		t.Errorf("decapsulated % x, want % x", got, inner)
	}
	if tb.rxPackets.Load() != 1 || tb.rxBytes.Load() != uint64(len(inner)) {
		t.Errorf("counters %+v", tb.Status())
	}
}

func TestDrops(t *testing.T) {
	b := cfg("b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31")
	b.Key, b.Sequence = u32(7), true
	tb := fakeTunnel(b)
	ep := fakeEndpoint(tb)
	inner := innerPacket("x")

	send := func(c Config, mutate func([]byte) []byte) *Tunnel {
		t.Helper()
		d := encapsulate(fakeTunnel(c), inner)
		if mutate != nil {
			d = mutate(d)
		}
		return ep.receive(ep.dmx.Load(), d)
	}
	good := cfg("a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	good.Key, good.Sequence = u32(7), true
	wrongKey, noKey, stranger := good, good, good
	wrongKey.Key, noKey.Key = u32(8), nil
	stranger.Local = netip.MustParseAddr("198.51.100.9")

	if send(wrongKey, nil) != nil || send(noKey, nil) != nil {
		t.Error("wrong or missing key accepted")
	}
	if send(stranger, nil) != nil {
		t.Error("unknown source accepted")
	}
	if send(good, func(d []byte) []byte { return d[:20+3] }) != nil {
		t.Error("truncated GRE accepted")
	}
	if send(good, func(d []byte) []byte { d = d[:20+12+10]; binary.BigEndian.PutUint16(d[2:], uint16(len(d))); return d }) != nil {
		t.Error("truncated inner packet accepted")
	}
	if send(good, func(d []byte) []byte { d[20+1] = 1; return d }) != nil {
		t.Error("GRE version 1 accepted")
	}
	if send(good, func(d []byte) []byte { return d[:12] }) != nil {
		t.Error("truncated IPv4 accepted")
	}
	// Sequence: 5, then 5 again (replayed), 4 (late but within the
	// window: accepted once), 4 again (replayed), 6, then 6-64 (too old,
	// wrapped below zero)
	// and a packet without a sequence number.
	seq := func(n uint32) func([]byte) []byte {
		return func(d []byte) []byte { binary.BigEndian.PutUint32(d[20+8:], n); return d }
	}
	noSeq := good
	noSeq.Sequence = false
	if send(good, seq(5)) != tb || send(good, seq(5)) != nil {
		t.Error("sequence: replay accepted")
	}
	if send(good, seq(4)) != tb || send(good, seq(4)) != nil {
		t.Error("sequence: reordered packet refused, or accepted twice")
	}
	if send(good, seq(6)) != tb || send(good, seq(^uint32(0)-57)) != nil {
		t.Error("sequence: 6 refused or a packet 64 behind accepted")
	}
	if send(noSeq, nil) != nil {
		t.Error("packet without a sequence number accepted")
	}
	if len(tb.rx) != 3 {
		t.Errorf("%d packets queued, want 3", len(tb.rx))
	}
	wantT := map[string]uint64{"wrong_key": 2, "out_of_order": 1, "replayed": 2, "missing_sequence": 1, "invalid_inner_packet": 1}
	for r, n := range tb.Status().Drops {
		if n != wantT[r] {
			t.Errorf("tunnel drops %s = %d, want %d", r, n, wantT[r])
		}
	}
	// Without sequence: true, numbers are ignored, and their absence too.
	free := cfg("c", "192.0.2.2", "192.0.2.3", "10.200.1.3/31")
	tc := fakeTunnel(free)
	epc := fakeEndpoint(tc)
	from := cfg("d", "192.0.2.3", "192.0.2.2", "10.200.1.2/31")
	withSeq := from
	withSeq.Sequence = true
	for i, c := range []Config{from, withSeq, withSeq, from} {
		if epc.receive(epc.dmx.Load(), encapsulate(fakeTunnel(c), inner)) != tc {
			t.Errorf("tunnel without sequence: packet %d refused", i)
		}
	}
	wantE := map[string]uint64{"truncated": 2, "malformed": 1, "unknown_source": 1}
	for i, name := range endpointDropNames {
		if n := ep.drops[i].Load(); n != wantE[name] {
			t.Errorf("endpoint drops %s = %d, want %d", name, n, wantE[name])
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{0x30, 0x00, 0x08, 0x00, 1, 2, 3, 4, 0, 0, 0, 5, 0x45})
	f.Add([]byte{0x80, 0, 8, 0, 0xf7, 0xff, 0, 0})
	f.Add([]byte{0, 0, 0x86, 0xdd})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := Parse(b)
		if err != nil {
			return
		}
		if len(payload) != len(b)-h.Len() {
			t.Fatalf("payload %d of %d with header %d", len(payload), len(b), h.Len())
		}
		// Re-encoding gives the same header bytes, except ignored
		// reserved bits and a checksum that Put recomputes.
		out := make([]byte, len(b))
		copy(out[h.Len():], payload)
		h.Put(out)
		h2, payload2, err := Parse(out)
		if err != nil || h2 != h || !bytes.Equal(payload2, payload) {
			t.Fatalf("re-parse: %+v %v, want %+v", h2, err, h)
		}
	})
}

// FuzzReceive feeds arbitrary datagrams to the receive path: it must
// never panic and must only queue whole IP packets.
func FuzzReceive(f *testing.F) {
	c := cfg("a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	c.Key = u32(1)
	f.Add(encapsulate(fakeTunnel(c), innerPacket("seed")))
	c.Sequence = true
	f.Add(encapsulate(fakeTunnel(c), innerPacket("seed")))
	f.Fuzz(func(t *testing.T, d []byte) {
		b := cfg("b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31")
		b.Key = u32(1)
		tb := fakeTunnel(b)
		ep := fakeEndpoint(tb)
		buf := make([]byte, len(d), len(d)+64)
		copy(buf, d)
		if ep.receive(ep.dmx.Load(), buf) != nil {
			p := tb.rx[0][tunOffset:]
			if !validInner(ProtoIPv4, p) && !validInner(ProtoIPv6, p) {
				t.Fatalf("queued invalid packet % x", p)
			}
		}
		// A tunnel that requires sequence numbers queues only packets
		// that carry one.
		b.Sequence = true
		ts := fakeTunnel(b)
		eps := fakeEndpoint(ts)
		copy(buf, d)
		if eps.receive(eps.dmx.Load(), buf) != nil {
			o, err := parseIPv4(d)
			if err != nil {
				t.Fatal(err)
			}
			if h, _, err := Parse(o.payload); err != nil || !h.HasSequence {
				t.Fatalf("queued a packet without a sequence number: %+v %v", h, err)
			}
		}
	})
}
