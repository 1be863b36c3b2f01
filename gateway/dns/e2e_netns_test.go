//go:build linux

package dns

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// The end-to-end topology, one namespace each:
//
//	client 10.1.0.2 ── 10.1.0.1 gw (edgegw) 100.64.0.2 ── 100.64.0.1 res (Unbound)
//	                                                      192.0.2.1 ── 192.0.2.53 auth (Knot)
//
// The client has no route beyond gw. edgegw's public egress address is
// e2eEgress (the address its traffic is NATed to), so the ECS it sends is
// 198.51.100.0/24: different from its own source (100.64.0.2), from the
// client (10.1.0.2) and from any subnet a client sends.
const (
	e2eClient   = "10.1.0.2"
	e2eGWIn     = "10.1.0.1"
	e2eGWOut    = "100.64.0.2"
	e2eResolver = "100.64.0.1"
	e2eResOut   = "192.0.2.1"
	e2eAuth     = "192.0.2.53"
	e2eEgress   = "198.51.100.23"
	e2eECS      = "198.51.100.0"
)

// e2eZones are Knot's zones: example.test and broken.test are signed by
// Knot; Unbound trusts example.test's key and a wrong one for broken.test,
// so broken.test answers are bogus unless the client sets CD.
var e2eZones = map[string]string{
	"example.test": `
@        SOA   ns admin 1 3600 600 86400 60
@        NS    ns
ns       A     192.0.2.53
www      A     203.0.113.80
www      AAAA  2001:db8::80
chain    CNAME c2
c2       CNAME c3.other.test.
track    CNAME t.tracker.other.test.
short 2  A     203.0.113.82
ads      A     203.0.113.66
intranet A     203.0.113.67
ecs      A     203.0.113.83
*.wild   A     203.0.113.90
` + bigTXT(),
	"other.test": `
@        SOA   ns.example.test. admin 1 3600 600 86400 60
@        NS    ns.example.test.
c3       CNAME cdn
cdn      A     203.0.113.81
t.tracker A    203.0.113.98
`,
	"broken.test": `
@        SOA   ns.example.test. admin 1 3600 600 86400 60
@        NS    ns.example.test.
www      A     203.0.113.85
`,
}

// bigTXT is an RRset of about 6 KB: more than any UDP answer edgegw or
// Unbound sends, so every hop falls back to TCP.
func bigTXT() string {
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "big TXT \"%02d%s\"\n", i, strings.Repeat("x", 198))
	}
	return b.String()
}

// e2eLab is the running topology.
type e2eLab struct {
	lab                   *netlab.Lab
	client, gw, res, auth *netlab.NS
	dir                   string
	unbound               *netlab.Proc
	caPEM                 string // trusts gw.test and resolver.test
	gwCert                tls.Certificate
	srv                   *Server
	reg                   *prometheus.Registry
	sink                  *recSink
	dns, dot, doh         string // edgegw's listeners, host:port
	capRes, capAuth       *netlab.Proc
	pcapRes, pcapAuth     string
}

// TestE2ERealServers runs edgegw between stock clients (dig, kdig) and a
// real resolution path (Unbound recursing to Knot), each in its own
// namespace: answers over UDP, TCP, DoT and DoH, CNAME chains, truncation
// and TCP fallback on every hop, DNSSEC records and the AD, DO and CD bits
// passed through, DoT and DoH upstreams, policies with the client's
// identity, ECS of the egress subnet proven by packet captures on the
// upstream side, and stale answers once Unbound is killed.
func TestE2ERealServers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, tool := range []string{"knotd", "unbound", "dig", "kdig", "dumpcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Skipf("%s not installed (Debian knot, unbound, bind9-dnsutils, knot-dnsutils, tshark)", tool)
			}
		}
	}
	e := newE2ELab(t)

	dig := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := e.client.Exec(ctx, "dig", append([]string{"@" + e2eGWIn, "+time=5", "+tries=1"}, args...)...)
		if err != nil {
			t.Fatalf("dig %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	kdig := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := e.client.Exec(ctx, "kdig", append([]string{"+timeout=5", "+retry=0"}, args...)...)
		if err != nil {
			t.Fatalf("kdig %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	tlsArgs := []string{"+tls-ca=" + e.caPEM, "+tls-hostname=gw.test"}
	for _, tc := range []struct {
		name string
		out  func() string
		want []string
		not  []string
	}{
		{"udp", func() string { return dig("www.example.test", "A") },
			[]string{"status: NOERROR", "IN\tA\t203.0.113.80", "udp: 1232", "flags: qr rd ra;"}, nil},
		{"tcp", func() string { return dig("+tcp", "www.example.test", "AAAA") },
			[]string{"status: NOERROR", "2001:db8::80"}, nil},
		{"cname-chain", func() string { return dig("chain.example.test", "A") },
			[]string{"CNAME\tc2.example.test.", "CNAME\tc3.other.test.", "CNAME\tcdn.other.test.", "A\t203.0.113.81"}, nil},
		// Knot truncates to Unbound, Unbound to edgegw and edgegw to dig:
		// each retries over TCP (the capture checks edgegw's retry).
		{"truncated-udp", func() string { return dig("+ignore", "+bufsize=1232", "big.example.test", "TXT") },
			[]string{"flags: qr tc rd ra"}, nil},
		{"tcp-fallback", func() string { return dig("+bufsize=1232", "big.example.test", "TXT") },
			[]string{"Truncated, retrying in TCP mode", "ANSWER: 30,"}, nil},
		{"dnssec-do-ad", func() string { return dig("+dnssec", "www.example.test", "A") },
			[]string{"flags: qr rd ra ad;", "flags: do;", "RRSIG\tA 13 3 300"}, nil},
		{"no-do-no-rrsig", func() string { return dig("www.example.test", "A") },
			nil, []string{"RRSIG"}},
		{"kdig-dnssec-tcp", func() string { return kdig("@"+e2eGWIn, "+tcp", "+dnssec", "www.example.test", "A") },
			[]string{"Flags: qr rd ra ad;", "flags: do;", "RRSIG", "203.0.113.80"}, nil},
		{"bogus-servfail", func() string { return dig("www.broken.test", "A") },
			[]string{"status: SERVFAIL"}, []string{"203.0.113.85"}},
		{"bogus-with-cd", func() string { return dig("+cd", "+dnssec", "www.broken.test", "A") },
			[]string{"status: NOERROR", "flags: qr rd ra cd;", "203.0.113.85", "RRSIG"}, nil},
		{"dot", func() string {
			return kdig(append([]string{"@" + e2eGWIn, "-p", port(e.dot), "+tls"}, append(tlsArgs, "www.example.test", "A")...)...)
		}, []string{"TLS session", "status: NOERROR", "203.0.113.80"}, nil},
		{"doh-get", func() string {
			return kdig(append([]string{"@" + e2eGWIn, "-p", port(e.doh), "+https=/dns-query", "+https-get"}, append(tlsArgs, "chain.example.test", "A")...)...)
		}, []string{"status: 200", "status: NOERROR", "203.0.113.81"}, nil},
		{"doh-post-dnssec", func() string {
			return kdig(append([]string{"@" + e2eGWIn, "-p", port(e.doh), "+https=/dns-query", "+dnssec"}, append(tlsArgs, "www.example.test", "A")...)...)
		}, []string{"status: 200", "RRSIG", "Flags: qr rd ra ad;"}, nil},
		{"block", func() string { return dig("ads.example.test", "A") },
			[]string{"IN\tA\t0.0.0.0", "EDE: 15 (Blocked): (blocked by policy no-ads)"}, nil},
		{"cname-to-blocked", func() string { return dig("track.example.test", "A") },
			[]string{"IN\tA\t0.0.0.0", "(blocked by policy no-trackers)"}, []string{"203.0.113.98"}},
		{"identity-override", func() string { return dig("intranet.example.test", "A") },
			[]string{"IN\tA\t10.0.0.5", "EDE: 4 (Forged Answer)"}, []string{"203.0.113.67"}},
		// Client-sent subnets are dropped: the capture sees only the egress one.
		{"client-ecs-stripped", func() string { return dig("+subnet=10.1.0.0/24", "ecs.example.test", "A") },
			[]string{"203.0.113.83"}, []string{"CLIENT-SUBNET"}},
		{"client-ecs-public-stripped", func() string { return dig("+subnet=192.0.2.0/24", "x1.wild.example.test", "A") },
			[]string{"203.0.113.90"}, []string{"CLIENT-SUBNET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := tc.out()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in\n%s", w, out)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out, w) {
					t.Errorf("unexpected %q in\n%s", w, out)
				}
			}
		})
	}

	t.Run("upstream-dot-doh", func(t *testing.T) {
		for i, up := range []string{"tls://" + e2eResolver + ":853", "https://" + e2eResolver + ":443/dns-query"} {
			cfg := e.srv.cfg.Clone()
			cfg.Upstreams = []string{up}
			if err := e.srv.Set(*cfg); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("up%d.wild.example.test", i)
			if out := dig(name, "A"); !strings.Contains(out, "203.0.113.90") {
				t.Errorf("via %s: %s", up, out)
			}
			// A new cache key each time (CD, then CD and DO): it is asked upstream.
			flags := []string{"+cd", "+cd +dnssec"}[i]
			if out := dig(append(strings.Fields(flags), "+tcp", "big.example.test", "TXT")...); !strings.Contains(out, "TXT\t\"29xxx") {
				t.Errorf("big answer via %s: %s", up, out)
			}
			if n := testutil.ToFloat64(e.srv.m.upstreamReqs.WithLabelValues(up, "ok")); n < 2 {
				t.Errorf("%s answered %v queries, want 2", up, n)
			}
		}
		cfg := e.srv.cfg.Clone()
		cfg.Upstreams = []string{e2eResolver + ":53"}
		if err := e.srv.Set(*cfg); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("records", func(t *testing.T) {
		protos := map[string]bool{}
		e.sink.mu.Lock()
		for _, r := range e.sink.recs {
			protos[field(r, "Protocol")] = true
			if field(r, "QueryName") == "intranet.example.test" {
				if field(r, "Email") != "alice@corp.example" || field(r, "DeviceID") != "dev_alicelaptop" ||
					field(r, "PolicyID") != "ops-intranet" || field(r, "SrcIP") != e2eClient {
					t.Errorf("intranet record: %v", r)
				}
			}
		}
		e.sink.mu.Unlock()
		for _, p := range []string{"udp", "tcp", "tls", "https"} {
			if !protos[p] {
				t.Errorf("no record with Protocol %q (have %v)", p, protos)
			}
		}
	})

	// Stop the captures before Unbound goes away, then check what
	// edgegw sent and what reached Knot.
	t.Run("ecs-capture", func(t *testing.T) { e.checkCaptures(t) })

	t.Run("stale-when-upstream-killed", func(t *testing.T) {
		if out := dig("short.example.test", "A"); !strings.Contains(out, "203.0.113.82") {
			t.Fatalf("short: %s", out)
		}
		if err := e.unbound.Kill(); err != nil {
			t.Logf("unbound: %v", err) // killed: exit status is a signal
		}
		before := testutil.ToFloat64(e.srv.m.cacheStale)
		// short has a TTL of 2 s: once it expires, the answer is stale.
		var out string
		netlab.Eventually(t, 20*time.Second, "stale answer", func() error {
			out = dig("short.example.test", "A")
			if !strings.Contains(out, "EDE: 3 (Stale Answer)") {
				return fmt.Errorf("not stale yet:\n%s", out)
			}
			return nil
		})
		for _, w := range []string{"status: NOERROR", "30\tIN\tA\t203.0.113.82"} {
			if !strings.Contains(out, w) {
				t.Errorf("stale answer: no %q in\n%s", w, out)
			}
		}
		if after := testutil.ToFloat64(e.srv.m.cacheStale); after <= before {
			t.Errorf("stale answers counted %v, before %v", after, before)
		}
		// A name never cached fails cleanly, with an EDE.
		if out := dig("never.wild.example.test", "A"); !strings.Contains(out, "status: SERVFAIL") ||
			!strings.Contains(out, "EDE: 22 (No Reachable Authority)") {
			t.Errorf("uncached name with upstream down:\n%s", out)
		}
		if n := testutil.ToFloat64(e.srv.m.cacheStale); n < 1 {
			t.Errorf("edgegw_dns_cache_lookups_total{result=stale} = %v", n)
		}
	})
}

// newE2ELab builds the namespaces and starts Knot, Unbound, the captures
// and edgegw.
func newE2ELab(t *testing.T) *e2eLab {
	dir := t.TempDir() // removed after the lab has stopped Knot and Unbound
	lab := netlab.NewT(t)
	e := &e2eLab{lab: lab, dir: dir}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	for _, ns := range []struct {
		p    **netlab.NS
		name string
	}{{&e.client, "client"}, {&e.gw, "gw"}, {&e.res, "res"}, {&e.auth, "auth"}} {
		*ns.p, err = lab.NS(ns.name)
		must(err)
	}
	must(lab.Link(e.client, "eth0", e2eClient+"/24", e.gw, "eth0", e2eGWIn+"/24"))
	must(lab.Link(e.gw, "eth1", e2eGWOut+"/24", e.res, "eth0", e2eResolver+"/24"))
	must(lab.Link(e.res, "eth1", e2eResOut+"/24", e.auth, "eth0", e2eAuth+"/24"))

	e.certs(t)
	e.startKnot(t)
	e.pcapRes, e.capRes = e.capture(t, e.res, "res", e2eGWOut)
	e.pcapAuth, e.capAuth = e.capture(t, e.auth, "auth", e2eResOut)
	e.startUnbound(t)
	e.startEdgegw(t)
	return e
}

// certs writes a self-signed certificate for resolver.test (Unbound's DoT
// and DoH) and gw.test (edgegw's DoT and DoH), and the PEM clients trust.
func (e *e2eLab) certs(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "gw.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames:    []string{"gw.test", "resolver.test"},
		IPAddresses: []net.IP{net.ParseIP(e2eGWIn), net.ParseIP(e2eResolver)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	e.caPEM = filepath.Join(e.dir, "cert.pem")
	write(t, e.caPEM, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, filepath.Join(e.dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	e.gwCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startKnot serves e2eZones, signing example.test and broken.test.
func (e *e2eLab) startKnot(t *testing.T) {
	dir := filepath.Join(e.dir, "knot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var zones strings.Builder
	for name, body := range e2eZones {
		write(t, filepath.Join(dir, name+".zone"), "$ORIGIN "+name+".\n$TTL 300\n"+body)
		fmt.Fprintf(&zones, "  - domain: %s\n", name)
		if name != "other.test" {
			zones.WriteString("    dnssec-signing: on\n    dnssec-policy: fast\n")
		}
	}
	conf := filepath.Join(dir, "knot.conf")
	write(t, conf, fmt.Sprintf(`server:
  rundir: %[1]q
  listen: %[2]s@53
  edns-client-subnet: on
log:
  - target: stderr
    any: info
database:
  storage: %[1]q
policy:
  - id: fast
    algorithm: ecdsap256sha256
template:
  - id: default
    storage: %[1]q
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
zone:
%[3]s`, dir, e2eAuth, zones.String()))
	p, err := e.auth.Start("knotd", "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	netlab.Eventually(t, 20*time.Second, "knot serves signed zones", func() error {
		select {
		case <-p.Done():
			t.Fatalf("knotd exited: %s", p.Output())
		default:
		}
		for _, z := range []string{"example.test.", "broken.test."} {
			if _, err := e.dnskey(z); err != nil {
				return err
			}
		}
		return nil
	})
}

// dnskey returns zone's key-signing key, asked of Knot from the resolver's
// namespace.
func (e *e2eLab) dnskey(zone string) (*mdns.DNSKEY, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	nc, err := e.res.DialContext(ctx, "udp", e2eAuth+":53")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	m := new(mdns.Msg)
	m.SetQuestion(zone, mdns.TypeDNSKEY)
	m.SetEdns0(4096, true)
	c := &mdns.Client{Timeout: 2 * time.Second, UDPSize: 4096}
	r, _, err := c.ExchangeWithConnContext(ctx, m, &mdns.Conn{Conn: nc, UDPSize: 4096})
	if err != nil {
		return nil, err
	}
	for _, rr := range r.Answer {
		if k, ok := rr.(*mdns.DNSKEY); ok && k.Flags == 257 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s: no KSK yet (rcode %s)", zone, mdns.RcodeToString[r.Rcode])
}

// capture starts dumpcap on ns's eth0 (its link to peer) and waits until
// it captures.
func (e *e2eLab) capture(t *testing.T, ns *netlab.NS, name, peer string) (string, *netlab.Proc) {
	file := filepath.Join(e.dir, name+".pcapng")
	return file, startCapture(t, ns, file, "port 53", peer)
}

// startUnbound runs Unbound as a validating recursor to Knot, with ECS
// (subnetcache) towards Knot, serving plain DNS, DoT and DoH.
func (e *e2eLab) startUnbound(t *testing.T) {
	dir := filepath.Join(e.dir, "unbound")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ksk, err := e.dnskey("example.test.")
	if err != nil {
		t.Fatal(err)
	}
	// broken.test's anchor is a DS that matches no key: its answers are bogus.
	bogus := "broken.test. DS 4711 13 2 " + strings.Repeat("ab", 32)
	var stubs strings.Builder
	for name := range e2eZones {
		fmt.Fprintf(&stubs, "stub-zone:\n  name: %q\n  stub-addr: %s\n", name+".", e2eAuth)
	}
	conf := filepath.Join(dir, "unbound.conf")
	write(t, conf, fmt.Sprintf(`server:
  interface: %[1]s@53
  interface: %[1]s@853
  interface: %[1]s@443
  tls-port: 853
  https-port: 443
  tls-service-key: %[2]q
  tls-service-pem: %[3]q
  num-threads: 1
  chroot: ""
  username: ""
  directory: %[4]q
  pidfile: "%[4]s/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  access-control: 100.64.0.0/24 allow
  module-config: "subnetcache validator iterator"
  send-client-subnet: %[5]s
  max-client-subnet-ipv4: 24
  qname-minimisation: no
  local-zone: "test." nodefault
  trust-anchor: %[6]q
  trust-anchor: %[7]q
%[8]s`, e2eResolver, filepath.Join(e.dir, "key.pem"), e.caPEM, dir, e2eAuth, strings.ReplaceAll(ksk.String(), "\t", " "), bogus, stubs.String()))
	p, err := e.res.Start("unbound", "-d", "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	e.unbound = p
	netlab.Eventually(t, 20*time.Second, "unbound answers", func() error {
		select {
		case <-p.Done():
			t.Fatalf("unbound exited: %s", p.Output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		// From Unbound's own namespace, with an ECS of /0 (RFC 7871: do
		// not send a subnet), so that Knot sees no other subnet.
		out, err := e.res.Exec(ctx, "kdig", "@"+e2eResolver, "+timeout=1", "+retry=0", "+subnet=0.0.0.0/0", "ns.example.test", "A")
		if err != nil || !strings.Contains(string(out), "192.0.2.53") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// startEdgegw runs the resolver in gw: listeners bound there, upstream
// sockets dialed there from e2eGWOut, DoT and DoH on e2eGWIn.
func (e *e2eLab) startEdgegw(t *testing.T) {
	cfg := Config{
		Listen:    []netip.AddrPort{netip.MustParseAddrPort(e2eGWIn + ":53")},
		Upstreams: []string{e2eResolver + ":53"},
		Policies: []Policy{
			{ID: "no-ads", Expression: `dns.domains contains "ads.example.test"`, Action: "block"},
			{ID: "ops-intranet", Expression: `identity.groups contains "it-ops" and dns.fqdn == "intranet.example.test"`,
				Action: "override", Override: []string{"10.0.0.5"}},
			{ID: "no-trackers", Expression: `dns.cname_domains contains "tracker.other.test"`, Action: "block"},
		},
	}
	roots := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(e.caPEM)
	roots.AppendCertsFromPEM(pemBytes)
	src := netip.MustParseAddr(e2eGWOut)
	e.reg = prometheus.NewRegistry()
	e.sink = &recSink{}
	s, err := New(cfg, Options{
		Registerer: e.reg,
		EgressAddr: netip.MustParseAddr(e2eEgress),
		IdentitySource: staticIDs{netip.MustParseAddr(e2eClient): {
			Email: "alice@corp.example", Groups: []string{"it-ops"}, DeviceID: "dev_alicelaptop", Interface: "eth0"}},
		Sink:      e.sink,
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "resolver.test", MinVersion: tls.VersionTLS12},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := e.gw.Do(func() error {
				d := net.Dialer{FallbackDelay: -1}
				if strings.HasPrefix(network, "udp") {
					d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
				} else {
					d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
				}
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	go func() { done <- e.gw.Do(func() error { return s.Run(ctx) }) }()

	dotLn, err := e.gw.Listen("tcp", e2eGWIn+":853")
	if err != nil {
		t.Fatal(err)
	}
	e.dot = dotLn.Addr().String()
	go func() {
		done <- s.ServeDoT(ctx, dotLn, &tls.Config{Certificates: []tls.Certificate{e.gwCert}})
	}()
	dohLn, err := e.gw.Listen("tcp", e2eGWIn+":443")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dns-query", s.DoHHandler(DoHIdentifiedOnly))
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener.Close()
	hs.Listener = dohLn
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{e.gwCert}}
	hs.EnableHTTP2 = true // kdig speaks DoH over HTTP/2 only
	hs.StartTLS()
	e.doh = dohLn.Addr().String()
	t.Cleanup(func() {
		hs.Close()
		cancel()
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("edgegw: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("edgegw did not stop")
			}
		}
	})
	eventually(t, 10*time.Second, "edgegw listening", func() bool { return len(s.Status().Listening) > 0 })
}

// checkCaptures stops the captures and reads them with tshark: every
// query edgegw sent upstream carries the egress subnet and nothing of the
// client's; the big answer was truncated over UDP and asked again over
// TCP; the subnet reached Knot.
//
// dumpcap drops what the kernel has not yet handed it when it is stopped
// (a TPACKET_V3 block is handed over only when full or after its timeout),
// so the last queries of the run can be missing from a file stopped at
// once. It flushes its file each time it reports a packet count, so the
// test reads the live file until the names it asked last are there, and
// only then stops dumpcap.
func (e *e2eLab) checkCaptures(t *testing.T) {
	read := func(file string, live bool) [][]string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "tshark", "-r", file, "-n", "-Y", "dns", "-T", "fields",
			"-E", "separator=|", "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "dns.flags.response",
			"-e", "dns.qry.name", "-e", "dns.flags.truncated", "-e", "dns.opt.client.addr4", "-e", "dns.opt.client.netmask").Output()
		// A live file may end in half a packet; tshark says so and exits 2
		// after printing every whole one.
		if err != nil && !live {
			t.Fatalf("tshark %s: %v", file, err)
		}
		var rows [][]string
		for line := range strings.Lines(string(out)) {
			rows = append(rows, strings.Split(strings.TrimRight(line, "\n"), "|"))
		}
		return rows
	}
	last := []string{"ecs.example.test", "x1.wild.example.test"}
	deadline := time.Now().Add(20 * time.Second)
	for {
		names := map[string]bool{}
		for _, r := range read(e.pcapRes, true) {
			if len(r) > 4 {
				names[r[4]] = true
			}
		}
		if names[last[0]] && names[last[1]] || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range []*netlab.Proc{e.capRes, e.capAuth} {
		p.Stop() // SIGTERM: dumpcap closes the file
	}
	const (
		cSrc = iota
		cDst
		cTCP
		cResp
		cName
		cTC
		cECS
		cMask
	)
	// Between edgegw and Unbound.
	queries, tcpBig, tcBig := 0, false, false
	asked := map[string]bool{}
	for _, r := range read(e.pcapRes, false) {
		if strings.Contains(strings.Join(r, " "), "10.1.0.") {
			t.Errorf("client address upstream of edgegw: %v", r)
		}
		if r[cSrc] == e2eGWOut && r[cResp] == "False" || r[cSrc] == e2eGWOut && r[cResp] == "0" {
			queries++
			asked[r[cName]] = true
			if r[cECS] != e2eECS || r[cMask] != "24" {
				t.Errorf("edgegw query without the egress subnet: %v", r)
			}
			if r[cName] == "big.example.test" && r[cTCP] != "" {
				tcpBig = true
			}
		}
		if r[cSrc] == e2eResolver && r[cName] == "big.example.test" && (r[cTC] == "True" || r[cTC] == "1") {
			tcBig = true
		}
	}
	// The names the client asked with a subnet of its own went upstream
	// (and so, by the loop above, with the egress subnet only).
	for _, name := range []string{"ecs.example.test", "x1.wild.example.test", "www.example.test"} {
		if !asked[name] {
			t.Errorf("no query for %s from edgegw captured (%d queries)", name, queries)
		}
	}
	if !tcBig || !tcpBig {
		t.Errorf("big.example.test: truncated UDP answer %v, retried over TCP %v", tcBig, tcpBig)
	}
	// Between Unbound and Knot: the subnets Knot saw.
	seen := map[string]bool{}
	for _, r := range read(e.pcapAuth, false) {
		if r[cSrc] == e2eResOut && r[cECS] != "" {
			seen[r[cECS]+"/"+r[cMask]] = true
			if r[cName] == "ecs.example.test" && r[cECS] != e2eECS {
				t.Errorf("Knot got ECS %s for ecs.example.test, want %s", r[cECS], e2eECS)
			}
		}
	}
	if !seen[e2eECS+"/24"] {
		t.Errorf("Knot never saw the egress subnet; subnets seen: %v", seen)
	}
	for s := range seen {
		if s != e2eECS+"/24" && s != "0.0.0.0/0" { // /0: the readiness probe's "no subnet"
			t.Errorf("Knot saw subnet %s, not the egress one", s)
		}
	}
	t.Logf("queries from edgegw: %d; subnets at Knot: %v", queries, seen)
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

// field returns a record's string field, or "".
func field(r logpush.Record, name string) string {
	v, _ := r.Get(name)
	return v.Str()
}
