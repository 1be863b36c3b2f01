package dns

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// testUpstream is a local authoritative-style DNS server for tests. It
// answers from a zone written in presentation format, records the ECS
// option and DO bit of each query, and can be told to stop answering.
type testUpstream struct {
	t       testing.TB
	addr    string // host:port, UDP and TCP
	mu      sync.Mutex
	zone    map[string][]mdns.RR // "name type" → records
	queries atomic.Int64
	silent  atomic.Bool // drop every query
	lastECS atomic.Pointer[string]
	lastDO  atomic.Bool
	servers []*mdns.Server
}

var testZone = `
a.test.             300 IN A     192.0.2.1
a.test.             300 IN AAAA  2001:db8::1
a.test.             300 IN RRSIG A 13 2 300 20300101000000 20200101000000 12345 test. dGVzdA==
short.test.         2   IN A     192.0.2.2
chain.test.         300 IN CNAME hop.test.
hop.test.           300 IN CNAME cdn.tracker.test.
cdn.tracker.test.   300 IN A     198.51.100.7
bad-ip.test.        300 IN A     203.0.113.66
forcesafesearch.google.com. 300 IN A 216.239.38.120
restrict.youtube.com.       300 IN A 216.239.38.120
intranet.target.test.       300 IN A 10.9.9.9
`

func newTestUpstream(t testing.TB) *testUpstream {
	t.Helper()
	u := &testUpstream{t: t, zone: map[string][]mdns.RR{}}
	for line := range strings.SplitSeq(testZone, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		u.add(line)
	}
	// A big TXT answer that does not fit 1232 bytes.
	for i := range 20 {
		u.add("big.test. 300 IN TXT \"" + strings.Repeat(string(rune('a'+i)), 200) + "\"")
	}
	pc, ln := listenUDPTCP(t)
	u.addr = pc.LocalAddr().String()
	u.serve(&mdns.Server{PacketConn: pc, Handler: u})
	u.serve(&mdns.Server{Listener: ln, Handler: u})
	t.Cleanup(u.close)
	return u
}

// listenUDPTCP binds UDP and TCP on one free loopback port. The TCP port
// may be taken even though the UDP one was free (by another test's
// outgoing connection, for one), so it tries again with a new port.
func listenUDPTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var err error
	for range 20 {
		pc, perr := net.ListenPacket("udp", "127.0.0.1:0")
		if perr != nil {
			t.Fatal(perr)
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", err)
	return nil, nil
}

func (u *testUpstream) add(line string) {
	rr, err := mdns.NewRR(line)
	if err != nil {
		u.t.Fatalf("zone %q: %v", line, err)
	}
	k := strings.ToLower(rr.Header().Name) + " " + mdns.Type(rr.Header().Rrtype).String()
	if sig, ok := rr.(*mdns.RRSIG); ok {
		k = strings.ToLower(rr.Header().Name) + " RRSIG-" + mdns.Type(sig.TypeCovered).String()
	}
	u.mu.Lock()
	u.zone[k] = append(u.zone[k], rr)
	u.mu.Unlock()
}

func (u *testUpstream) serve(s *mdns.Server) {
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go s.ActivateAndServe()
	<-started
	u.servers = append(u.servers, s)
}

func (u *testUpstream) close() {
	for _, s := range u.servers {
		s.Shutdown()
	}
}

// ServeDNS answers like an authoritative server with recursion: it follows
// CNAMEs within the zone.
func (u *testUpstream) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	u.queries.Add(1)
	ecs := ""
	do := false
	if o := r.IsEdns0(); o != nil {
		do = o.Do()
		for _, opt := range o.Option {
			if e, ok := opt.(*mdns.EDNS0_SUBNET); ok {
				ecs = e.String()
			}
		}
	}
	u.lastECS.Store(&ecs)
	u.lastDO.Store(do)
	if u.silent.Load() {
		return
	}
	m := new(mdns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	u.mu.Lock()
	for range 8 {
		rrs := u.zone[name+" "+mdns.Type(q.Qtype).String()]
		if len(rrs) > 0 {
			m.Answer = append(m.Answer, rrs...)
			if do {
				m.Answer = append(m.Answer, u.zone[name+" RRSIG-"+mdns.Type(q.Qtype).String()]...)
			}
			break
		}
		c := u.zone[name+" CNAME"]
		if len(c) == 0 {
			break
		}
		m.Answer = append(m.Answer, c...)
		name = c[0].(*mdns.CNAME).Target
	}
	exists := len(m.Answer) > 0
	for k := range u.zone {
		exists = exists || strings.HasPrefix(k, name+" ")
	}
	u.mu.Unlock()
	if len(m.Answer) == 0 {
		if !exists {
			m.Rcode = mdns.RcodeNameError
		}
		soa, _ := mdns.NewRR("test. 3600 IN SOA ns.test. host.test. 1 3600 600 86400 120")
		m.Ns = []mdns.RR{soa}
	}
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(o.UDPSize(), do)
	}
	if _, ok := w.LocalAddr().(*net.UDPAddr); ok {
		size := mdns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"upstream.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// startServer runs a Server for cfg on 127.0.0.1:0 until the test ends.
func startServer(t testing.TB, cfg Config, opts Options) (*Server, string) {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	eventually(t, 5*time.Second, "server ready", func() bool { return len(s.Status().Listening) > 0 })
	return s, s.Status().Listening[0].String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ask sends one query and returns the answer.
func ask(t testing.TB, addr, net, name string, qtype uint16, edit ...func(*mdns.Msg)) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	m.SetEdns0(ednsSize, false)
	for _, f := range edit {
		f(m)
	}
	c := &mdns.Client{Net: net, Timeout: 5 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, mdns.Type(qtype), net, err)
	}
	return r
}

// recSink collects pushed records.
type recSink struct {
	mu   sync.Mutex
	recs []logpush.Record
}

func (s *recSink) Push(dataset string, r logpush.Record) {
	if dataset != "gateway_dns" {
		panic("dataset " + dataset)
	}
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

func (s *recSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

func (s *recSink) last() logpush.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.recs) == 0 {
		return nil
	}
	return s.recs[len(s.recs)-1]
}
