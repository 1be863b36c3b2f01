package admin

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/console"
)

// eventStream is one open GET /api/v1/status/events; next returns the
// next event's data.
type eventStream struct {
	res    *http.Response
	events chan string // closed when the stream ends
}

func (e *env) openEvents(t *testing.T, hdr http.Header, cookie *http.Cookie) *eventStream {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return e.lan.DialContext(ctx, network, strings.Replace(addr, "gw.corp.test", gwAddr, 1))
		},
		TLSClientConfig: &tls.Config{RootCAs: e.caPool, ServerName: "gw.corp.test"},
	}}
	req, err := http.NewRequestWithContext(t.Context(), "GET", "https://gw.corp.test:9100"+PathStatusEvents, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &eventStream{res: res, events: make(chan string, 64)}
	go func() { // owned by the stream: ends when the body ends
		defer close(s.events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				s.events <- d
			}
		}
	}()
	t.Cleanup(func() { res.Body.Close() })
	return s
}

// next waits for the next event; "" when the stream ended.
func (s *eventStream) next(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case d, ok := <-s.events:
		if !ok {
			return ""
		}
		return d
	case <-time.After(within):
		t.Fatalf("no event within %s", within)
		return ""
	}
}

// ended waits for the stream to end, draining events sent before.
func (s *eventStream) ended(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the stream did not end within %s", within)
		}
	}
}

// TestStatusEvents: the status stream sends the status at once and then
// on every interval, as text/event-stream; it needs credentials like the
// rest of the API; and it ends within an interval of the credentials
// ending — a revoked token, a console logout — and when the listener
// shuts down.
func TestStatusEvents(t *testing.T) {
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}}, func(e *env, o *Options) {
		o.StreamEvery = 100 * time.Millisecond
	})
	tok := e.createToken("grafana", RoleViewer)
	bearer := http.Header{"Authorization": {"Bearer " + tok}}

	if s := e.openEvents(t, nil, nil); s.res.StatusCode != http.StatusUnauthorized {
		t.Errorf("a stream without a token: %d", s.res.StatusCode)
	}
	s := e.openEvents(t, bearer, nil)
	if s.res.StatusCode != 200 || s.res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", s.res.StatusCode, s.res.Header)
	}
	for i := range 3 {
		if d := s.next(t, 10*time.Second); d != `{"version":"test"}` {
			t.Fatalf("event %d: %q", i, d)
		}
	}
	// The token is revoked: the stream ends.
	if _, err := e.root().Do(t.Context(), http.MethodPost, PathTokens+"/grafana/revoke", nil); err != nil {
		t.Fatal(err)
	}
	s.ended(t, 10*time.Second)

	// A console session: logout ends its stream.
	adminTok := e.createToken("ops", RoleAdmin)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return e.lan.DialContext(ctx, network, strings.Replace(addr, "gw.corp.test", gwAddr, 1))
	}
	b := e.browser(dial, "https://gw.corp.test:9100")
	if r := b.login(adminTok); r.code != http.StatusSeeOther {
		t.Fatalf("login: %d", r.code)
	}
	s = e.openEvents(t, nil, b.cookie)
	if d := s.next(t, 10*time.Second); d != `{"version":"test"}` {
		t.Fatalf("console stream: %q", d)
	}
	if r := b.do(req{method: "POST", path: "/console/logout", form: url.Values{console.FieldCSRF: {b.csrf}}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	s.ended(t, 10*time.Second)

	// Shutdown ends a live stream at once, not after the 5 s grace.
	s = e.openEvents(t, http.Header{"Authorization": {"Bearer " + adminTok}}, nil)
	s.next(t, 10*time.Second)
	start := time.Now()
	e.stop()
	s.ended(t, 10*time.Second)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown took %s with a stream open: it waited for the stream", d)
	}
}
