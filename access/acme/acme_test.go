package acme_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/access/acme"
	"github.com/edgegw/edgegw/access/acme/acmetest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

const appDomain = "app.example.test"

func TestMain(m *testing.M) {
	code := m.Run()
	acmetest.Cleanup()
	os.Exit(code)
}

// gateway is an Access server whose certificate an acme.Manager keeps,
// run as the gateway's access part runs them.
type gateway struct {
	srv  *access.Server
	mgr  *acme.Manager
	reg  *prometheus.Registry
	dir  string
	logs *testkit.Buffer
}

// startGateway runs an Access listener on listen for appDomain (an app
// that lets everyone through to a test origin) with ac as access.acme.
func startGateway(t *testing.T, listen string, ac acme.Config) *gateway {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }))
	t.Cleanup(origin.Close)
	yes := true
	cfg := access.Config{
		Listen: listen,
		ACME:   &ac,
		Apps: []access.App{{Name: "app", Domain: appDomain, Upstream: origin.URL, Policies: []policy.Policy{
			{Name: "public", Action: policy.Bypass, Include: []policy.Selector{{Everyone: &yes}}},
		}}},
	}
	plan, err := access.Compile(cfg, identity.Config{})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{reg: prometheus.NewRegistry(), dir: t.TempDir(), logs: &testkit.Buffer{}}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(g.logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	g.srv, err = access.NewPlan(plan, access.Options{Logger: log, Registerer: g.reg, StateDir: g.dir})
	if err != nil {
		t.Fatal(err)
	}
	g.mgr, err = acme.New(plan.ACME(), acme.Options{
		StateDir: g.dir, Logger: log, Registerer: g.reg, Listening: g.srv.Addr,
		RenewCheckInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.srv.SetCertificates(g.mgr)
	ctx, cancel := context.WithCancel(t.Context())
	srvDone, mgrDone := make(chan error, 1), make(chan error, 1)
	go func() { srvDone <- g.srv.Run(ctx) }()
	go func() { mgrDone <- g.mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-mgrDone; err != nil {
			t.Errorf("acme Run: %v", err)
		}
		if err := <-srvDone; err != nil {
			t.Errorf("access Run: %v", err)
		}
		g.mgr.Close()
		g.srv.Close()
	})
	testkit.Eventually(t, 10*time.Second, "the Access listener is bound", func() error {
		if g.srv.Addr() == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return g
}

func (g *gateway) addr() string { return g.srv.Addr().String() }

// waitIssued waits for the listener to serve a certificate for appDomain
// that verifies against roots, and returns it.
func (g *gateway) waitIssued(t *testing.T, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	testkit.Eventually(t, 60*time.Second, "the listener serves a certificate the CA issued", func() error {
		var err error
		leaf, err = acmetest.Served(t.Context(), nil, g.addr(), appDomain, roots)
		return err
	})
	return leaf
}

// TestHTTP01ObtainServeRenew: the Access listener gets a certificate from
// Pebble over http-01, serves it (a client trusting only Pebble's root
// verifies it), keeps the account key and certificate at 0600 in
// StateDir/acme, exports the expiry, and renews the short-lived
// certificate without a restart, while a connection opened on the first
// certificate keeps working.
func TestHTTP01ObtainServeRenew(t *testing.T) {
	httpPort := acmetest.FreePort(t, nil)
	p := acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: acmetest.FreePort(t, nil), Validity: 45 * time.Second})
	g := startGateway(t, "127.0.0.1:0", acme.Config{
		Directory: p.Directory, CAFile: p.CAFile, Email: "ops@example.test",
		Challenges: []string{acme.HTTP01}, HTTPListen: fmt.Sprintf("127.0.0.1:%d", httpPort),
	})
	first := g.waitIssued(t, p.Roots)
	if err := first.VerifyHostname(appDomain); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.logs.String(), "certificate obtained") {
		t.Errorf("no log line for the obtained certificate:\n%s", g.logs.String())
	}

	// An open connection on the first certificate.
	conn, err := tls.Dial("tcp", g.addr(), &tls.Config{ServerName: appDomain, RootCAs: p.Roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get(t, conn, br)

	testkit.Eventually(t, 10*time.Second, "the expiry metric", func() error {
		v := testutil.ToFloat64(gaugeFor(t, g.reg, appDomain))
		if int64(v) != first.NotAfter.Unix() {
			return fmt.Errorf("edgegw_acme_certificate_expiry_timestamp_seconds = %v, want %d", v, first.NotAfter.Unix())
		}
		return nil
	})

	// Files: the account key and the certificate's key, 0600.
	var keys int
	err = filepath.WalkDir(g.mgr.Dir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".lock") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, info.Mode().Perm())
		}
		if strings.HasSuffix(path, ".key") {
			keys++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys < 2 {
		t.Errorf("want the account key and the certificate's key under %s, found %d keys", g.mgr.Dir(), keys)
	}

	// Renewal: a new certificate for new connections, well before the
	// first expires.
	var second *x509.Certificate
	testkit.Eventually(t, 60*time.Second, "a renewed certificate is served", func() error {
		c, err := acmetest.Served(t.Context(), nil, g.addr(), appDomain, p.Roots)
		if err != nil {
			return err
		}
		if c.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still the first certificate (expires %s)", first.NotAfter)
		}
		second = c
		return nil
	})
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %s, not after the first's %s", second.NotAfter, first.NotAfter)
	}
	// The connection opened before the renewal still works.
	get(t, conn, br)
	testkit.Eventually(t, 10*time.Second, "the expiry metric follows the renewal", func() error {
		if v := testutil.ToFloat64(gaugeFor(t, g.reg, appDomain)); int64(v) != second.NotAfter.Unix() {
			return fmt.Errorf("metric %v, want %d", v, second.NotAfter.Unix())
		}
		return nil
	})
}

// TestDNS01ThroughKnot: with dns-01 the Manager publishes the challenge
// as a TXT record by a TSIG-signed DNS UPDATE to a real knotd, Pebble
// validates it by asking that knotd, the listener serves the issued
// certificate, the record is removed afterwards, and the short-lived
// certificate is renewed the same way while an open connection keeps
// working.
func TestDNS01ThroughKnot(t *testing.T) {
	k := acmetest.StartKnot(t, nil, "example.test")
	p := acmetest.Start(t, acmetest.Options{HTTPPort: acmetest.FreePort(t, nil), TLSPort: acmetest.FreePort(t, nil),
		Validity: 45 * time.Second, DNSServer: k.Addr})
	g := startGateway(t, "127.0.0.1:0", acme.Config{
		Directory: p.Directory, CAFile: p.CAFile, Challenges: []string{acme.DNS01},
		RFC2136: &acme.RFC2136{Server: k.Addr, Zone: k.Zone, TSIGKeyName: k.KeyName, TSIGAlgorithm: k.Algorithm, TSIGSecretFile: k.SecretFile},
	})
	first := g.waitIssued(t, p.Roots)
	if err := first.VerifyHostname(appDomain); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the challenge record is removed", func() error {
		got, err := k.TXT("_acme-challenge." + appDomain)
		if err != nil || len(got) != 0 {
			return fmt.Errorf("TXT %q (%v)", got, err)
		}
		return nil
	})
	conn, err := tls.Dial("tcp", g.addr(), &tls.Config{ServerName: appDomain, RootCAs: p.Roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get(t, conn, br)
	testkit.Eventually(t, 90*time.Second, "a certificate renewed over dns-01 is served", func() error {
		c, err := acmetest.Served(t.Context(), nil, g.addr(), appDomain, p.Roots)
		if err != nil {
			return err
		}
		if c.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still the first certificate (expires %s)", first.NotAfter)
		}
		return nil
	})
	get(t, conn, br)
}

// TestTLSALPN01OnTheAccessListener: Pebble validates over tls-alpn-01 by
// connecting to the Access listener itself, which answers the challenge
// and then serves the issued certificate.
func TestTLSALPN01OnTheAccessListener(t *testing.T) {
	tlsPort := acmetest.FreePort(t, nil)
	p := acmetest.Start(t, acmetest.Options{HTTPPort: acmetest.FreePort(t, nil), TLSPort: tlsPort, Validity: time.Hour})
	g := startGateway(t, fmt.Sprintf("127.0.0.1:%d", tlsPort), acme.Config{
		Directory: p.Directory, CAFile: p.CAFile, Challenges: []string{acme.TLSALPN01},
	})
	leaf := g.waitIssued(t, p.Roots)
	if err := leaf.VerifyHostname(appDomain); err != nil {
		t.Fatal(err)
	}
}

// TestFallbackWhenTheCAFails: with a CA that cannot be reached the
// listener serves its self-signed certificate, counts the failure and
// logs why.
func TestFallbackWhenTheCAFails(t *testing.T) {
	dead := acmetest.FreePort(t, nil) // nothing listens there
	g := startGateway(t, "127.0.0.1:0", acme.Config{
		Directory:  fmt.Sprintf("https://127.0.0.1:%d/dir", dead),
		Challenges: []string{acme.HTTP01}, HTTPListen: fmt.Sprintf("127.0.0.1:%d", acmetest.FreePort(t, nil)),
	})
	testkit.Eventually(t, 60*time.Second, "the failure is counted", func() error {
		if v := testutil.ToFloat64(counterFor(t, g.reg, appDomain)); v < 1 {
			return fmt.Errorf("edgegw_acme_failures_total = %v", v)
		}
		return nil
	})
	if !strings.Contains(g.logs.String(), "ACME could not obtain a certificate; serving the configured or self-signed certificate") {
		t.Errorf("no clear log line for the failure:\n%s", g.logs.String())
	}
	c, err := tls.Dial("tcp", g.addr(), &tls.Config{ServerName: appDomain, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	if leaf.Issuer.String() != leaf.Subject.String() || leaf.VerifyHostname(appDomain) != nil {
		t.Errorf("served %s issued by %s, want the self-signed certificate for %s", leaf.Subject, leaf.Issuer, appDomain)
	}
}

// get sends one request on an open connection and checks the origin's
// answer.
func get(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", appDomain); err != nil {
		t.Fatalf("request on the open connection: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response on the open connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "origin" {
		t.Fatalf("got %s %q, want 200 from the origin", resp.Status, b)
	}
}

func gaugeFor(t *testing.T, reg *prometheus.Registry, domain string) prometheus.Collector {
	return metricFor(t, reg, "edgegw_acme_certificate_expiry_timestamp_seconds", domain)
}

func counterFor(t *testing.T, reg *prometheus.Registry, domain string) prometheus.Collector {
	return metricFor(t, reg, "edgegw_acme_failures_total", domain)
}

// metricFor is a collector of the one sample of name with label domain
// (zero when there is none yet).
func metricFor(t *testing.T, reg *prometheus.Registry, name, domain string) prometheus.Collector {
	t.Helper()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "domain" && l.GetValue() == domain {
					if m.Gauge != nil {
						g.Set(m.Gauge.GetValue())
					} else if m.Counter != nil {
						g.Set(m.Counter.GetValue())
					}
				}
			}
		}
	}
	return g
}

// TestAccessChecksTheSection: access.Compile refuses a bad access.acme
// with the field's full path.
func TestAccessChecksTheSection(t *testing.T) {
	yes := true
	cfg := access.Config{
		Listen: "127.0.0.1:0",
		ACME:   &acme.Config{Challenges: []string{"dns-01"}},
		Apps: []access.App{{Name: "app", Domain: appDomain, Upstream: "http://127.0.0.1:1", Policies: []policy.Policy{
			{Name: "public", Action: policy.Bypass, Include: []policy.Selector{{Everyone: &yes}}},
		}}},
	}
	_, err := access.Compile(cfg, identity.Config{})
	if err == nil || !strings.Contains(err.Error(), `access.acme.rfc2136: missing: dns-01 needs the zone to update`) {
		t.Fatalf("got %v", err)
	}
	if cfg.ACME.Directory != "" {
		t.Fatal("Compile changed the caller's section")
	}
}
