package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/console"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// browser is a client of the console: it keeps one session cookie and
// sends what a browser sends (Origin, Sec-Fetch-Site) unless told not to.
type browser struct {
	t      *testing.T
	e      *env
	base   string // scheme://host:port as the browser addresses the listener
	client *http.Client
	cookie *http.Cookie
	csrf   string
}

func (e *env) browser(dial func(context.Context, string, string) (net.Conn, error), base string) *browser {
	return &browser{t: e.t, e: e, base: base, client: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: e.caPool, ServerName: "gw.corp.test"}},
		// The tests look at each redirect themselves.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// req is one request of the browser.
type req struct {
	method, path string
	form         url.Values
	csrf         string            // X-CSRF-Token
	site         string            // Sec-Fetch-Site; "" for same-origin, "-" for none
	origin       string            // Origin; "" for the console's own, "-" for none
	header       map[string]string // more headers
}

type resp struct {
	code   int
	body   string
	header http.Header
}

func (b *browser) do(r req) resp {
	b.t.Helper()
	var body io.Reader
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	}
	hr, err := http.NewRequestWithContext(b.t.Context(), r.method, b.base+r.path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if r.form != nil {
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.method != http.MethodGet {
		switch r.site {
		case "":
			hr.Header.Set("Sec-Fetch-Site", "same-origin")
		case "-":
		default:
			hr.Header.Set("Sec-Fetch-Site", r.site)
		}
		switch r.origin {
		case "":
			hr.Header.Set("Origin", b.base)
		case "-":
		default:
			hr.Header.Set("Origin", r.origin)
		}
	}
	if r.csrf != "" {
		hr.Header.Set(console.HeaderCSRF, r.csrf)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if b.cookie != nil {
		hr.AddCookie(b.cookie)
	}
	res, err := b.client.Do(hr)
	if err != nil {
		b.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, string(data), res.Header}
}

// login posts the token to the login form; on success the browser keeps
// the cookie and reads its CSRF token.
func (b *browser) login(token string) resp {
	b.t.Helper()
	r := b.do(req{method: "POST", path: "/console/login", form: url.Values{"token": {token}}})
	if r.code != http.StatusSeeOther {
		return r
	}
	cs := (&http.Response{Header: r.header}).Cookies()
	if len(cs) != 1 {
		b.t.Fatalf("login set %d cookies: %v", len(cs), r.header["Set-Cookie"])
	}
	b.cookie = cs[0]
	s := b.do(req{method: "GET", path: "/console/session"})
	var info console.SessionInfo
	if s.code != 200 || json.Unmarshal([]byte(s.body), &info) != nil || info.CSRF == "" {
		b.t.Fatalf("session after login: %d %s", s.code, s.body)
	}
	b.csrf = info.CSRF
	return r
}

// TestConsoleSessions is the attack test of the console on a LAN listener
// with TLS: login with a viewer's, an admin's and a bad token, the
// cookie's attributes, CSRF refused without the token and from another
// site, a viewer cannot revoke and an admin can (audited as the API
// does), logout, and a revoked token ends its session at once.
func TestConsoleSessions(t *testing.T) {
	e := newEnv(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}})
	k, _ := wireguard.GeneratePrivateKey()
	dev, err := e.reg.Enroll(t.Context(), identity.Enrollment{Name: "alice-laptop", Email: "alice@corp.test", Subject: "s1", PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	viewerTok := e.createToken("grafana", RoleViewer)
	adminTok := e.createToken("ops", RoleAdmin)
	revokePath := PathDevices + "/" + dev.ID + "/revoke"
	// The browser reaches the listener by its name, as an operator would.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return e.lan.DialContext(ctx, network, strings.Replace(addr, "gw.corp.test", gwAddr, 1))
	}
	newBrowser := func() *browser { return e.browser(dial, "https://gw.corp.test:9100") }
	anon := newBrowser()

	// The pages, before any login.
	if r := anon.do(req{method: "GET", path: "/"}); r.code != http.StatusFound || r.header.Get("Location") != "/console/" {
		t.Errorf("GET /: %d to %q, want 302 to /console/", r.code, r.header.Get("Location"))
	}
	if r := anon.do(req{method: "GET", path: "/console/"}); r.code != http.StatusSeeOther || r.header.Get("Location") != "/console/login" {
		t.Errorf("GET /console/ without a session: %d to %q, want 303 to the login", r.code, r.header.Get("Location"))
	}
	r := anon.do(req{method: "GET", path: "/console/login"})
	if r.code != 200 || !strings.Contains(r.body, `name="token"`) || !strings.Contains(r.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("login page: %d %v %.300s", r.code, r.header, r.body)
	}
	if r := anon.do(req{method: "GET", path: "/console/static/app.js"}); r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/javascript") || r.header.Get("ETag") == "" {
		t.Errorf("app.js: %d %v", r.code, r.header)
	}
	if r := anon.do(req{method: "GET", path: "/console/session"}); r.code != 401 {
		t.Errorf("session without a cookie: %d", r.code)
	}

	// Bad logins: no cookie, a 401, and counted.
	for _, tt := range []struct {
		name string
		r    req
		want int
	}{
		{"bad token", req{method: "POST", path: "/console/login", form: url.Values{"token": {TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}}, 401},
		{"empty token", req{method: "POST", path: "/console/login", form: url.Values{"token": {""}}}, 401},
		{"cross-site login", req{method: "POST", path: "/console/login", form: url.Values{"token": {adminTok}}, site: "cross-site"}, 403},
		{"foreign origin login", req{method: "POST", path: "/console/login", form: url.Values{"token": {adminTok}}, site: "-", origin: "https://evil.example"}, 403},
	} {
		r := anon.do(tt.r)
		if r.code != tt.want || len(r.header["Set-Cookie"]) != 0 {
			t.Errorf("%s: %d %v, want %d and no cookie", tt.name, r.code, r.header["Set-Cookie"], tt.want)
		}
	}
	if e.srv.console.Sessions() != 0 {
		t.Fatalf("%d sessions after bad logins", e.srv.console.Sessions())
	}

	// A viewer logs in: the cookie's attributes.
	viewer := newBrowser()
	r = viewer.login(viewerTok)
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/console/" {
		t.Fatalf("viewer login: %d %s", r.code, r.body)
	}
	raw := r.header.Get("Set-Cookie")
	c := viewer.cookie
	if c.Name != console.CookieSecure || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" || len(c.Value) < 40 {
		t.Errorf("session cookie %q: want __Host-, Secure, HttpOnly, SameSite=Strict, Path=/, no Domain", raw)
	}
	if strings.Contains(raw, viewerTok) || strings.Contains(raw, strings.TrimPrefix(viewerTok, TokenPrefix)) {
		t.Error("the cookie holds the token")
	}
	// Logging in again from the same browser replaces its session.
	oldCookie := viewer.cookie
	viewer.login(viewerTok)
	if n := e.srv.console.Sessions(); n != 1 || viewer.cookie.Value == oldCookie.Value {
		t.Errorf("after a second login: %d sessions, new cookie %v; want 1 and a new one", n, viewer.cookie.Value != oldCookie.Value)
	}
	if got := testutil.ToFloat64(e.srv.sessions); got != 1 {
		t.Errorf("edgegw_admin_console_sessions = %v, want 1", got)
	}
	if problems, err := testutil.CollectAndLint(e.srv); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	if r := viewer.do(req{method: "GET", path: "/console/"}); r.code != 200 || !strings.Contains(r.body, "/console/static/app.js") {
		t.Errorf("console page with a session: %d %.200s", r.code, r.body)
	}
	if r := viewer.do(req{method: "GET", path: PathStatus}); r.code != 200 || !strings.Contains(r.body, `"version": "test"`) {
		t.Errorf("status with the viewer's session: %d %s", r.code, r.body)
	}
	if r := viewer.do(req{method: "GET", path: PathDevices + "?q=alice&limit=10"}); r.code != 200 || !strings.Contains(r.body, dev.ID) || r.header.Get("X-Total-Count") != "1" {
		t.Errorf("device search with the viewer's session: %d %v %s", r.code, r.header, r.body)
	}
	// A viewer cannot revoke, even with its CSRF token from the console.
	if r := viewer.do(req{method: "POST", path: revokePath, csrf: viewer.csrf}); r.code != 403 || !strings.Contains(r.body, "viewer") {
		t.Errorf("viewer revokes through the console: %d %s", r.code, r.body)
	}
	if r := viewer.do(req{method: "GET", path: PathTokens}); r.code != 403 {
		t.Errorf("viewer lists tokens through the console: %d", r.code)
	}

	// An admin: CSRF first.
	adm := newBrowser()
	if r := adm.login(adminTok); r.code != http.StatusSeeOther {
		t.Fatalf("admin login: %d %s", r.code, r.body)
	}
	for _, tt := range []struct {
		name string
		r    req
	}{
		{"no CSRF token", req{method: "POST", path: revokePath}},
		{"another session's CSRF token", req{method: "POST", path: revokePath, csrf: viewer.csrf}},
		{"cross-site with the token", req{method: "POST", path: revokePath, csrf: adm.csrf, site: "cross-site"}},
		{"same-site subdomain with the token", req{method: "POST", path: revokePath, csrf: adm.csrf, site: "same-site"}},
		{"foreign Origin with the token", req{method: "POST", path: revokePath, csrf: adm.csrf, site: "-", origin: "https://evil.example"}},
		{"a form without the field", req{method: "POST", path: revokePath, form: url.Values{"x": {"1"}}}},
	} {
		if r := adm.do(tt.r); r.code != 403 || !strings.Contains(r.body, `"csrf"`) {
			t.Errorf("%s: %d %s, want 403 csrf", tt.name, r.code, r.body)
		}
	}
	if d, _ := e.reg.Get(t.Context(), dev.ID); d.Revoked {
		t.Fatal("a refused request revoked the device")
	}
	if r := adm.do(req{method: "POST", path: revokePath, csrf: adm.csrf}); r.code != 200 || !strings.Contains(r.body, `"status": "revoked"`) {
		t.Fatalf("admin revokes through the console: %d %s", r.code, r.body)
	}
	if d, _ := e.reg.Get(t.Context(), dev.ID); !d.Revoked {
		t.Fatal("the device is not revoked")
	}

	// Logout is a change: the CSRF token is needed.
	if r := adm.do(req{method: "POST", path: "/console/logout", form: url.Values{}}); r.code != 403 {
		t.Errorf("logout without CSRF: %d", r.code)
	}
	if r := adm.do(req{method: "GET", path: PathStatus}); r.code != 200 {
		t.Fatalf("the session ended on a refused logout: %d", r.code)
	}
	r = adm.do(req{method: "POST", path: "/console/logout", form: url.Values{console.FieldCSRF: {adm.csrf}}})
	if r.code != http.StatusSeeOther || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d %v", r.code, r.header)
	}
	if r := adm.do(req{method: "GET", path: PathStatus}); r.code != 401 {
		t.Errorf("API with the logged-out session: %d, want 401", r.code)
	}

	// Revoking the viewer's token ends its session on the next request;
	// a new token under the same name does not revive it.
	if r := viewer.do(req{method: "GET", path: PathStatus}); r.code != 200 {
		t.Fatalf("viewer before revocation: %d", r.code)
	}
	if _, err := e.root().Do(t.Context(), http.MethodPost, PathTokens+"/grafana/revoke", nil); err != nil {
		t.Fatal(err)
	}
	e.createToken("grafana", RoleViewer)
	if r := viewer.do(req{method: "GET", path: PathStatus}); r.code != 401 {
		t.Errorf("API with a revoked token's session: %d, want 401", r.code)
	}
	if r := viewer.do(req{method: "GET", path: "/console/"}); r.code != http.StatusSeeOther {
		t.Errorf("console page with a revoked token's session: %d, want 303 to the login", r.code)
	}
	if n := e.srv.console.Sessions(); n != 0 {
		t.Errorf("%d sessions left, want 0", n)
	}

	// Refusals are counted (and logged, rate-limited), not audited.
	for result, min := range map[string]float64{resultUnauthenticated: 4 + 2, resultForbidden: 6 + 2 + 1} {
		if got := testutil.ToFloat64(e.srv.results.WithLabelValues(result)); got < min {
			t.Errorf("edgegw_admin_requests_total{result=%q} = %v, want ≥ %v", result, got, min)
		}
	}

	// The audit trail: logins, the refused and the done revoke (as the
	// API audits them, from the UI), the logout.
	type ev struct {
		action, typ, actor, ctx, iface string
		ok                             bool
	}
	var got []ev
	for _, g := range e.audit() {
		if g.ResourceType == "admin_token" {
			continue
		}
		got = append(got, ev{g.Action, g.ResourceType, g.Actor.ID, g.Actor.Context, g.Actor.Interface, g.Result})
		if g.Actor.IP != lanAddr {
			t.Errorf("event %+v: actor IP %q, want %s", g, g.Actor.IP, lanAddr)
		}
	}
	want := []ev{
		{"login", "console_session", "grafana", "api_token", "UI", true},
		{"login", "console_session", "grafana", "api_token", "UI", true},
		{"revoke", "device", "grafana", "console_session", "UI", false},
		{"login", "console_session", "ops", "api_token", "UI", true},
		{"revoke", "device", "ops", "console_session", "UI", true},
		{"logout", "console_session", "ops", "api_token", "UI", true},
	}
	if len(got) != len(want) {
		t.Fatalf("audit events %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("audit event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestConsolePlainLoopback: on a plain-HTTP loopback listener the cookie
// cannot be Secure, so it cannot carry the __Host- prefix either; it is
// still HttpOnly and SameSite=Strict, and the login page says how to
// reach the console safely from elsewhere.
func TestConsolePlainLoopback(t *testing.T) {
	e := newEnv(t, Config{Listen: "127.0.0.1:9100"})
	tok := e.createToken("local", RoleAdmin)
	b := e.browser(e.gw.DialContext, "http://127.0.0.1:9100")
	if r := b.do(req{method: "GET", path: "/console/login"}); r.code != 200 || !strings.Contains(r.body, "plain HTTP") {
		t.Errorf("login page: %d %.300s", r.code, r.body)
	}
	if r := b.login(tok); r.code != http.StatusSeeOther {
		t.Fatalf("login: %d %s", r.code, r.body)
	}
	c := b.cookie
	if c.Name != console.CookiePlain || c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("cookie %+v: want edgegw_console, not Secure, HttpOnly, SameSite=Strict, Path=/", c)
	}
	if r := b.do(req{method: "GET", path: PathStatus}); r.code != 200 {
		t.Errorf("status with the session: %d", r.code)
	}
	// The API's bearer tokens still work beside sessions, and a cookie
	// named as the TLS one is not looked at on plain HTTP.
	b.cookie = &http.Cookie{Name: console.CookieSecure, Value: c.Value}
	if r := b.do(req{method: "GET", path: PathStatus}); r.code != 401 {
		t.Errorf("status with the session under the TLS cookie's name: %d, want 401", r.code)
	}
}
