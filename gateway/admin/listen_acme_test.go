package admin

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestListenerACMECertificates: with admin.tls.acme the TCP listener asks
// Options.Certificates (the gateway's ACME certificates) on every
// handshake: without acme, or while the source has none, tls.cert_file is
// served; a renewed certificate is served to the next connection on the
// same listener while a connection opened before keeps being answered.
func TestListenerACMECertificates(t *testing.T) {
	var src atomic.Pointer[tls.Certificate]
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}}, func(_ *env, o *Options) {
		o.Certificates = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return src.Load(), nil }
	})
	load := func(serial int64) *tls.Certificate {
		t.Helper()
		cf, kf, _ := writeCertSerial(t, t.TempDir(), "gw.corp.test", netip.MustParseAddr(gwAddr), serial)
		c, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	// dial opens a TLS connection from the LAN and tells the serial of
	// the certificate served.
	dial := func() (*tls.Conn, int64) {
		t.Helper()
		raw, err := e.lan.DialContext(t.Context(), "tcp", net.JoinHostPort(gwAddr, "9100"))
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "gw.corp.test"})
		if err := c.HandshakeContext(t.Context()); err != nil {
			raw.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	healthz := func(c *tls.Conn) {
		t.Helper()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: gw.corp.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz: %s", resp.Status)
		}
	}
	set := func(acme bool) {
		t.Helper()
		cfg := e.cfg
		tc := *cfg.TLS
		tc.ACME = acme
		cfg.TLS = &tc
		if err := e.gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
			t.Fatal(err)
		}
	}

	first, renewed := load(2), load(3)
	for _, tc := range []struct {
		name string
		acme bool
		src  *tls.Certificate
		want int64 // serial; 1 is tls.cert_file
	}{
		{"acme off: cert_file even with an ACME certificate", false, first, 1},
		{"acme on, none yet: cert_file", true, nil, 1},
		{"acme on: the ACME certificate", true, first, 2},
	} {
		set(tc.acme)
		src.Store(tc.src)
		c, serial := dial()
		if serial != tc.want {
			t.Errorf("%s: serial %d served, want %d", tc.name, serial, tc.want)
		}
		healthz(c)
	}
	before, _ := dial()
	src.Store(renewed)
	after, serial := dial()
	if serial != 3 {
		t.Errorf("after renewal: serial %d served, want 3", serial)
	}
	healthz(before) // opened with the old certificate, still answered
	healthz(after)

	// acme without cert_file: a self-signed certificate for admin.hosts
	// and the listen address, kept in the state directory, until the
	// source has one.
	cfg := e.cfg
	cfg.TLS = &TLS{ACME: true}
	var problems []string
	cfg.Validate(func(f, m string) { problems = append(problems, f+": "+m) })
	if len(problems) > 0 {
		t.Fatalf("acme without cert_file refused: %v", problems)
	}
	src.Store(nil)
	if err := e.gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
	c, _ := dial()
	leaf := c.ConnectionState().PeerCertificates[0]
	if leaf.Subject.CommonName != "edgegw admin" || leaf.VerifyHostname("gw.corp.test") != nil || leaf.VerifyHostname(gwAddr) != nil {
		t.Errorf("self-signed fallback %q for %v %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	healthz(c)
	if _, err := os.Stat(filepath.Join(e.dir, "admin", "selfsigned.key")); err != nil {
		t.Errorf("the fallback is not kept: %v", err)
	}
	src.Store(renewed)
	if _, serial := dial(); serial != 3 {
		t.Errorf("with the ACME certificate back: serial %d served, want 3", serial)
	}
}
