package dns

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// plainForwarder is the baseline: a miekg/dns server that forwards every
// query to the upstream, with no cache and no policies.
func plainForwarder(tb testing.TB, upstream string) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &mdns.Client{Net: "udp", UDPSize: ednsSize, Timeout: 2 * time.Second}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		a, _, err := c.Exchange(r, upstream)
		if err != nil {
			m := new(mdns.Msg)
			m.SetRcode(r, mdns.RcodeServerFailure)
			w.WriteMsg(m)
			return
		}
		w.WriteMsg(a)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	tb.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// benchServer starts edgegw with a 1M-name blocklist and a few policies.
func benchServer(b testing.TB, up string, names int) string {
	dir := b.TempDir()
	file := filepath.Join(dir, "block.txt")
	writeBigList(b, file, names)
	cfg := Config{
		Upstreams: []string{up},
		Lists:     map[string]List{"block": {File: file}},
		Policies: []Policy{
			{ID: "list", Expression: `dns.domains in $block`, Action: "block"},
			{ID: "txt", Expression: `dns.qtype == txt and dns.domains contains "example"`, Action: "block"},
			{ID: "students", Expression: `identity.groups contains "students"`, Action: "safe_search"},
		},
	}
	_, addr := startServer(b, cfg, Options{EgressAddr: netip.MustParseAddr("198.51.100.1")})
	return addr
}

// BenchmarkServe compares answering a.test over UDP: edgegw from its cache
// (with 1M-name list and policies) against the plain forwarder.
func BenchmarkServe(b *testing.B) {
	up := newTestUpstream(b)
	for _, tc := range []struct {
		name string
		addr func() string
	}{
		{"edgegw-cached", func() string { return benchServer(b, up.addr, 1_000_000) }},
		{"plain-miekg-forwarder", func() string { return plainForwarder(b, up.addr) }},
	} {
		addr := tc.addr()
		b.Run(tc.name, func(b *testing.B) {
			var fails atomic.Int64
			b.SetParallelism(4)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				conn, err := net.Dial("udp", addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer conn.Close()
				m := new(mdns.Msg)
				m.SetQuestion("a.test.", mdns.TypeA)
				m.SetEdns0(ednsSize, false)
				buf := make([]byte, 2048)
				for pb.Next() {
					m.Id = mdns.Id()
					q, _ := m.Pack()
					conn.SetDeadline(time.Now().Add(2 * time.Second))
					if _, err := conn.Write(q); err != nil {
						fails.Add(1)
						continue
					}
					if _, err := conn.Read(buf); err != nil {
						fails.Add(1)
					}
				}
			})
			if n := fails.Load(); n > 0 {
				b.Logf("%d failed queries", n)
			}
		})
	}
}

// BenchmarkCacheHitPath measures what the UDP reader does for one cached
// query, from the received bytes to the packed answer (parse, identity,
// policies with the 1M-name list, cache, pack, metrics, top names),
// without the socket: run it with -benchmem to see the allocations of a
// cache hit. "one" asks a.test again and again; "1000" rotates over
// TestDNSPerf's 1,000 names (more than the console's 512 counters, and a
// cache and list working set that no longer sits in L1).
func BenchmarkCacheHitPath(b *testing.B) {
	up := newTestUpstream(b)
	var names []string
	for i := range 1000 {
		up.add(fmt.Sprintf("n%d.perf.test. 3600 IN A 192.0.2.%d", i, i%250+1))
		names = append(names, fmt.Sprintf("n%d.perf.test.", i))
	}
	dir := b.TempDir()
	file := filepath.Join(dir, "block.txt")
	writeBigList(b, file, 1_000_000)
	s, addr := startServer(b, Config{
		Upstreams: []string{up.addr},
		Lists:     map[string]List{"block": {File: file}},
		Policies: []Policy{
			{ID: "list", Expression: `dns.domains in $block`, Action: "block"},
			{ID: "txt", Expression: `dns.qtype == txt and dns.domains contains "example"`, Action: "block"},
			{ID: "students", Expression: `identity.groups contains "students"`, Action: "safe_search"},
		},
	}, Options{EgressAddr: netip.MustParseAddr("198.51.100.1")})
	// Warm the cache over the wire, with EDNS as dnsperf asks.
	wire := func(name string) []byte {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		m.SetEdns0(ednsSize, false)
		if _, _, err := (&mdns.Client{Net: "udp"}).Exchange(m, addr); err != nil {
			b.Fatal(err)
		}
		w, _ := m.Pack()
		return w
	}
	one := [][]byte{wire("a.test.")}
	var many [][]byte
	for _, n := range names {
		many = append(many, wire(n))
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	u, err := newUDPServer(s, pc.(*net.UDPConn))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		wires [][]byte
	}{{"one", one}, {"1000", many}} {
		b.Run(bc.name, func(b *testing.B) {
			in := ipv4.Message{Buffers: [][]byte{make([]byte, udpBufSize)}, OOB: make([]byte, oobSize),
				Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
			out := ipv4.Message{Buffers: [][]byte{nil}}
			buf, oob := make([]byte, 0, ednsSize), make([]byte, oobSize)
			q := new(query)
			b.ReportAllocs()
			i := 0
			u.top.mu.Lock()
			for b.Loop() {
				in.N = copy(in.Buffers[0], bc.wires[i%len(bc.wires)])
				i++
				if !u.packet(&in, q, s.now(), &out, buf, oob) {
					b.Fatal("no answer")
				}
				if i%udpBatch == 0 {
					// What serve does after each batch.
					if u.top.due(s.now()) {
						u.top.flushLocked()
					}
					u.s.m.flush(&u.counts, 0)
				}
			}
			u.top.mu.Unlock()
			b.StopTimer()
			var a mdns.Msg
			if err := a.Unpack(out.Buffers[0]); err != nil || len(a.Answer) != 1 || a.Rcode != mdns.RcodeSuccess {
				b.Fatalf("answer %v: %v", &a, err)
			}
		})
	}
}
