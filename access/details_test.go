package access

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestIdentityHeaderSpellings: copies of identity and client-address
// headers in any spelling (underscores, case) never reach the upstream;
// what it gets is edgegw's assertion and the real client address.
func TestIdentityHeaderSpellings(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	forged := unsignedJWT("x", map[string]any{"email": "ceo@corp.example"})
	req, _ := http.NewRequest(http.MethodGet, e.url("wiki.test", "/"), nil)
	// Set raw keys: the client sends them as written.
	for _, k := range []string{
		"Cf_Access_Jwt_Assertion", "cf_access_jwt_assertion", "CF-ACCESS-JWT-ASSERTION",
		"Edgegw_Access_Jwt_Assertion", "Edgegw_Access_Authenticated_User_Email",
		"X_Forwarded_Email", "X_Forwarded_User", "Remote_User", "X-Real-IP", "X_Real_Ip",
		"True-Client-IP", "True_Client_Ip", "X_Forwarded_For", "Forwarded", "Edgegw_Ray",
	} {
		req.Header[k] = []string{forged}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	ec := decodeEcho(t, string(b))
	for k, vs := range ec.Headers {
		n := normHeader(k)
		for _, v := range vs {
			if v == forged || strings.Contains(v, forged) {
				t.Errorf("%s: the client's copy reached the upstream", k)
			}
		}
		switch n {
		case normHeader(HeaderAssertion), normHeader(HeaderEmail), normHeader(HeaderRayID), "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
			if k != http.CanonicalHeaderKey(k) || len(vs) != 1 {
				t.Errorf("%s: %q", k, vs)
			}
		default:
			if strippedHeaders[n] {
				t.Errorf("%s reached the upstream", k)
			}
		}
	}
	if got := ec.Headers.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got := ec.Headers.Get(HeaderEmail); got != "alice@corp.example" {
		t.Errorf("email header %q", got)
	}
}

// TestUpstreamCannotSetAccessCookies: Set-Cookie headers naming edgegw's
// cookies, in any prefix or case, are removed from upstream answers; the
// app's own cookies pass.
func TestUpstreamCannotSetAccessCookies(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range []string{
			CookieSession + "=attacker; Path=/; Secure", "EDGEGW_Authorization=x", "edgegw_authorization=x",
			"__Secure-EDGEGW_Authorization=x", cookieLogin + "abc=x; Path=/", " EDGEGW_Login_abc=x", "app=1; Path=/",
		} {
			w.Header().Add("Set-Cookie", c)
		}
		w.Header()["set_cookie"] = []string{CookieSession + "=y"} // not a Set-Cookie to Go, but strip it anyway
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	f := newFakeIdP(t)
	e := startEnv(t, defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), dir, up)
	resp, body := e.get(e.client(false), e.url("open.test", "/"))
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("status %d %q", resp.StatusCode, body)
	}
	var names []string
	for _, v := range resp.Header.Values("Set-Cookie") {
		n, _, _ := strings.Cut(v, "=")
		names = append(names, n)
	}
	if len(names) != 1 || names[0] != "app" {
		t.Fatalf("cookies set through the proxy: %q", names)
	}
}

// TestLogoutNeedsPostAndCSRF: a GET, a POST from another site or without
// the form's token, and a token from another session log no one out.
func TestLogoutNeedsPostAndCSRF(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	other := e.login("wiki.test")
	nf := e.client(false)
	nf.Jar = c.Jar
	loggedIn := func() bool {
		resp, _ := e.get(nf, e.url("wiki.test", "/"))
		return resp.StatusCode == http.StatusOK
	}
	token := func(c *http.Client) string {
		n := e.client(false)
		n.Jar = c.Jar
		_, body := e.get(n, e.url("wiki.test", PathLogout))
		m := csrfRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no token in %s", body)
		}
		return m[1]
	}
	post := func(form url.Values, hdr ...string) int {
		req, _ := http.NewRequest(http.MethodPost, e.url("wiki.test", PathLogout), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := nf.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if resp, body := e.get(nf, e.url("wiki.test", PathLogout)); resp.StatusCode != http.StatusOK || !strings.Contains(body, `method="post"`) {
		t.Fatalf("GET logout: %d %s", resp.StatusCode, body)
	}
	if !loggedIn() {
		t.Fatal("a GET logged the user out")
	}
	mine := token(c)
	for name, code := range map[string]int{
		"no token":              post(nil),
		"wrong token":           post(url.Values{"csrf": {"AAAA"}}),
		"another session's":     post(url.Values{"csrf": {token(other)}}),
		"cross-site origin":     post(url.Values{"csrf": {mine}}, "Origin", "https://evil.example"),
		"cross-site fetch meta": post(url.Values{"csrf": {mine}}, "Sec-Fetch-Site", "cross-site"),
	} {
		if code != http.StatusForbidden {
			t.Errorf("%s: status %d", name, code)
		}
	}
	if !loggedIn() {
		t.Fatal("a refused logout logged the user out")
	}
	if code := post(url.Values{"csrf": {mine}}, "Origin", "https://"+strings.TrimPrefix(e.url("wiki.test", ""), "https://")); code != http.StatusOK {
		t.Fatalf("logout with the form's token: %d", code)
	}
	if loggedIn() {
		t.Fatal("still logged in after the logout")
	}
}

// wsUpstream accepts any upgrade and echoes bytes back, as a WebSocket
// echo server would after its handshake; other requests get the echo
// upstream's answer.
func wsUpstream(t *testing.T) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(echoed{Host: r.Host, Path: r.URL.RequestURI(), Headers: r.Header})
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}))
	t.Cleanup(up.Close)
	return up
}

// openWS upgrades a connection to host through the proxy with the
// session cookie of c and checks that bytes echo.
func openWS(t *testing.T, e *env, c *http.Client, host string) net.Conn {
	t.Helper()
	u, _ := url.Parse(e.url(host, "/ws"))
	var cookies []string
	for _, ck := range c.Jar.Cookies(u) {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	conn, err := tls.Dial("tcp", e.srv.Addr().String(), &tls.Config{RootCAs: e.roots, ServerName: host, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: " + u.Host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: " + strings.Join(cookies, "; ") + "\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	return &bufConn{Conn: conn, r: br}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// waitClosed reads until the proxy closes conn; it fails the test if that
// does not happen within the deadline openWS set.
func waitClosed(t *testing.T, conn net.Conn, why string) {
	t.Helper()
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the WebSocket stayed open after %s", why)
	}
}

// TestWebSocketEndsWithSession: a WebSocket proxied for a session closes
// when the user logs out (on any app) and when the session expires.
func TestWebSocketEndsWithSession(t *testing.T) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := wsUpstream(t)
	cfg := defaultConfig(t, up.URL, dir)
	cfg.Apps[1].SessionDuration = time.Minute // docs
	e := startEnv(t, cfg, idpConfig(t, f, dir), dir, up)

	c := e.login("wiki.test")
	other := e.login("wiki.test") // another user session of the same user, other browser
	ws := openWS(t, e, c, "wiki.test")
	ws2 := openWS(t, e, other, "wiki.test")
	if resp := e.logout(c, "wiki.test"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout %d", resp.StatusCode)
	}
	waitClosed(t, ws, "logout")
	// A logout ends every session of that user begun before it.
	waitClosed(t, ws2, "logout in another browser")
	if got := testutil.ToFloat64(e.srv.metrics.wsClosed.WithLabelValues("logout")); got != 2 {
		t.Fatalf("closed by logout: %v", got)
	}

	// docs sessions last a minute: move the clock to just before the end,
	// so the session is still good when the WebSocket opens.
	d := e.login("docs.test")
	e.clock.Advance(time.Minute - 2*time.Second) // exp is in whole seconds
	ws3 := openWS(t, e, d, "docs.test")
	waitClosed(t, ws3, "session expiry")
	testkit.Eventually(t, 10*time.Second, "expiry counted", func() error {
		if n := testutil.ToFloat64(e.srv.metrics.wsClosed.WithLabelValues("expired")); n != 1 {
			return fmt.Errorf("%v WebSockets closed for expiry, want 1", n)
		}
		return nil
	})
}
