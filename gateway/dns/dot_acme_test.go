package dns

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestDoTCertificatesSource: with Options.Certificates (the gateway's
// ACME certificates) each DoT handshake asks it first: while it has none
// (nil, nil or an error) dot.cert_file is presented; once it has one that
// is presented; a renewal (another certificate from the source) is
// presented to the next connection on the same listener, while a
// connection opened before it keeps being answered.
func TestDoTCertificatesSource(t *testing.T) {
	up := newTestUpstream(t)
	dir := t.TempDir()
	fallback, _ := selfSigned(t)
	first, _ := selfSigned(t)
	renewed, _ := selfSigned(t)
	certFile, keyFile := writeCert(t, dir, fallback)

	type answer struct {
		cert *tls.Certificate
		err  error
	}
	var src atomic.Pointer[answer]
	src.Store(&answer{})
	var names atomic.Pointer[string]
	opts := Options{Certificates: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		n := h.ServerName
		names.Store(&n)
		a := src.Load()
		return a.cert, a.err
	}}
	cfg := Config{Upstreams: []string{up.addr}, DoT: &DoT{
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		CertFile: certFile, KeyFile: keyFile, ACME: true,
	}}
	s, _ := startServer(t, cfg, opts)
	eventually(t, 5*time.Second, "DoT listening", func() bool { return len(s.Status().DoTListening) == 1 })
	addr := s.Status().DoTListening[0].String()

	c := &mdns.Client{Net: "tcp-tls", Timeout: 5 * time.Second,
		TLSConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "dot.corp.example"}}
	dial := func() (*mdns.Conn, []byte) {
		t.Helper()
		conn, err := c.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, conn.Conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Raw
	}
	ask := func(conn *mdns.Conn) {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion("a.test.", mdns.TypeA)
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 {
			t.Fatalf("answer over DoT: %v", r)
		}
	}

	for _, tc := range []struct {
		name string
		src  answer
		want tls.Certificate
	}{
		{"no ACME certificate yet: cert_file", answer{}, fallback},
		{"ACME failed: cert_file", answer{err: errors.New("no certificate for the name")}, fallback},
		{"ACME certificate", answer{cert: &first}, first},
	} {
		src.Store(&tc.src)
		conn, leaf := dial()
		if !bytes.Equal(leaf, tc.want.Certificate[0]) {
			t.Errorf("%s: another certificate was presented", tc.name)
		}
		ask(conn)
	}
	if n := names.Load(); n == nil || *n != "dot.corp.example" {
		t.Errorf("the source was asked for %v, want the hello's name dot.corp.example", n)
	}

	before, _ := dial()
	src.Store(&answer{cert: &renewed})
	after, leaf := dial()
	if !bytes.Equal(leaf, renewed.Certificate[0]) {
		t.Error("a renewed certificate is not presented to the next connection")
	}
	ask(before) // opened with the old certificate, still answered
	ask(after)
}

// TestDoTSelfSignedFallback: with acme and no cert_file, DoT serves a
// self-signed certificate for its listen address, kept in the state
// directory (the same one after a reload), until the ACME source has a
// certificate for the hello; then that one.
func TestDoTSelfSignedFallback(t *testing.T) {
	up := newTestUpstream(t)
	stateDir := t.TempDir()
	acme, _ := selfSigned(t)
	var src atomic.Pointer[tls.Certificate]
	opts := Options{StateDir: stateDir, Certificates: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return src.Load(), nil }}
	cfg := Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, Upstreams: []string{up.addr},
		DoT: &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, ACME: true}}
	var report []string
	cfg.Validate(func(f, m string) {
		if strings.HasPrefix(f, "dot") {
			report = append(report, f+": "+m)
		}
	})
	if len(report) > 0 {
		t.Fatalf("acme without cert_file refused: %v", report)
	}
	s, _ := startServer(t, cfg, opts)
	eventually(t, 5*time.Second, "DoT listening", func() bool { return len(s.Status().DoTListening) == 1 })
	addr := s.Status().DoTListening[0].String()
	peer := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "dot.corp.example"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	fb := peer()
	if fb.Subject.CommonName != "edgegw dns" || fb.VerifyHostname("127.0.0.1") != nil {
		t.Errorf("fallback %q for %v %v", fb.Subject.CommonName, fb.DNSNames, fb.IPAddresses)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "dns", "dot-selfsigned.key")); err != nil {
		t.Errorf("the fallback is not kept: %v", err)
	}
	if err := s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if again := peer(); !bytes.Equal(again.Raw, fb.Raw) {
		t.Error("a reload made another self-signed certificate")
	}
	src.Store(&acme)
	if got := peer(); !bytes.Equal(got.Raw, acme.Certificate[0]) {
		t.Error("the ACME certificate is not served once the source has it")
	}
}
