package dns

import (
	"bytes"
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestDoTListeners: dot.listen is served by the server itself;
// identified_only refuses a client without an identity (REFUSED, EDE 18)
// and a reload that clears it answers again; a certificate renewed in
// place is presented after Set with the same configuration.
func TestDoTListeners(t *testing.T) {
	up := newTestUpstream(t)
	dir := t.TempDir()
	cert, _ := selfSigned(t)
	certFile, keyFile := writeCert(t, dir, cert)
	cfg := Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, Upstreams: []string{up.addr}, DoT: &DoT{
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		CertFile: certFile, KeyFile: keyFile, IdentifiedOnly: true,
	}}
	sink := &recSink{}
	s, _ := startServer(t, cfg, Options{Sink: sink})
	eventually(t, 5*time.Second, "DoT listening", func() bool { return len(s.Status().DoTListening) == 1 })
	addr := s.Status().DoTListening[0].String()

	ask := func() (*mdns.Msg, []byte) {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion("a.test.", mdns.TypeA)
		m.SetEdns0(ednsSize, false)
		c := &mdns.Client{Net: "tcp-tls", Timeout: 5 * time.Second, TLSConfig: &tls.Config{InsecureSkipVerify: true}}
		conn, err := c.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		leaf := conn.Conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Raw
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil {
			t.Fatal(err)
		}
		return r, leaf
	}

	r, leaf := ask()
	if r.Rcode != mdns.RcodeRefused || !hasEDE(r, edeProhibited) {
		t.Errorf("unidentified client with identified_only: %v", r)
	}
	if !bytes.Equal(leaf, cert.Certificate[0]) {
		t.Error("DoT presents another certificate than cert_file's")
	}
	// The record is pushed after the answer is written.
	eventually(t, 5*time.Second, "record of the refused query", func() bool { return sink.len() > 0 })
	if rec := sink.last(); field(rec, "Protocol") != "tls" || field(rec, "ResolverDecision") != decRefusedUnidentified {
		t.Errorf("record of the refused query: %v", rec)
	}

	// Renewed in place, then Set with the same configuration.
	renewed, _ := selfSigned(t)
	writeCert(t, dir, renewed)
	if err := s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if _, leaf := ask(); !bytes.Equal(leaf, renewed.Certificate[0]) {
		t.Error("renewed certificate not presented after Set")
	}

	// identified_only off: answered, on the same listener.
	open := *cfg.Clone()
	open.DoT.IdentifiedOnly = false
	if err := s.Set(open); err != nil {
		t.Fatal(err)
	}
	if r, _ := ask(); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("without identified_only: %v", r)
	}
	if got := s.Status().DoTListening[0].String(); got != addr {
		t.Errorf("listener moved from %s to %s on a reload that kept dot.listen", addr, got)
	}

	// dot removed: the listener goes.
	none := *cfg.Clone()
	none.DoT = nil
	if err := s.Set(none); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Status().DoTListening); n != 0 {
		t.Errorf("%d DoT listeners after dot was removed", n)
	}
}
