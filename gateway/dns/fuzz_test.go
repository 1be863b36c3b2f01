package dns

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	mdns "github.com/miekg/dns"
)

// FuzzParseList feeds arbitrary list files to the parser: no panic, and
// every name it keeps is valid and found again.
func FuzzParseList(f *testing.F) {
	for _, s := range []string{"a.example\n", "0.0.0.0 a b c\n||x.y^$third-party\n", "!x\n@@||a^\n# c\n", "\xff\x00.example\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, _, err := parseList(bytes.NewReader(data))
		if err != nil {
			return
		}
		for i := range set.slots {
			if o := set.slots[i]; o != 0 {
				name := set.name(o)
				if appendDomain(nil, name) == nil || !set.has(string(name)) {
					t.Fatalf("kept %q", name)
				}
			}
		}
	})
}

// fakeWriter is a ResponseWriter that keeps what is written.
type fakeWriter struct {
	out   *mdns.Msg
	local net.Addr
}

func (w *fakeWriter) LocalAddr() net.Addr { return w.local }
func (w *fakeWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5353}
}
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error {
	if _, err := m.Pack(); err != nil {
		return err
	}
	w.out = m
	return nil
}
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

// FuzzServeDNS runs the request path on arbitrary messages (whatever
// miekg/dns unpacks), with policies, against a local upstream: never a
// panic, and every answer packs and fits the client's size over UDP.
func FuzzServeDNS(f *testing.F) {
	up := newTestUpstream(f)
	cfg := Config{
		Upstreams: []string{up.addr},
		Policies: []Policy{
			{ID: "b", Expression: `dns.domains contains "tracker.test" or dns.resolved_ips == 203.0.113.0/24`, Action: "block"},
			{ID: "o", Expression: `dns.fqdn == "alias.test"`, Action: "override", Override: []string{"a.test"}},
			{ID: "s", Expression: `dns.qtype == a`, Action: "safe_search"},
		},
	}
	s, _ := startServer(f, cfg, Options{Sink: &recSink{}, EgressAddr: netip.MustParseAddr("198.51.100.1")})
	for _, q := range []struct {
		name string
		t    uint16
	}{{"a.test.", mdns.TypeA}, {"chain.test.", mdns.TypeA}, {"big.test.", mdns.TypeTXT}, {"alias.test.", mdns.TypeA}, {"www.google.com.", mdns.TypeA}} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.t)
		m.SetEdns0(512, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		w := &fakeWriter{local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}}
		s.ServeDNS(w, req)
		if w.out == nil {
			return
		}
		size := mdns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = min(max(int(o.UDPSize()), mdns.MinMsgSize), ednsSize)
		}
		if b, err := w.out.Pack(); err != nil || len(b) > size {
			t.Fatalf("answer %d bytes > %d or %v", len(b), size, err)
		}
	})
}

// FuzzDoH posts arbitrary bodies to the DNS-over-HTTPS handler and asks
// for them with GET: never a panic, a 200 with a DNS message or a 400.
func FuzzDoH(f *testing.F) {
	up := newTestUpstream(f)
	s, _ := startServer(f, Config{Upstreams: []string{up.addr}}, Options{Sink: &recSink{}})
	h := s.DoHHandler(DoHAnyClient)
	m := new(mdns.Msg)
	m.SetQuestion("a.test.", mdns.TypeA)
	b, _ := m.Pack()
	f.Add(b)
	f.Add([]byte{0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, req := range []*http.Request{
			httptest.NewRequest(http.MethodPost, "/dns-query", bytes.NewReader(data)),
			httptest.NewRequest(http.MethodGet, "/dns-query?dns="+base64.RawURLEncoding.EncodeToString(data), nil),
		} {
			req.Header.Set("Content-Type", "application/dns-message")
			req.RemoteAddr = "127.0.0.1:5353"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK:
				if err := new(mdns.Msg).Unpack(rec.Body.Bytes()); err != nil {
					t.Fatalf("200 with a body that does not unpack: %v", err)
				}
			case http.StatusBadRequest:
			default:
				t.Fatalf("%s: status %d", req.Method, rec.Code)
			}
		}
	})
}

// fuzzUpstream answers every query, over UDP and TCP, with the bytes it
// holds, the query's ID written over their first two.
type fuzzUpstream struct {
	addr    string
	payload atomic.Pointer[[]byte]
}

func newFuzzUpstream(f *testing.F) *fuzzUpstream {
	u := &fuzzUpstream{}
	pc, ln := listenUDPTCP(f)
	u.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		p := u.payload.Load()
		if p == nil {
			return
		}
		b := slices.Clone(*p)
		if len(b) >= 2 {
			binary.BigEndian.PutUint16(b, r.Id)
		}
		w.Write(b)
	})
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		f.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

// FuzzUpstreamAnswer feeds arbitrary bytes to the resolver as an
// upstream's answer (to a.test A, over UDP, and over TCP when they say
// truncated): forwarding, the cache and TTL ageing. Never a panic; an
// answer packs within the client's UDP size and carries the question
// asked; asked again age seconds later, an answer from the cache has every
// TTL lowered by exactly age (never raised, never below zero).
func FuzzUpstreamAnswer(f *testing.F) {
	up := newFuzzUpstream(f)
	q := new(mdns.Msg)
	q.SetQuestion("a.test.", mdns.TypeA)
	seed := func(age uint16, edit func(m *mdns.Msg), rrs ...string) {
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
		f.Add(b, age)
	}
	seed(10, nil, "a.test. 300 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2")
	seed(299, nil, "a.test. 300 IN CNAME b.test.", "b.test. 300 IN A 192.0.2.3")
	seed(3, nil, "a.test. 2 IN A 192.0.2.4")
	seed(0, nil, "a.test. 0 IN A 192.0.2.5")
	seed(100, nil, "a.test. 4294967295 IN A 192.0.2.6")
	seed(50, func(m *mdns.Msg) { m.Rcode = mdns.RcodeNameError }, "test. 3600 IN SOA ns.test. h.test. 1 3600 600 86400 120")
	seed(5, func(m *mdns.Msg) { m.Truncated = true }, "a.test. 300 IN A 192.0.2.7")
	seed(1, func(m *mdns.Msg) { m.Rcode = mdns.RcodeServerFailure })
	seed(7, func(m *mdns.Msg) { m.SetEdns0(4096, true) }, "a.test. 300 IN A 192.0.2.8",
		"a.test. 300 IN RRSIG A 13 2 300 20300101000000 20200101000000 12345 test. dGVzdA==")
	seed(1, func(m *mdns.Msg) { m.Question[0].Name = "b.test." }, "b.test. 300 IN A 192.0.2.9")
	f.Add([]byte{0, 0, 0x81, 0x80, 0, 1, 0, 1}, uint16(1))

	f.Fuzz(func(t *testing.T, data []byte, age uint16) {
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
				u.shutdown() // pooled TCP connections of a truncated answer
			}
		}()
		ask := func() (*mdns.Msg, *query) {
			req := new(mdns.Msg)
			req.SetQuestion("a.test.", mdns.TypeA)
			req.SetEdns0(ednsSize, true)
			qy := &query{req: req, proto: "udp", start: clock.now()}
			defer s.finished(qy)
			out := s.answer(qy)
			if out == nil {
				t.Fatal("no answer")
			}
			b, err := out.Pack()
			if err != nil {
				return nil, qy // dropped by the server: nothing reaches the client
			}
			if len(b) > ednsSize {
				t.Fatalf("answer of %d bytes over UDP", len(b))
			}
			if len(out.Question) != 1 || out.Question[0] != req.Question[0] {
				t.Fatalf("answer's question %v, asked %v", out.Question, req.Question)
			}
			return out, qy
		}
		first, _ := ask()
		clock.add(time.Duration(age) * time.Second)
		second, q2 := ask()
		if first == nil || second == nil || !q2.res.cached || q2.res.stale {
			return
		}
		for _, sec := range [][2][]mdns.RR{{first.Answer, second.Answer}, {first.Ns, second.Ns}} {
			if len(sec[0]) != len(sec[1]) {
				t.Fatalf("cached answer has %d records, first %d", len(sec[1]), len(sec[0]))
			}
			for i, rr := range sec[1] {
				was, now := sec[0][i].Header().Ttl, rr.Header().Ttl
				if want := was - min(was, uint32(age)); now != want {
					t.Fatalf("TTL %d after %d s, first %d: want %d", now, age, was, want)
				}
			}
		}
	})
}

// FuzzQueryParser feeds arbitrary packets to the UDP reader's query
// parser: whatever it accepts, mdns.Msg.Unpack must accept too and give
// the same message; detach must then leave a message equal to it that no
// later parse changes.
func FuzzQueryParser(f *testing.F) {
	for _, m := range []*mdns.Msg{
		new(mdns.Msg).SetQuestion("n1.perf.test.", mdns.TypeA),
		new(mdns.Msg).SetQuestion("A-b_c.Example.", mdns.TypeAAAA).SetEdns0(1232, true),
		new(mdns.Msg).SetQuestion(".", mdns.TypeNS),
		new(mdns.Msg).SetQuestion(`a\.b.example.`, mdns.TypeTXT),
		new(mdns.Msg).SetQuestion("x.example.", mdns.TypeA).SetEdns0(4096, false),
	} {
		m.CheckingDisabled = true
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	withCookie := new(mdns.Msg).SetQuestion("c.example.", mdns.TypeA).SetEdns0(1232, false)
	withCookie.IsEdns0().Option = append(withCookie.IsEdns0().Option, &mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0102030405060708"})
	b, _ := withCookie.Pack()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var p queryParser
		var got mdns.Msg
		if !p.parse(data, &got) {
			return
		}
		var want mdns.Msg
		if err := want.Unpack(data); err != nil {
			t.Fatalf("parsed what Unpack rejects (%v): %x", err, data)
		}
		if !reflect.DeepEqual(&got, &want) {
			t.Fatalf("parsed %x\n as %v\nUnpack: %v", data, &got, &want)
		}
		// Again, now with the name interned.
		if !p.parse(data, &got) || !reflect.DeepEqual(&got, &want) {
			t.Fatalf("parsed %x again as %v\nUnpack: %v", data, &got, &want)
		}
		p.detach(&got)
		p.parse(data[:12], new(mdns.Msg)) // a later parse must not touch got
		other := slices.Clone(data)
		other[len(other)-1] ^= 0xff
		p.parse(other, new(mdns.Msg))
		if !reflect.DeepEqual(&got, &want) {
			t.Fatalf("detached message changed by a later parse: %v, want %v", &got, &want)
		}
	})
}

// TestQueryParserShapes: the common query shapes take the parser's path,
// anything unusual is left to Unpack.
func TestQueryParserShapes(t *testing.T) {
	cookie := new(mdns.Msg).SetQuestion("c.example.", mdns.TypeA).SetEdns0(1232, false)
	cookie.IsEdns0().Option = append(cookie.IsEdns0().Option, &mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0102030405060708"})
	withAnswer := new(mdns.Msg).SetQuestion("a.example.", mdns.TypeA)
	withAnswer.Answer = []mdns.RR{addrRR("a.example.", netip.MustParseAddr("192.0.2.1"), mdns.TypeA, 60)}
	for _, tc := range []struct {
		name string
		msg  *mdns.Msg
		fast bool
	}{
		{"plain (dnsperf)", new(mdns.Msg).SetQuestion("n1.perf.test.", mdns.TypeA), true},
		{"EDNS without options", new(mdns.Msg).SetQuestion("A-b_c.Example.", mdns.TypeAAAA).SetEdns0(1232, true), true},
		{"root", new(mdns.Msg).SetQuestion(".", mdns.TypeNS), true},
		{"EDNS cookie", cookie, false},
		{"escaped label", new(mdns.Msg).SetQuestion(`a\.b.example.`, mdns.TypeA), false},
		{"answer section", withAnswer, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.msg.Pack()
			if err != nil {
				t.Fatal(err)
			}
			var p queryParser
			var got, want mdns.Msg
			if fast := p.parse(b, &got); fast != tc.fast {
				t.Fatalf("parsed: %v, want %v", fast, tc.fast)
			}
			if !tc.fast {
				return
			}
			if err := want.Unpack(b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, &want) {
				t.Fatalf("parsed %v, Unpack %v", &got, &want)
			}
		})
	}
}

// TestQueryParserInternBounded: a flood of distinct names keeps the
// parser's interned names bounded, and a name asked again is the same
// string (no copy).
func TestQueryParserInternBounded(t *testing.T) {
	var p queryParser
	var req mdns.Msg
	for i := range maxInterned*2 + 10 {
		b, _ := new(mdns.Msg).SetQuestion(fmt.Sprintf("r%d.flood.test.", i), mdns.TypeA).Pack()
		if !p.parse(b, &req) {
			t.Fatalf("query %d not parsed", i)
		}
		if len(p.names) > maxInterned {
			t.Fatalf("%d names interned, bound %d", len(p.names), maxInterned)
		}
	}
	b, _ := new(mdns.Msg).SetQuestion("again.test.", mdns.TypeA).Pack()
	p.parse(b, &req)
	first := req.Question[0].Name
	p.parse(b, &req)
	if again := req.Question[0].Name; unsafe.StringData(again) != unsafe.StringData(first) {
		t.Error("a name asked again was copied, not interned")
	}
}
