package dns

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// packBoth answers the query in wire as u's reader does, once with the
// wire fast path and once packing the message (slowPack), and returns
// both answers and whether the fast path made the first.
func packBoth(t testing.TB, u *udpServer, wire []byte) (fast, slow []byte, took bool) {
	t.Helper()
	run := func(slowPack bool) ([]byte, bool) {
		u.slowPack = slowPack
		in := ipv4.Message{Buffers: [][]byte{make([]byte, udpBufSize)}, OOB: make([]byte, oobSize),
			Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
		in.N = copy(in.Buffers[0], wire)
		out := ipv4.Message{Buffers: [][]byte{nil}}
		q := new(query)
		u.top.mu.Lock()
		ok := u.packet(&in, q, u.s.now(), &out, make([]byte, 0, ednsSize), make([]byte, oobSize))
		u.top.mu.Unlock()
		if !ok {
			return nil, false
		}
		return slices.Clone(out.Buffers[0]), q.wire != nil
	}
	fast, took = run(false)
	slow, _ = run(true)
	u.slowPack = false
	return fast, slow, took
}

// TestWireAnswerMatchesPack: a cached answer made by the wire fast path
// is byte for byte what packing the message gives, for queries with and
// without EDNS, with DO, CD and without RD, a name in mixed case, a
// CNAME chain, with TTLs aged, and two answers in one second; answers
// the fast path must leave alone (blocked, overridden, too big for the
// client, stale) are packed as before.
func TestWireAnswerMatchesPack(t *testing.T) {
	up := newTestUpstream(t)
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}, Policies: []Policy{
		{ID: "ads", Expression: `dns.fqdn == "bad-ip.test"`, Action: "block"},
		{ID: "intranet", Expression: `dns.fqdn == "hop.test"`, Action: "override", Override: []string{"chain.test."}},
	}}, Options{Now: clock.now})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	u, err := newUDPServer(s, pc.(*net.UDPConn))
	if err != nil {
		t.Fatal(err)
	}
	defer s.top.drop(u.top)

	query := func(name string, qtype uint16, edit func(*mdns.Msg)) []byte {
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		m.Id = 0xbeef
		if edit != nil {
			edit(m)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	edns := func(do bool) func(*mdns.Msg) { return func(m *mdns.Msg) { m.SetEdns0(ednsSize, do) } }
	small := func(m *mdns.Msg) { m.SetEdns0(512, false) }
	cases := []struct {
		name  string
		wire  []byte
		fast  bool // the fast path must make it
		check func(*mdns.Msg) bool
	}{
		{"plain", query("a.test.", mdns.TypeA, nil), true, nil},
		{"edns", query("a.test.", mdns.TypeA, edns(false)), true, nil},
		{"edns do", query("a.test.", mdns.TypeA, edns(true)), true, nil},
		{"cd no rd", query("a.test.", mdns.TypeAAAA, func(m *mdns.Msg) {
			m.CheckingDisabled, m.RecursionDesired = true, false
			m.SetEdns0(ednsSize, false)
		}), true, nil},
		{"mixed case", query("A.TeSt.", mdns.TypeA, edns(false)), true, func(m *mdns.Msg) bool {
			return m.Question[0].Name == "A.TeSt."
		}},
		{"cname chain", query("chain.test.", mdns.TypeA, edns(false)), true, func(m *mdns.Msg) bool {
			return len(m.Answer) == 3
		}},
		{"blocked", query("bad-ip.test.", mdns.TypeA, edns(false)), false, nil},
		{"overridden", query("hop.test.", mdns.TypeA, edns(false)), false, nil},
		{"too big for the client", query("big.test.", mdns.TypeTXT, small), false, func(m *mdns.Msg) bool {
			return m.Truncated
		}},
	}
	// Warm the cache over the wire (misses go to the upstream).
	for _, tc := range cases {
		var m mdns.Msg
		if err := m.Unpack(tc.wire); err != nil {
			t.Fatal(err)
		}
		if _, _, err := (&mdns.Client{Net: "udp", UDPSize: ednsSize}).Exchange(&m, addr); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	var elapsed time.Duration
	for _, age := range []time.Duration{0, 0, 2 * time.Second, 100 * time.Second} {
		clock.add(age)
		elapsed += age
		for _, tc := range cases {
			fast, slow, took := packBoth(t, u, tc.wire)
			if fast == nil || !bytes.Equal(fast, slow) {
				t.Fatalf("%s, %v on: fast path\n%x\npacked\n%x", tc.name, age, fast, slow)
			}
			if took != tc.fast {
				t.Errorf("%s, %v on: fast path taken %v, want %v", tc.name, age, took, tc.fast)
			}
			var m mdns.Msg
			if err := m.Unpack(fast); err != nil || m.Id != 0xbeef || len(m.Question) != 1 {
				t.Fatalf("%s: %v %v", tc.name, &m, err)
			}
			if tc.check != nil && !tc.check(&m) {
				t.Errorf("%s: %v", tc.name, &m)
			}
			if tc.fast && m.Answer[0].Header().Ttl != 300-uint32(elapsed/time.Second) {
				t.Errorf("%s, %v on: TTL %d", tc.name, age, m.Answer[0].Header().Ttl)
			}
		}
	}
	// Past its TTL the answer is stale: served only when upstreams
	// fail, never by the fast path.
	clock.add(time.Hour)
	up.close()
	for _, u := range s.snap.Load().ups {
		u.shutdown()
	}
	fast, slow, took := packBoth(t, u, query("a.test.", mdns.TypeA, edns(false)))
	if took {
		t.Errorf("a stale answer took the fast path")
	}
	if fast != nil && !bytes.Equal(fast, slow) {
		t.Errorf("stale: fast path\n%x\npacked\n%x", fast, slow)
	}
}

// FuzzWireAnswer feeds arbitrary bytes to the resolver as an upstream's
// answer to a.test A, then asks it again from the cache, age seconds
// later, through a UDP reader, with a query whose flags and EDNS come
// from the fuzzer: whatever the fast path makes is what packing the
// message makes.
func FuzzWireAnswer(f *testing.F) {
	up := newFuzzUpstream(f)
	q := new(mdns.Msg)
	q.SetQuestion("a.test.", mdns.TypeA)
	seed := func(age uint16, flags byte, edit func(m *mdns.Msg), rrs ...string) {
		m := new(mdns.Msg)
		m.SetReply(q)
		m.RecursionAvailable = true
		for _, s := range rrs {
			rr, err := mdns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			if rr.Header().Rrtype == mdns.TypeSOA {
				m.Ns = append(m.Ns, rr)
			} else {
				m.Answer = append(m.Answer, rr)
			}
		}
		if edit != nil {
			edit(m)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, age, flags)
	}
	seed(0, 0, nil, "a.test. 300 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2")
	seed(10, 0xff, nil, "a.test. 300 IN CNAME b.test.", "b.test. 300 IN A 192.0.2.3")
	seed(1, 0x03, func(m *mdns.Msg) { m.Rcode = mdns.RcodeNameError }, "test. 3600 IN SOA ns.test. h.test. 1 3600 600 86400 120")
	seed(2, 0x05, func(m *mdns.Msg) { m.AuthenticatedData = true; m.SetEdns0(4096, true) }, "a.test. 300 IN A 192.0.2.8",
		"a.test. 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 12345 test. dGVzdA==")
	seed(0, 0x08, func(m *mdns.Msg) {
		m.Extra = append(m.Extra, &mdns.A{Hdr: mdns.RR_Header{Name: "ns.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30}, A: net.IPv4(192, 0, 2, 53)})
	},
		"a.test. 300 IN A 192.0.2.9")
	for i := range 12 {
		seed(0, byte(i), nil, "a.test. 300 IN TXT \""+strings.Repeat("x", 200)+"\"")
	}

	f.Fuzz(func(t *testing.T, data []byte, age uint16, flags byte) {
		up.payload.Store(&data)
		clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
		s, err := New(Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, Upstreams: []string{up.addr}},
			Options{Now: clock.now})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		s.rctx.Store(&ctx)
		defer func() {
			for _, u := range s.snap.Load().ups {
				u.shutdown()
			}
		}()
		// The client's query: flags pick EDNS (and its size), DO, CD,
		// RD and the name's case.
		req := new(mdns.Msg)
		req.SetQuestion([]string{"a.test.", "A.Test."}[flags>>4&1], mdns.TypeA)
		req.RecursionDesired = flags&0x20 == 0
		req.CheckingDisabled = flags&0x40 != 0
		if flags&1 != 0 {
			req.SetEdns0([]uint16{512, 1232, 4096, 700}[flags>>2&3], flags&2 != 0)
		}
		// Warm the cache as a TCP client would.
		qy := &query{req: req.Copy(), proto: "tcp", start: clock.now()}
		if s.answer(qy) == nil {
			return
		}
		s.finished(qy)
		clock.add(time.Duration(age) * time.Second)
		probe := &query{req: req.Copy(), proto: "udp", start: clock.now(), noWait: true}
		s.answer(probe)
		if probe.wouldWait || !probe.res.cached {
			s.finished(probe)
			return // not from the cache: the reader would hand it to a goroutine
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		u, err := newUDPServer(s, pc.(*net.UDPConn))
		if err != nil {
			t.Fatal(err)
		}
		defer s.top.drop(u.top)
		wire, err := req.Pack()
		if err != nil {
			t.Fatal(err)
		}
		fast, slow, _ := packBoth(t, u, wire)
		if !bytes.Equal(fast, slow) {
			t.Fatalf("fast path\n%x\npacked\n%x", fast, slow)
		}
	})
}
