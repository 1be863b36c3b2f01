package admin

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestHostAllowed(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	lan := netip.MustParseAddr("10.0.0.1")
	names := []string{"gw.corp.example", "Admin.Example."}
	for _, tt := range []struct {
		host  string
		local netip.Addr
		want  bool
	}{
		{"127.0.0.1:9100", lo, true},
		{"127.0.0.1", lo, true},
		{"127.1.2.3:9100", lo, true},
		{"localhost:9100", lo, true},
		{"LOCALHOST", lan, true},
		{"localhost.", lo, true},
		{"10.0.0.1:9100", lan, true},
		{"10.0.0.2:9100", lan, false},
		{"127.0.0.1:9100", lan, false},
		{"[::1]:9100", netip.MustParseAddr("::1"), true},
		{"[::ffff:10.0.0.1]:9100", lan, true},
		{"[fe80::1%eth0]:9100", netip.MustParseAddr("fe80::1"), false},
		{"gw.corp.example:9100", lan, true},
		{"GW.CORP.EXAMPLE", lan, true},
		{"admin.example", lan, true},
		{"evil.example:9100", lan, false},
		{"gw.corp.example.evil.example", lan, false},
		{"localhost.evil.example", lo, false},
		{"", lo, false},
		{":9100", lo, false},
	} {
		if got := hostAllowed(tt.host, tt.local, names); got != tt.want {
			t.Errorf("hostAllowed(%q, %s) = %v, want %v", tt.host, tt.local, got, tt.want)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9100": true, "[::1]:9100": true, "localhost:9100": true, "127.0.0.53:1": true,
		"0.0.0.0:9100": false, ":9100": false, "[::]:9100": false, "10.0.0.1:9100": false, "gw.example:9100": false, "nonsense": false,
	} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestLogLimiter(t *testing.T) {
	l := logLimiter{every: time.Second, burst: 3}
	now := time.Unix(1000, 0)
	logged := 0
	for range 100 {
		if ok, _ := l.allow(now); ok {
			logged++
		}
	}
	if logged != 3 {
		t.Errorf("logged %d of a burst, want 3", logged)
	}
	ok, suppressed := l.allow(now.Add(time.Second))
	if !ok || suppressed != 97 {
		t.Errorf("after a second: %v, %d suppressed, want true, 97", ok, suppressed)
	}
}

// FuzzAuthorize feeds arbitrary Authorization and Host headers to a TCP
// listener's checks: nothing panics, and only the one real token, on an
// allowed host, gets through.
func FuzzAuthorize(f *testing.F) {
	srv, err := New(Options{StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	_, secret, err := srv.tokens.create("fuzz", RoleAdmin, "test")
	if err != nil {
		f.Fatal(err)
	}
	l := &listener{addr: "10.0.0.1:9100"}
	h := srv.handler(l)
	f.Add("Bearer "+secret, "10.0.0.1:9100")
	f.Add("Bearer "+secret, "evil.example")
	f.Add("bearer  "+secret+" ", "[10.0.0.1]:9100")
	f.Add("Bearer edgegw_", "localhost")
	f.Add("Basic Zm9vOmJhcg==", "10.0.0.1")
	f.Add("", "")
	f.Add("Bearer "+strings.Repeat("A", 300), "localhost:1")
	f.Fuzz(func(t *testing.T, auth, host string) {
		req, err := http.NewRequest("GET", "http://10.0.0.1:9100"+PathTokens, nil)
		if err != nil {
			t.Skip()
		}
		req.Host = host
		req.Header.Set("Authorization", auth)
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9100}))
		req.RemoteAddr = "10.0.0.2:5555"
		w := &statusWriter{header: http.Header{}}
		h.ServeHTTP(w, req)
		ok := w.status == 0 || w.status == 200
		valid := hostAllowed(host, netip.MustParseAddr("10.0.0.1"), nil) && strings.Contains(auth, secret)
		if ok && !valid {
			t.Fatalf("Authorization %q Host %q got through", auth, host)
		}
	})
}

type statusWriter struct {
	header http.Header
	status int
}

func (w *statusWriter) Header() http.Header { return w.header }
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return len(b), nil
}
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
