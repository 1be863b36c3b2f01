//go:build linux

package dns

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// The identity topology, one namespace each:
//
//	lan 10.1.0.2 ── eth0 10.1.0.1  gw (edgegw)  tun0 10.9.0.1 ── 10.9.0.2 peer
//
// tun0 stands for the WireGuard interface: the identity source says that
// 10.9.0.2 is alice and that tun0 owns her address. The lan host also
// holds 10.9.0.2 (on its loopback) to forge it, and gw filters nothing by
// reverse path (rp_filter 0), so forged datagrams reach the resolver: only
// the resolver's own check stands between them and alice's identity.
const (
	idLAN     = "10.1.0.2"
	idGWLAN   = "10.1.0.1"
	idPeer    = "10.9.0.2"
	idGWTun   = "10.9.0.1"
	idTunnel  = "tun0"
	idAllowed = "10.0.0.42" // alice's answer for *.secret.test
)

// TestE2EIdentityOnlyThroughTunnel: a query carries alice's identity (her
// policy, her email and device in the record) only when it came through
// the tunnel interface that owns her address: over UDP, TCP, DNS over TLS
// and DNS over HTTPS, to either of gw's addresses. A LAN host that forges
// her address over UDP gets neither her policy nor her identity in the
// record; it cannot complete a TCP handshake with her address at all. A
// LAN host whose own address is (wrongly) an identity of the tunnel gets
// no identity over any transport: dot.identified_only refuses it, the
// identified-only DoH handler answers 403.
func TestE2EIdentityOnlyThroughTunnel(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	lab := netlab.NewT(t)
	var gw, lan, peer *netlab.NS
	for _, ns := range []struct {
		p    **netlab.NS
		name string
	}{{&gw, "gw"}, {&lan, "lan"}, {&peer, "peer"}} {
		n, err := lab.NS(ns.name)
		if err != nil {
			t.Fatal(err)
		}
		*ns.p = n
	}
	for _, err := range []error{
		lab.Link(lan, "eth0", idLAN+"/24", gw, "eth0", idGWLAN+"/24"),
		lab.Link(peer, "eth0", idPeer+"/24", gw, idTunnel, idGWTun+"/24"),
		lan.AddAddr("lo", idPeer+"/32"),
		lan.Route("default", idGWLAN),
		peer.Route("default", idGWTun),
		gw.Sysctl("net.ipv4.conf.all.rp_filter", "0"),
		gw.Sysctl("net.ipv4.conf.eth0.rp_filter", "0"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	up := newTestUpstream(t) // in the test's own namespace, where the server's upstream sockets are made
	dir := t.TempDir()
	cert, pool := selfSigned(t)
	certFile, keyFile := writeCert(t, dir, cert)
	reg := prometheus.NewRegistry()
	sink := &recSink{}
	cfg := Config{
		Listen:    []netip.AddrPort{netip.MustParseAddrPort(idGWLAN + ":53"), netip.MustParseAddrPort(idGWTun + ":53")},
		Upstreams: []string{up.addr},
		DoT: &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort(idGWLAN + ":853"), netip.MustParseAddrPort(idGWTun + ":853")},
			CertFile: certFile, KeyFile: keyFile, IdentifiedOnly: true},
		Policies: []Policy{
			{ID: "alice-secret", Expression: `identity.email == "alice@corp.example" and dns.domains contains "secret.test"`,
				Action: "override", Override: []string{idAllowed}},
			{ID: "others-secret", Expression: `dns.domains contains "secret.test"`, Action: "block"},
		},
	}
	s, err := New(cfg, Options{
		Registerer: reg,
		Sink:       sink,
		IdentitySource: staticIDs{
			netip.MustParseAddr(idPeer): {Email: "alice@corp.example", DeviceID: "dev_alice", Interface: idTunnel},
			netip.MustParseAddr(idLAN):  {Email: "lan@corp.example", DeviceID: "dev_lan", Interface: idTunnel},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Do(func() error { return s.Run(ctx) }) }()
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
	eventually(t, 10*time.Second, "listening", func() bool {
		st := s.Status()
		return len(st.Listening) == 2 && len(st.DoTListening) == 2
	})

	// DoH on gw's addresses, identified clients only, as the gateway
	// mounts it on the Access listener.
	var dohURLs []string
	for _, a := range []string{idGWLAN, idGWTun} {
		ln, err := gw.Listen("tcp", a+":443")
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewUnstartedServer(s.DoHHandler(DoHIdentifiedOnly))
		hs.Listener.Close()
		hs.Listener = ln
		hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		hs.StartTLS()
		t.Cleanup(hs.Close)
		dohURLs = append(dohURLs, "https://"+a+":443/dns-query")
	}
	tlsc := &tls.Config{RootCAs: pool, ServerName: "upstream.test"}

	// exchange asks name from ns over network (udp, tcp, tcp-tls) at
	// server and returns the answer.
	exchange := func(ns *netlab.NS, network, server, name string) (*mdns.Msg, error) {
		var r *mdns.Msg
		err := ns.Do(func() error {
			m := new(mdns.Msg)
			m.SetQuestion(name, mdns.TypeA)
			m.SetEdns0(ednsSize, false)
			c := &mdns.Client{Net: network, Timeout: 5 * time.Second, TLSConfig: tlsc}
			var err error
			r, _, err = c.Exchange(m, server)
			return err
		})
		return r, err
	}
	doh := func(ns *netlab.NS, url, name string) (int, *mdns.Msg, error) {
		var code int
		var r *mdns.Msg
		err := ns.Do(func() error {
			m := new(mdns.Msg)
			m.SetQuestion(name, mdns.TypeA)
			m.Id = 0
			b, _ := m.Pack()
			// The transport dials on goroutines of its own: through ns.
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsc, DialContext: ns.DialContext}}
			defer hc.CloseIdleConnections()
			resp, err := hc.Post(url, "application/dns-message", bytes.NewReader(b))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			code = resp.StatusCode
			body, err := io.ReadAll(resp.Body)
			if err != nil || code != http.StatusOK {
				return err
			}
			r = new(mdns.Msg)
			return r.Unpack(body)
		})
		return code, r, err
	}
	answerIP := func(r *mdns.Msg) string {
		if r != nil && len(r.Answer) == 1 {
			if a, ok := r.Answer[0].(*mdns.A); ok {
				return a.A.String()
			}
		}
		return fmt.Sprint(r)
	}
	record := func(name string) logpush.Record {
		t.Helper()
		var rec logpush.Record
		eventually(t, 10*time.Second, "record of "+name, func() bool {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			for _, r := range sink.recs {
				if field(r, "QueryName") == name {
					rec = r
					return true
				}
			}
			return false
		})
		return rec
	}
	checkRecord := func(t *testing.T, name, email, device, policy string) {
		t.Helper()
		rec := record(name)
		for f, want := range map[string]string{"Email": email, "DeviceID": device, "PolicyID": policy} {
			if got := field(rec, f); got != want {
				t.Errorf("%s: record %s = %q, want %q", name, f, got, want)
			}
		}
	}

	// Alice through her tunnel: her policy and identity, whichever
	// address of gw she asks.
	for i, tc := range []struct{ network, server string }{
		{"udp", idGWTun + ":53"}, {"udp", idGWLAN + ":53"}, {"tcp", idGWTun + ":53"},
		{"tcp-tls", idGWTun + ":853"}, {"tcp-tls", idGWLAN + ":853"},
	} {
		t.Run("tunnel-"+tc.network+"-"+tc.server, func(t *testing.T) {
			name := fmt.Sprintf("%s-%d.alice.secret.test.", tc.network, i)
			r, err := exchange(peer, tc.network, tc.server, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := answerIP(r); got != idAllowed {
				t.Errorf("answer %s, want alice's %s", got, idAllowed)
			}
			checkRecord(t, name[:len(name)-1], "alice@corp.example", "dev_alice", "alice-secret")
		})
	}
	t.Run("tunnel-doh", func(t *testing.T) {
		code, r, err := doh(peer, dohURLs[1], "doh.alice.secret.test.")
		if err != nil || code != http.StatusOK {
			t.Fatalf("DoH: %d %v", code, err)
		}
		if got := answerIP(r); got != idAllowed {
			t.Errorf("answer %s, want alice's %s", got, idAllowed)
		}
		checkRecord(t, "doh.alice.secret.test", "alice@corp.example", "dev_alice", "alice-secret")
	})

	// A LAN host forging alice's address over UDP: the answer goes to
	// alice (gw routes her address into the tunnel), the record shows the
	// query was answered without her identity or policy.
	t.Run("forged-udp", func(t *testing.T) {
		before := testutil.ToFloat64(s.m.unidentified.WithLabelValues("udp"))
		m := new(mdns.Msg)
		m.SetQuestion("forged.secret.test.", mdns.TypeA)
		b, _ := m.Pack()
		for _, dst := range []string{idGWLAN, idGWTun} {
			err := lan.Do(func() error {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(idPeer+":0")))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.WriteToUDPAddrPort(b, netip.MustParseAddrPort(dst+":53"))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		forged := func() (recs []logpush.Record) {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			for _, r := range sink.recs {
				if field(r, "QueryName") == "forged.secret.test" {
					recs = append(recs, r)
				}
			}
			return recs
		}
		// Records are pushed after the answers are written.
		eventually(t, 10*time.Second, "records of the two forged queries", func() bool { return len(forged()) >= 2 })
		for _, r := range forged() {
			if field(r, "SrcIP") != idPeer || field(r, "Email") != "" || field(r, "DeviceID") != "" ||
				field(r, "PolicyID") != "others-secret" {
				t.Errorf("forged query's record: %v", r)
			}
		}
		if n := len(forged()); n != 2 {
			t.Errorf("%d records of the forged query, want 2", n)
		}
		if n := testutil.ToFloat64(s.m.unidentified.WithLabelValues("udp")); n < before+2 {
			t.Errorf("edgegw_dns_unidentified_queries_total{protocol=\"udp\"} rose by %v, want 2", n-before)
		}
	})
	t.Run("forged-tcp-no-handshake", func(t *testing.T) {
		err := lan.Do(func() error {
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(idPeer + ":0"))}
			c, err := d.Dial("tcp", idGWLAN+":53")
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			t.Error("a LAN host completed a TCP handshake with alice's address")
		}
	})

	// A LAN host whose own address the identity source knows as a tunnel
	// address: no identity over any transport.
	for _, network := range []string{"udp", "tcp"} {
		t.Run("lan-"+network, func(t *testing.T) {
			name := network + ".lan.secret.test."
			r, err := exchange(lan, network, idGWLAN+":53", name)
			if err != nil {
				t.Fatal(err)
			}
			if got := answerIP(r); got != "0.0.0.0" {
				t.Errorf("answer %s, want blocked (0.0.0.0)", got)
			}
			checkRecord(t, name[:len(name)-1], "", "", "others-secret")
		})
	}
	t.Run("lan-dot-identified-only", func(t *testing.T) {
		r, err := exchange(lan, "tcp-tls", idGWLAN+":853", "dot.lan.secret.test.")
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("DoT from the LAN: %s with %v, want REFUSED", mdns.RcodeToString[r.Rcode], r.Answer)
		}
		if ede := edeCodes(r); len(ede) != 1 || ede[0] != edeProhibited {
			t.Errorf("EDE %v, want [%d]", ede, edeProhibited)
		}
		rec := record("dot.lan.secret.test")
		if field(rec, "ResolverDecision") != decRefusedUnidentified || field(rec, "Email") != "" {
			t.Errorf("refused DoT record: %v", rec)
		}
	})
	t.Run("lan-doh-identified-only", func(t *testing.T) {
		code, _, err := doh(lan, dohURLs[0], "doh.lan.secret.test.")
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusForbidden {
			t.Errorf("DoH from the LAN: %d, want 403", code)
		}
	})
	for _, proto := range []string{"udp", "tcp", "tls", "https"} {
		if n := testutil.ToFloat64(s.m.unidentified.WithLabelValues(proto)); n < 1 {
			t.Errorf("edgegw_dns_unidentified_queries_total{protocol=%q} = %v", proto, n)
		}
	}
}

// writeCert writes cert and its ECDSA key as PEM files in dir.
func writeCert(t *testing.T, dir string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "dot.crt"), filepath.Join(dir, "dot.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// edeCodes returns the Extended DNS Error codes of r.
func edeCodes(r *mdns.Msg) []uint16 {
	var codes []uint16
	if o := r.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*mdns.EDNS0_EDE); ok {
				codes = append(codes, e.InfoCode)
			}
		}
	}
	return codes
}
