package dns

import (
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzParseList feeds arbitrary list files to the parser: no panic, and
// every name it keeps is valid and found again.
func FuzzParseList(f *testing.F) {
	for _, s := range []string{"a.example\n", "0.0.0.0 a b c\n||x.y^$third-party\n", "!x\n@@||a^\n# c\n", "\xff\x00.example\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, _, err := parseList(bytes.NewReader(data))
		if err != nil {
			return
		}
		for i := range set.slots {
			if o := set.slots[i]; o != 0 {
				name := set.name(o)
				if appendDomain(nil, name) == nil || !set.has(string(name)) {
					t.Fatalf("kept %q", name)
				}
			}
		}
	})
}

// fakeWriter is a ResponseWriter that keeps what is written.
type fakeWriter struct {
	out   *mdns.Msg
	local net.Addr
}

func (w *fakeWriter) LocalAddr() net.Addr { return w.local }
func (w *fakeWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5353}
}
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error {
	if _, err := m.Pack(); err != nil {
		return err
	}
	w.out = m
	return nil
}
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

// FuzzServeDNS runs the request path on arbitrary messages (whatever
// miekg/dns unpacks), with policies, against a local upstream: never a
// panic, and every answer packs and fits the client's size over UDP.
func FuzzServeDNS(f *testing.F) {
	up := newTestUpstream(f)
	cfg := Config{
		Upstreams: []string{up.addr},
		Policies: []Policy{
			{ID: "b", Expression: `dns.domains contains "tracker.test" or dns.resolved_ips == 203.0.113.0/24`, Action: "block"},
			{ID: "o", Expression: `dns.fqdn == "alias.test"`, Action: "override", Override: []string{"a.test"}},
			{ID: "s", Expression: `dns.qtype == a`, Action: "safe_search"},
		},
	}
	s, _ := startServer(f, cfg, Options{Sink: &recSink{}, EgressAddr: netip.MustParseAddr("198.51.100.1")})
	for _, q := range []struct {
		name string
		t    uint16
	}{{"a.test.", mdns.TypeA}, {"chain.test.", mdns.TypeA}, {"big.test.", mdns.TypeTXT}, {"alias.test.", mdns.TypeA}, {"www.google.com.", mdns.TypeA}} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.t)
		m.SetEdns0(512, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		w := &fakeWriter{local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}}
		s.ServeDNS(w, req)
		if w.out == nil {
			return
		}
		size := mdns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = min(max(int(o.UDPSize()), mdns.MinMsgSize), ednsSize)
		}
		if b, err := w.out.Pack(); err != nil || len(b) > size {
			t.Fatalf("answer %d bytes > %d or %v", len(b), size, err)
		}
	})
}

// FuzzDoH posts arbitrary bodies to the DNS-over-HTTPS handler and asks
// for them with GET: never a panic, a 200 with a DNS message or a 400.
func FuzzDoH(f *testing.F) {
	up := newTestUpstream(f)
	s, _ := startServer(f, Config{Upstreams: []string{up.addr}}, Options{Sink: &recSink{}})
	h := s.DoHHandler(DoHAnyClient)
	m := new(mdns.Msg)
	m.SetQuestion("a.test.", mdns.TypeA)
	b, _ := m.Pack()
	f.Add(b)
	f.Add([]byte{0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, req := range []*http.Request{
			httptest.NewRequest(http.MethodPost, "/dns-query", bytes.NewReader(data)),
			httptest.NewRequest(http.MethodGet, "/dns-query?dns="+base64.RawURLEncoding.EncodeToString(data), nil),
		} {
			req.Header.Set("Content-Type", "application/dns-message")
			req.RemoteAddr = "127.0.0.1:5353"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK:
				if err := new(mdns.Msg).Unpack(rec.Body.Bytes()); err != nil {
					t.Fatalf("200 with a body that does not unpack: %v", err)
				}
			case http.StatusBadRequest:
			default:
				t.Fatalf("%s: status %d", req.Method, rec.Code)
			}
		}
	})
}
