package access

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestIDTokenAttacks: every ID token that is not exactly right must end
// the login with 401 and no session.
func TestIDTokenAttacks(t *testing.T) {
	e, f := standardEnv(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name   string
		mutate func(c map[string]any)
		mint   func(c map[string]any) string
	}{
		{name: "forged with the provider's kid", mint: func(c map[string]any) string { return signJWT(t, other, f.kid, jose.RS256, c) }},
		{name: "unknown kid", mint: func(c map[string]any) string { return signJWT(t, other, "idp-key-9", jose.RS256, c) }},
		{name: "alg none", mint: func(c map[string]any) string { return unsignedJWT(f.kid, c) }},
		{name: "HS256 keyed with the public key", mint: func(c map[string]any) string {
			pub, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
			return signJWT(t, pub, f.kid, jose.HS256, c)
		}},
		{name: "expired", mutate: func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(-time.Hour).Unix(), now.Add(-10*time.Minute).Unix()
		}},
		{name: "not yet valid", mutate: func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() }},
		{name: "wrong aud", mutate: func(c map[string]any) { c["aud"] = "another-client" }},
		{name: "wrong issuer", mutate: func(c map[string]any) { c["iss"] = "https://evil.example" }},
		{name: "replayed nonce from another login", mutate: func(c map[string]any) { c["nonce"] = "an-old-nonce-seen-before" }},
		{name: "no nonce", mutate: func(c map[string]any) { delete(c, "nonce") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.set(func(f *fakeIdP) { f.mutate, f.mint = tt.mutate, tt.mint })
			c := e.client(true)
			resp, body := e.get(c, e.url("wiki.test", "/secret"))
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if cookieOf(resp, CookieSession) != nil {
				t.Fatal("a session cookie was set")
			}
			nf := e.client(false)
			nf.Jar = c.Jar
			if resp, _ := e.get(nf, e.url("wiki.test", "/secret")); resp.StatusCode != http.StatusFound {
				t.Fatalf("after the refused login: status %d", resp.StatusCode)
			}
		})
	}
	f.set(func(f *fakeIdP) { f.mutate, f.mint = nil, nil })
	e.login("wiki.test") // and the provider still works
}

// loginSteps walks the code flow one redirect at a time and returns the
// login cookie and the callback URL the provider sent the browser to.
func loginSteps(t testing.TB, e *env, c *http.Client, host, returnTo string) (*http.Cookie, string) {
	t.Helper()
	u := e.url(host, PathLogin+"?"+url.Values{"redirect_url": {returnTo}}.Encode())
	resp, body := e.get(c, u)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	lc := cookieOf(resp, cookieLogin+"*")
	if lc == nil {
		t.Fatal("no login cookie")
	}
	authURL := resp.Header.Get("Location")
	au, _ := url.Parse(authURL)
	if au.Query().Get("code_challenge_method") != "S256" || au.Query().Get("code_challenge") == "" || au.Query().Get("nonce") == "" || au.Query().Get("state") == "" {
		t.Fatalf("authorization request lacks PKCE, nonce or state: %s", authURL)
	}
	resp, _ = e.get(c, authURL)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	return lc, resp.Header.Get("Location")
}

func TestCookieFlags(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.client(false)
	lc, cb := loginSteps(t, e, c, "wiki.test", "/")
	if !lc.HttpOnly || !lc.Secure || lc.SameSite != http.SameSiteLaxMode || lc.Path != "/" || !strings.HasPrefix(lc.Name, "__Host-") || lc.MaxAge <= 0 || lc.MaxAge > 600 || lc.Domain != "" {
		t.Fatalf("login cookie flags: %+v", lc)
	}
	resp, body := e.get(c, cb)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("callback %d %s", resp.StatusCode, body)
	}
	sc := cookieOf(resp, CookieSession)
	if sc == nil {
		t.Fatal("no session cookie")
	}
	if !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.Domain != "" || !strings.HasPrefix(sc.Name, "__Host-") {
		t.Fatalf("session cookie flags: %+v", sc)
	}
	if d := time.Until(sc.Expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("session cookie expires in %s", d)
	}
	if strings.Contains(sc.Value, "alice") || strings.Count(sc.Value, ".") != 4 {
		t.Fatal("session cookie is not an opaque JWE")
	}
}

func TestStateMismatch(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.client(false)
	_, cb := loginSteps(t, e, c, "wiki.test", "/")
	u, _ := url.Parse(cb)
	q := u.Query()
	state := q.Get("state")
	for name, s := range map[string]string{
		"other state":       randomString(32),
		"same prefix":       state[:16] + randomString(20),
		"missing state":     "",
		"short state":       "abc",
		"state of no login": strings.Repeat("A", 43),
	} {
		q.Set("state", s)
		u.RawQuery = q.Encode()
		resp, _ := e.get(c, u.String())
		if resp.StatusCode != http.StatusBadRequest || cookieOf(resp, CookieSession) != nil {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
	// A callback without the browser's login cookie (login CSRF) fails too.
	_, cb = loginSteps(t, e, e.client(false), "wiki.test", "/")
	if resp, _ := e.get(e.client(false), cb); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("callback without login cookie: %d", resp.StatusCode)
	}
}

func TestReplayedLogin(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.client(false)
	lc, cb := loginSteps(t, e, c, "wiki.test", "/")
	if resp, _ := e.get(c, cb); resp.StatusCode != http.StatusFound || cookieOf(resp, CookieSession) == nil {
		t.Fatalf("first callback: %d", resp.StatusCode)
	}
	// An attacker who captured the login cookie and callback URL.
	a := e.client(false)
	u, _ := url.Parse(e.url("wiki.test", PathCallback))
	a.Jar.SetCookies(u, []*http.Cookie{{Name: lc.Name, Value: lc.Value}})
	resp, body := e.get(a, cb)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") {
		t.Fatalf("replayed callback: %d %s", resp.StatusCode, body)
	}
}

func TestOpenRedirect(t *testing.T) {
	for in, want := range map[string]string{
		"/wiki/page?x=1":             "/wiki/page?x=1",
		"https://evil.example/":      "/",
		"//evil.example/":            "/",
		"/\\evil.example":            "/",
		"\\\\evil.example":           "/",
		"/%0d%0aSet-Cookie:x":        "/%0d%0aSet-Cookie:x",
		"/\r\nLocation: x":           "/",
		"javascript:alert(1)":        "/",
		"":                           "/",
		"evil.example":               "/",
		"/cdn-cgi/access/logout":     "/",
		"https:/evil.example":        "/",
		"/ok#frag":                   "/ok#frag",
		"/\tevil":                    "/",
		"///evil.example":            "/",
		"/.//evil.example/../../x":   "/.//evil.example/../../x",
		"http://wiki.test/same-host": "/",
	} {
		if got := safeReturn(in); got != want {
			t.Errorf("safeReturn(%q) = %q, want %q", in, got, want)
		}
	}
	e, _ := standardEnv(t)
	c := e.client(true)
	resp, _ := e.get(c, e.url("wiki.test", PathLogin+"?redirect_url="+url.QueryEscape("//evil.example/x")))
	if resp.StatusCode != 200 || resp.Request.URL.Hostname() != "wiki.test" || resp.Request.URL.Path != "/" {
		t.Fatalf("ended at %s (%d)", resp.Request.URL, resp.StatusCode)
	}
}

func TestClientSuppliedIdentityHeaders(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	forged := unsignedJWT("x", map[string]any{"email": "ceo@corp.example"})
	resp, body := e.get(c, e.url("wiki.test", "/"),
		HeaderAssertion, forged, "Cf-Access-Jwt-Assertion", forged, HeaderEmail, "ceo@corp.example",
		"X-Forwarded-Email", "ceo@corp.example", "X-Forwarded-User", "ceo", "Remote-User", "ceo")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ec := decodeEcho(t, body)
	if got := ec.Headers.Values(HeaderAssertion); len(got) != 1 || got[0] == forged {
		t.Fatalf("assertion header %q", got)
	}
	if got := ec.Headers.Values(HeaderEmail); len(got) != 1 || got[0] != "alice@corp.example" {
		t.Fatalf("email header %q", got)
	}
	for _, h := range []string{"Cf-Access-Jwt-Assertion", "X-Forwarded-Email", "X-Forwarded-User", "Remote-User"} {
		if ec.Headers.Get(h) != "" {
			t.Errorf("%s reached the upstream", h)
		}
	}
}

// sessionFor logs in to host and returns the session cookie's value.
func sessionFor(t testing.TB, e *env, host string) string {
	t.Helper()
	c := e.client(false)
	_, cb := loginSteps(t, e, c, host, "/")
	resp, _ := e.get(c, cb)
	sc := cookieOf(resp, CookieSession)
	if sc == nil {
		t.Fatalf("no session for %s", host)
	}
	return sc.Value
}

func TestSessionCookieAttacks(t *testing.T) {
	e, _ := standardEnv(t)
	good := sessionFor(t, e, "wiki.test")
	docs := sessionFor(t, e, "docs.test")
	ks := e.srv.keys.set.Load()
	now := time.Now()
	base := func() *tokenClaims {
		return &tokenClaims{
			Claims: jwt.Claims{Issuer: DefaultIssuer, Subject: "user-1", Audience: jwt.Audience{"wiki.test"},
				IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))},
			Type: tokenApp, Email: "alice@corp.example", IdP: "corp", AuthMillis: now.UnixMilli(),
		}
	}
	seal := func(raw string) string {
		v, err := e.srv.cookies.Load().session.seal([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	signed := func(mod func(*tokenClaims)) string {
		c := base()
		mod(c)
		raw, err := ks.sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return seal(raw)
	}
	asMap := func(c *tokenClaims) map[string]any {
		return map[string]any{"iss": c.Issuer, "sub": c.Subject, "aud": []string(c.Audience), "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "type": "app", "email": c.Email, "idp": "corp", "auth_ms": now.UnixMilli()}
	}
	otherSealer, _ := newSealer(make([]byte, 32))
	otherSealed, _ := otherSealer.seal([]byte(strings.Split(good, ".")[0]))
	tampered := []byte(good)
	tampered[len(tampered)-30] ^= 1
	pub, _ := x509.MarshalPKIXPublicKey(ks.current.priv.Public())

	loginCookie, _ := loginSteps(t, e, e.client(false), "wiki.test", "/")
	// The control: a token built the same way is accepted.
	ok := signed(func(*tokenClaims) {})
	cases := map[string]string{
		"garbage":                  "not-a-cookie",
		"a login state cookie":     loginCookie.Value,
		"tampered ciphertext":      string(tampered),
		"another app's session":    docs,
		"sealed with another key":  otherSealed,
		"unsealed signed token":    mustSign(t, ks, base()),
		"expired":                  signed(func(c *tokenClaims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Hour)) }),
		"not yet valid":            signed(func(c *tokenClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }),
		"wrong aud":                signed(func(c *tokenClaims) { c.Audience = jwt.Audience{"docs.test"} }),
		"wrong issuer":             signed(func(c *tokenClaims) { c.Issuer = "someone-else" }),
		"service token type":       signed(func(c *tokenClaims) { c.Type = tokenService }),
		"no expiry":                signed(func(c *tokenClaims) { c.Expiry = nil }),
		"alg none":                 seal(unsignedJWT(ks.current.ID, asMap(base()))),
		"unknown kid":              seal(signJWT(t, newECKey(t), "kid-nobody-knows", jose.ES256, asMap(base()))),
		"forged with current kid":  seal(signJWT(t, newECKey(t), ks.current.ID, jose.ES256, asMap(base()))),
		"HS256 keyed with pub key": seal(signJWT(t, pub, ks.current.ID, jose.HS256, asMap(base()))),
	}
	try := func(v string) *http.Response {
		c := e.client(false)
		u, _ := url.Parse(e.url("wiki.test", "/"))
		c.Jar.SetCookies(u, []*http.Cookie{{Name: CookieSession, Value: v}})
		resp, _ := e.get(c, u.String())
		return resp
	}
	if resp := try(ok); resp.StatusCode != 200 {
		t.Fatalf("control cookie refused: %d", resp.StatusCode)
	}
	for name, v := range cases {
		resp := try(v)
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), PathLogin) {
			t.Errorf("%s: status %d", name, resp.StatusCode)
			continue
		}
		if c := cookieOf(resp, CookieSession); c == nil || c.MaxAge >= 0 {
			t.Errorf("%s: bad cookie not cleared", name)
		}
	}
	// A real session expires with the clock.
	e.clock.Advance(25 * time.Hour)
	if resp := try(good); resp.StatusCode != http.StatusFound {
		t.Fatalf("expired session: %d", resp.StatusCode)
	}
}

func mustSign(t *testing.T, ks *keySet, c *tokenClaims) string {
	raw, err := ks.sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
