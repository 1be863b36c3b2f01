package dns

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestIdentitySource: policies see the email and groups of the device
// behind the source address, and the record names the device.
func TestIdentitySource(t *testing.T) {
	up := newTestUpstream(t)
	sink := &recSink{}
	ids := staticIDs{netip.MustParseAddr("127.0.0.1"): {Email: "bob@corp.example", Groups: []string{"finance"}, DeviceID: "dev_bobphone", Interface: "lo"}}
	cfg := Config{Upstreams: []string{up.addr}, Policies: []Policy{
		{ID: "finance-only", Expression: `identity.email == "bob@corp.example" and identity.groups contains "finance" and dns.fqdn == "a.test"`,
			Action: "override", Override: []string{"10.0.0.7"}},
	}}
	_, addr := startServer(t, cfg, Options{Sink: sink, IdentitySource: ids})
	r := ask(t, addr, "udp", "a.test", mdns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.0.0.7" {
		t.Fatalf("answer %v", r.Answer)
	}
	eventually(t, 5*time.Second, "record", func() bool { return sink.len() > 0 })
	rec := sink.last()
	for name, want := range map[string]string{"Email": "bob@corp.example", "DeviceID": "dev_bobphone", "PolicyID": "finance-only"} {
		if v, _ := rec.Get(name); v.Str() != want {
			t.Errorf("%s = %q, want %q", name, v.Str(), want)
		}
	}
}

// TestDoHIdentifiedOnly: the handler for the Access listener answers
// enrolled devices only.
func TestDoHIdentifiedOnly(t *testing.T) {
	up := newTestUpstream(t)
	q := new(mdns.Msg)
	q.SetQuestion("a.test.", mdns.TypeA)
	q.Id = 0
	b, _ := q.Pack()
	for _, tc := range []struct {
		name string
		ids  IdentitySource
		want int
	}{
		{"enrolled", staticIDs{netip.MustParseAddr("127.0.0.1"): {Email: "a@corp.example", DeviceID: "dev_a", Interface: "lo"}}, http.StatusOK},
		{"unknown-address", staticIDs{netip.MustParseAddr("100.96.0.9"): {Email: "a@corp.example", Interface: "lo"}}, http.StatusForbidden},
		{"no-identity-source", nil, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			s, _ := startServer(t, Config{Upstreams: []string{up.addr}}, Options{IdentitySource: tc.ids, Sink: sink})
			hs := httptest.NewTLSServer(s.DoHHandler(DoHIdentifiedOnly))
			defer hs.Close()
			resp, err := hs.Client().Post(hs.URL+"/dns-query", "application/dns-message", bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %s, want %d", resp.Status, tc.want)
			}
			if tc.want == http.StatusOK {
				// The record is pushed after the answer is written.
				eventually(t, 5*time.Second, "record", func() bool { return sink.len() > 0 })
				rec := sink.last()
				if v, _ := rec.Get("Protocol"); v.Str() != "https" {
					t.Errorf("Protocol %q", v.Str())
				}
				if v, _ := rec.Get("DeviceID"); v.Str() != "dev_a" {
					t.Errorf("DeviceID %q", v.Str())
				}
			} else if sink.len() != 0 {
				t.Errorf("refused query logged")
			}
		})
	}
}

// TestServeDoT answers over TLS, logs Protocol tls, and returns when its
// context ends.
func TestServeDoT(t *testing.T) {
	up := newTestUpstream(t)
	sink := &recSink{}
	s, _ := startServer(t, Config{Upstreams: []string{up.addr}}, Options{Sink: sink})
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeDoT(ctx, ln, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	c := &mdns.Client{Net: "tcp-tls", Timeout: 5 * time.Second,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "upstream.test", NextProtos: []string{"dot"}}}
	m := new(mdns.Msg)
	m.SetQuestion("a.test.", mdns.TypeA)
	r, _, err := c.Exchange(m, ln.Addr().String())
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("DoT: %v %v", r, err)
	}
	// The record is pushed after the answer is written, so it may trail it.
	eventually(t, 5*time.Second, "record", func() bool { return sink.len() > 0 })
	if v, _ := sink.last().Get("Protocol"); v.Str() != "tls" {
		t.Errorf("Protocol %q", v.Str())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeDoT: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeDoT did not return")
	}
	if err := s.ServeDoT(context.Background(), mustListen(t), &tls.Config{}); err == nil {
		t.Error("ServeDoT without a certificate: no error")
	}
}

func mustListen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestDialHook: every upstream transport dials through Options.Dial.
func TestDialHook(t *testing.T) {
	up := newTestUpstream(t)
	var dials atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	_, addr := startServer(t, Config{Upstreams: []string{up.addr}}, Options{Dial: dial})
	if r := ask(t, addr, "udp", "a.test", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("answer %v", r)
	}
	// big.test is truncated over UDP: a second dial, over TCP.
	if r := ask(t, addr, "tcp", "big.test", mdns.TypeTXT); len(r.Answer) != 20 {
		t.Fatalf("big answer %d records", len(r.Answer))
	}
	if n := dials.Load(); n < 3 {
		t.Errorf("%d dials through the hook, want at least 3", n)
	}
}

// staticIDs is an IdentitySource of fixed addresses.
type staticIDs map[netip.Addr]Identity

func (s staticIDs) Identify(a netip.Addr) (Identity, bool) {
	id, ok := s[a]
	return id, ok
}
