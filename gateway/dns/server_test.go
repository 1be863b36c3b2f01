package dns

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func TestResolveTransports(t *testing.T) {
	up := newTestUpstream(t)
	_, addr := startServer(t, Config{Upstreams: []string{up.addr}, ECS: "off"}, Options{})
	for _, proto := range []string{"udp", "tcp"} {
		r := ask(t, addr, proto, "a.test", mdns.TypeA)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "192.0.2.1" {
			t.Errorf("%s: %v", proto, r)
		}
		if !r.RecursionAvailable || r.IsEdns0() == nil || r.IsEdns0().UDPSize() != ednsSize {
			t.Errorf("%s: RA or OPT wrong: %v", proto, r)
		}
	}
	// Truncation over UDP; the whole answer over TCP.
	r := ask(t, addr, "udp", "big.test", mdns.TypeTXT)
	if !r.Truncated {
		t.Errorf("big answer over UDP not truncated: %d answers", len(r.Answer))
	}
	r = ask(t, addr, "tcp", "big.test", mdns.TypeTXT)
	if r.Truncated || len(r.Answer) != 20 {
		t.Errorf("big answer over TCP: tc=%v %d answers", r.Truncated, len(r.Answer))
	}
	// Without EDNS a UDP answer is at most 512 bytes and has no OPT.
	r = ask(t, addr, "udp", "big.test", mdns.TypeTXT, func(m *mdns.Msg) { m.Extra = nil })
	if !r.Truncated || r.IsEdns0() != nil {
		t.Errorf("no-EDNS answer: tc=%v opt=%v", r.Truncated, r.IsEdns0())
	}
	// DO passes through: RRSIGs come back only when asked for.
	r = ask(t, addr, "udp", "a.test", mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(ednsSize, true) })
	if !hasType(r.Answer, mdns.TypeRRSIG) || !r.IsEdns0().Do() || !up.lastDO.Load() {
		t.Errorf("DO query: %v", r)
	}
	r = ask(t, addr, "udp", "a.test", mdns.TypeA)
	if hasType(r.Answer, mdns.TypeRRSIG) {
		t.Errorf("RRSIG without DO: %v", r)
	}
	// Unknown EDNS version.
	r = ask(t, addr, "udp", "a.test", mdns.TypeA, func(m *mdns.Msg) { m.IsEdns0().SetVersion(1) })
	if r.Rcode != mdns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s", mdns.RcodeToString[r.Rcode])
	}
}

func hasType(rrs []mdns.RR, t uint16) bool {
	return slices.ContainsFunc(rrs, func(rr mdns.RR) bool { return rr.Header().Rrtype == t })
}

func TestECS(t *testing.T) {
	clientECS := func(m *mdns.Msg) {
		m.IsEdns0().Option = append(m.IsEdns0().Option, &mdns.EDNS0_SUBNET{
			Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.ParseIP("10.1.2.3")})
	}
	for _, tc := range []struct {
		ecs    string
		egress string
		want   string
	}{
		{"egress", "198.51.100.77", "198.51.100.0/24/0"},
		{"egress", "2001:db8:1234:5678::9", "[2001:db8:1234:5600::]/56/0"},
		{"off", "198.51.100.77", ""},
		{"egress", "", ""}, // no egress address known: nothing, never the client's
		{"none", "198.51.100.77", ""},
		{"fixed 192.0.2.0/25", "198.51.100.77", "192.0.2.0/25/0"},
		// A private egress (a NATed uplink) is never sent unless named.
		{"egress", "10.20.30.40", ""},
		{"egress", "100.64.7.8", ""},
		{"egress", "fd00::1", ""},
		{"fixed 10.20.0.0/16", "10.20.30.40", "10.20.0.0/16/0"},
	} {
		up := newTestUpstream(t)
		var eg netip.Addr
		if tc.egress != "" {
			eg = netip.MustParseAddr(tc.egress)
		}
		_, addr := startServer(t, Config{Upstreams: []string{up.addr}, ECS: tc.ecs}, Options{EgressAddr: eg})
		ask(t, addr, "udp", "a.test", mdns.TypeA, clientECS)
		if got := *up.lastECS.Load(); got != tc.want {
			t.Errorf("ecs %s egress %q: upstream saw ECS %q, want %q", tc.ecs, tc.egress, got, tc.want)
		}
	}
}

func TestCache(t *testing.T) {
	up := newTestUpstream(t)
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}}, Options{})
	ask(t, addr, "udp", "a.test", mdns.TypeA)
	ask(t, addr, "tcp", "a.test", mdns.TypeA)
	if n := up.queries.Load(); n != 1 {
		t.Errorf("2 identical queries: %d upstream queries, want 1", n)
	}
	// DO is part of the key.
	ask(t, addr, "udp", "a.test", mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(ednsSize, true) })
	if n := up.queries.Load(); n != 2 {
		t.Errorf("DO query: %d upstream queries, want 2", n)
	}
	// Negative caching: NXDOMAIN with the SOA.
	for range 2 {
		r := ask(t, addr, "udp", "nope.test", mdns.TypeA)
		if r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
			t.Errorf("nxdomain: %v", r)
		}
	}
	// NODATA too.
	for range 2 {
		ask(t, addr, "udp", "bad-ip.test", mdns.TypeMX)
	}
	if n := up.queries.Load(); n != 4 {
		t.Errorf("negative answers: %d upstream queries, want 4", n)
	}
	if st := s.Status(); st.CacheEntries != 4 {
		t.Errorf("cache entries %d, want 4", st.CacheEntries)
	}
}

func TestCacheTTLs(t *testing.T) {
	now := time.Unix(1e9, 0)
	c := newCache(1 << 20)
	m := new(mdns.Msg)
	m.SetQuestion("a.test.", mdns.TypeA)
	rr, _ := mdns.NewRR("a.test. 100 IN A 192.0.2.1")
	rr2, _ := mdns.NewRR("a.test. 50 IN A 192.0.2.2")
	m.Answer = []mdns.RR{rr, rr2}
	k := cacheKey{name: "a.test", qtype: mdns.TypeA, qclass: 1}
	e := c.put(k, m, now)
	if e == nil || e.ttl != 50*time.Second {
		t.Fatalf("ttl %v, want 50s (the smallest)", e.ttl)
	}
	for _, tc := range []struct {
		after        time.Duration
		found, fresh bool
	}{
		{49 * time.Second, true, true},
		{51 * time.Second, true, false},
		{staleFor + 49*time.Second, true, false},
		{staleFor + 51*time.Second, false, false},
	} {
		e, fresh := c.get(k, now.Add(tc.after))
		if (e != nil) != tc.found || fresh != tc.fresh {
			t.Errorf("after %v: found %v fresh %v", tc.after, e != nil, fresh)
		}
	}
	aged := ageTTLs(m.Answer, 30*time.Second, 0)
	if aged[0].Header().Ttl != 70 || aged[1].Header().Ttl != 20 || m.Answer[0].Header().Ttl != 100 {
		t.Errorf("aged TTLs %d %d (original %d)", aged[0].Header().Ttl, aged[1].Header().Ttl, m.Answer[0].Header().Ttl)
	}
	// Negative: min(SOA TTL, SOA minimum); failures and SOA-less negatives are not cached.
	neg := new(mdns.Msg)
	neg.Rcode = mdns.RcodeNameError
	soa, _ := mdns.NewRR("test. 3600 IN SOA ns.test. host.test. 1 3600 600 86400 120")
	neg.Ns = []mdns.RR{soa}
	if d, ok := cacheTTL(neg); !ok || d != 120*time.Second {
		t.Errorf("negative ttl %v %v", d, ok)
	}
	neg.Ns = nil
	if _, ok := cacheTTL(neg); ok {
		t.Error("negative answer without SOA cached")
	}
	if _, ok := cacheTTL(&mdns.Msg{MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeServerFailure}}); ok {
		t.Error("SERVFAIL cached")
	}
	// The memory bound holds.
	small := newCache(64 * 4096)
	for i := range 10000 {
		k := cacheKey{name: strings.Repeat("x", i%50) + ".test" + string(rune('a'+i%26)), qtype: uint16(i), qclass: 1}
		small.put(k, m, now)
	}
	if _, b := small.len(); b > 64*4096 {
		t.Errorf("cache holds %d bytes, bound %d", b, 64*4096)
	}
}

func TestServeStaleAndFailover(t *testing.T) {
	up := newTestUpstream(t)
	dead := deadAddr(t)
	clock := &fakeClock{t: time.Now()}
	s, addr := startServer(t, Config{Upstreams: []string{dead, up.addr}}, Options{Now: clock.now})
	// The dead first upstream fails over to the live one.
	if r := ask(t, addr, "udp", "short.test", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("failover: %v", r)
	}
	up.silent.Store(true)
	clock.add(10 * time.Second) // short.test's TTL is 2s
	r := ask(t, addr, "udp", "short.test", mdns.TypeA)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
		t.Fatalf("stale answer: %v", r)
	}
	if !hasEDE(r, edeStale) {
		t.Errorf("stale answer without EDE 3: %v", r)
	}
	// Nothing cached and nobody answers: SERVFAIL with EDE 22.
	r = ask(t, addr, "udp", "a.test", mdns.TypeAAAA)
	if r.Rcode != mdns.RcodeServerFailure || !hasEDE(r, edeNoReachable) {
		t.Errorf("no upstream: %v", r)
	}
	st := s.Status()
	if st.Upstreams[0].Healthy {
		t.Errorf("dead upstream healthy: %+v", st.Upstreams)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready with one upstream not yet in backoff: %v", err)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// deadAddr returns a local UDP and TCP address where nothing listens.
func deadAddr(t testing.TB) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := pc.LocalAddr().String()
	pc.Close()
	return a
}

func hasEDE(r *mdns.Msg, code uint16) bool {
	o := r.IsEdns0()
	if o == nil {
		return false
	}
	for _, opt := range o.Option {
		if e, ok := opt.(*mdns.EDNS0_EDE); ok && e.InfoCode == code {
			return true
		}
	}
	return false
}

func TestEncryptedUpstreams(t *testing.T) {
	up := newTestUpstream(t)
	cert, pool := selfSigned(t)
	// DoT: a miekg/dns TLS server in front of the test zone.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	dot := &mdns.Server{Listener: ln, Net: "tcp-tls", Handler: up}
	up.serve(dot)
	// DoH: RFC 8484 POST.
	doh := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := new(mdns.Msg)
		if r.Header.Get("Content-Type") != "application/dns-message" || q.Unpack(body) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		c := &mdns.Client{Net: "udp", UDPSize: 65535}
		a, _, err := c.Exchange(q, up.addr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out, _ := a.Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(out)
	}))
	doh.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	doh.StartTLS()
	t.Cleanup(doh.Close)

	for _, spec := range []string{"tls://" + ln.Addr().String(), doh.URL + "/dns-query"} {
		_, addr := startServer(t, Config{Upstreams: []string{spec}}, Options{TLSConfig: &tls.Config{RootCAs: pool}})
		for _, name := range []string{"a.test", "chain.test", "big.test"} {
			qt := mdns.TypeA
			if name == "big.test" {
				qt = mdns.TypeTXT
			}
			r := ask(t, addr, "tcp", name, qt)
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 {
				t.Errorf("%s via %s: %v", name, spec, r)
			}
		}
	}
}

func TestMetricsLint(t *testing.T) {
	up := newTestUpstream(t)
	reg := prometheus.NewPedanticRegistry()
	_, addr := startServer(t, Config{Upstreams: []string{up.addr}, Lists: nil}, Options{Registerer: reg})
	ask(t, addr, "udp", "a.test", mdns.TypeA)
	// The query is counted once its answer is written: the client may
	// read the answer first.
	var mfs []*dto.MetricFamily
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if mfs, err = reg.Gather(); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "edgegw_dns_queries_total" }) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"edgegw_dns_queries_total", "edgegw_dns_cache_lookups_total", "edgegw_dns_upstream_requests_total", "edgegw_dns_upstream_up"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}

func TestPrefetch(t *testing.T) {
	up := newTestUpstream(t)
	clock := &fakeClock{t: time.Now()}
	reg := prometheus.NewRegistry()
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}}, Options{Now: clock.now, Registerer: reg})
	for range prefetchHits {
		ask(t, addr, "udp", "a.test", mdns.TypeA)
	}
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("%d upstream queries, want 1", n)
	}
	clock.add(280 * time.Second) // 20s of 300s left: under a tenth
	r := ask(t, addr, "udp", "a.test", mdns.TypeA)
	if r.Answer[0].Header().Ttl != 20 {
		t.Errorf("aged TTL %d, want 20", r.Answer[0].Header().Ttl)
	}
	eventually(t, 5*time.Second, "prefetch", func() bool {
		e, _ := s.cache.get(cacheKey{name: "a.test", qtype: mdns.TypeA, qclass: mdns.ClassINET}, clock.now())
		return up.queries.Load() == 2 && e != nil && e.stored.Equal(clock.now())
	})
	// The refreshed answer is served with its full TTL, from the cache.
	if r := ask(t, addr, "udp", "a.test", mdns.TypeA); r.Answer[0].Header().Ttl != 300 || up.queries.Load() != 2 {
		t.Errorf("after prefetch: TTL %d, %d upstream queries", r.Answer[0].Header().Ttl, up.queries.Load())
	}
}

// TestRunStops checks that Run returns when its context ends, with its
// goroutines gone and its port free.
func TestRunStops(t *testing.T) {
	up := newTestUpstream(t)
	before := runtime.NumGoroutine()
	s, err := New(Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, Upstreams: []string{"tls://" + up.addr}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	eventually(t, 5*time.Second, "ready", func() bool { return s.Ready() == nil })
	addr := s.Status().Listening[0].String()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.Ready() == nil {
		t.Error("Ready after Run returned")
	}
	eventually(t, 5*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Errorf("port still bound: %v", err)
	} else {
		pc.Close()
	}
}

// TestWildcardListen serves on 0.0.0.0 (a dual-stack socket), answering
// UDP from the address each query came to, and on ::1. On both the
// arrival interface is known (IPV6_PKTINFO, v4-mapped for IPv4 clients),
// so the client's identity holds.
func TestWildcardListen(t *testing.T) {
	up := newTestUpstream(t)
	ids := staticIDs{
		netip.MustParseAddr("127.0.0.1"): {Email: "w@corp.example", Interface: "lo"},
		netip.MustParseAddr("::1"):       {Email: "w@corp.example", Interface: "lo"},
	}
	for _, listen := range []string{"0.0.0.0:0", "[::1]:0"} {
		cfg := Config{Listen: []netip.AddrPort{netip.MustParseAddrPort(listen)}, Upstreams: []string{up.addr},
			Policies: []Policy{{ID: "w", Expression: `identity.email == "w@corp.example" and dns.fqdn == "who.test"`,
				Action: "override", Override: []string{"10.7.7.7"}}}}
		s, err := New(cfg, Options{IdentitySource: ids})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		eventually(t, 5*time.Second, "ready", func() bool { return s.Ready() == nil })
		port := s.Status().Listening[0].Port()
		host := "127.0.0.1"
		if strings.HasPrefix(listen, "[") {
			host = "::1"
		}
		addr := netip.AddrPortFrom(netip.MustParseAddr(host), port).String()
		for _, proto := range []string{"udp", "tcp"} {
			if r := ask(t, addr, proto, "a.test", mdns.TypeA); len(r.Answer) != 1 {
				t.Errorf("%s over %s: %v", listen, proto, r)
			}
			if r := ask(t, addr, proto, "who.test", mdns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.7.7.7" {
				t.Errorf("%s over %s: identity not seen: %v", listen, proto, r)
			}
		}
		if host == "127.0.0.1" {
			// Asked at 127.0.0.2, the answer must come from 127.0.0.2 (the
			// kernel alone would pick 127.0.0.1): the client's connected
			// socket accepts nothing else.
			other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port).String()
			if r := ask(t, other, "udp", "a.test", mdns.TypeA); len(r.Answer) != 1 {
				t.Errorf("asked at %s: %v", other, r)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestDoHHandler(t *testing.T) {
	up := newTestUpstream(t)
	s, _ := startServer(t, Config{Upstreams: []string{up.addr}}, Options{})
	hs := httptest.NewTLSServer(s.DoHHandler(DoHAnyClient))
	t.Cleanup(hs.Close)
	q := new(mdns.Msg)
	q.SetQuestion("a.test.", mdns.TypeA)
	q.Id = 0
	b, _ := q.Pack()
	for _, method := range []string{"GET", "POST"} {
		var resp *http.Response
		var err error
		if method == "GET" {
			resp, err = hs.Client().Get(hs.URL + "/dns-query?dns=" + base64.RawURLEncoding.EncodeToString(b))
		} else {
			resp, err = hs.Client().Post(hs.URL+"/dns-query", "application/dns-message", bytes.NewReader(b))
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := new(mdns.Msg)
		if resp.StatusCode != 200 || r.Unpack(body) != nil || len(r.Answer) != 1 || r.Id != 0 {
			t.Errorf("%s: %s %v", method, resp.Status, r)
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "max-age=") {
			t.Errorf("%s: Cache-Control %q", method, cc)
		}
	}
	resp, err := hs.Client().Get(hs.URL + "/dns-query?dns=AAAA")
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed GET: %v %v", resp.Status, err)
	}
}

func TestSourceAddr(t *testing.T) {
	// The upstream sees queries from 127.0.0.2, the configured source.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	from := make(chan netip.Addr, 1)
	go func() {
		buf := make([]byte, 512)
		_, a, err := pc.ReadFrom(buf)
		if err == nil {
			from <- a.(*net.UDPAddr).AddrPort().Addr()
		}
	}()
	_, addr := startServer(t, Config{Upstreams: []string{pc.LocalAddr().String()}},
		Options{SourceAddr: netip.MustParseAddr("127.0.0.2")})
	go func() {
		c := &mdns.Client{Timeout: time.Second}
		m := new(mdns.Msg)
		m.SetQuestion("a.test.", mdns.TypeA)
		c.Exchange(m, addr)
	}()
	select {
	case a := <-from:
		if a != netip.MustParseAddr("127.0.0.2") {
			t.Errorf("query from %s, want 127.0.0.2", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no query upstream")
	}
}
