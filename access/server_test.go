package access

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
)

func TestLoginFlowAndAssertion(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	resp, body := e.get(c, e.url("wiki.test", "/page?x=1"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ec := decodeEcho(t, body)
	if ec.Path != "/page?x=1" || !strings.HasPrefix(ec.Host, "wiki.test") {
		t.Fatalf("upstream saw %s %s", ec.Host, ec.Path)
	}
	if got := ec.Headers.Get(HeaderEmail); got != "alice@corp.example" {
		t.Fatalf("email header %q", got)
	}
	if ec.Headers.Get("Cookie") != "" {
		t.Fatalf("upstream got edgegw cookies: %q", ec.Headers.Get("Cookie"))
	}
	raw := ec.Headers.Get(HeaderAssertion)
	// An upstream verifies the assertion with stock go-oidc against the
	// JWKS endpoint, as Cloudflare's sample does.
	ctx := oidc.ClientContext(context.Background(), e.client(false))
	ks := oidc.NewRemoteKeySet(ctx, e.url("wiki.test", PathCerts))
	v := oidc.NewVerifier(DefaultIssuer, ks, &oidc.Config{ClientID: "wiki.test", SupportedSigningAlgs: []string{"ES256"}})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("assertion does not verify: %v", err)
	}
	var cl struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
		Type   string   `json:"type"`
	}
	tok.Claims(&cl)
	if cl.Email != "alice@corp.example" || len(cl.Groups) != 1 || cl.Groups[0] != "engineering" || cl.Type != "app" || tok.Subject != "user-1" {
		t.Fatalf("claims %+v sub %q", cl, tok.Subject)
	}
	// The assertion is for this app only.
	other := oidc.NewVerifier(DefaultIssuer, ks, &oidc.Config{ClientID: "docs.test", SupportedSigningAlgs: []string{"ES256"}})
	if _, err := other.Verify(ctx, raw); err == nil {
		t.Fatal("assertion for wiki verified for docs")
	}
	recs := e.records()
	if len(recs) == 0 || recs[0].Action != ActionLogin || !recs[0].Allowed || recs[0].Email != "alice@corp.example" || recs[0].PolicyName != "staff" || recs[0].AppDomain != "wiki.test" || !recs[0].IPAddress.IsLoopback() || recs[0].RayID == "" {
		t.Fatalf("records %+v", recs)
	}
}

func TestUnknownHost(t *testing.T) {
	e, _ := standardEnv(t)
	resp, _ := e.get(e.client(false), e.url("localhost", "/"))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestDeniedLogin(t *testing.T) {
	e, f := standardEnv(t)
	f.set(func(f *fakeIdP) { f.claims["email"] = "mallory@evil.example"; f.claims["groups"] = []string{"sales"} })
	c := e.client(true)
	resp, _ := e.get(c, e.url("wiki.test", "/"))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if cookieOf(resp, CookieSession) != nil {
		t.Fatal("session cookie set for a denied login")
	}
	recs := e.records()
	if len(recs) != 1 || recs[0].Allowed || recs[0].Action != ActionLogin {
		t.Fatalf("records %+v", recs)
	}
}

func TestAPIClientGets401(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.client(false)
	for _, h := range [][]string{{"X-Requested-With", "XMLHttpRequest"}, {"Accept", "application/json"}} {
		resp, _ := e.get(c, e.url("wiki.test", "/api"), h...)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d", h[0], resp.StatusCode)
		}
	}
	resp, _ := e.get(c, e.url("wiki.test", "/page"), "Accept", "text/html")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), PathLogin) {
		t.Fatalf("browser: status %d location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestBypass(t *testing.T) {
	e, _ := standardEnv(t)
	resp, body := e.get(e.client(false), e.url("open.test", "/x"), HeaderAssertion, "forged", "Cf-Access-Jwt-Assertion", "forged")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ec := decodeEcho(t, body)
	if ec.Headers.Get(HeaderAssertion) != "" || ec.Headers.Get("Cf-Access-Jwt-Assertion") != "" {
		t.Fatal("client assertion passed through a bypass app")
	}
	if len(e.records()) != 0 {
		t.Fatal("bypass was recorded")
	}
}

func TestServiceTokens(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.client(false)
	good := []string{"CF-Access-Client-Id", "6f2c1a0e.access", "CF-Access-Client-Secret", "0123456789abcdef0123"}
	resp, body := e.get(c, e.url("wiki.test", "/api"), good...)
	if resp.StatusCode != 200 {
		t.Fatalf("good token: %d %s", resp.StatusCode, body)
	}
	ec := decodeEcho(t, body)
	if ec.Headers.Get("Cf-Access-Client-Secret") != "" || ec.Headers.Get("Cf-Access-Client-Id") != "" {
		t.Fatal("service token headers reached the upstream")
	}
	if ec.Headers.Get(HeaderAssertion) == "" {
		t.Fatal("no service assertion")
	}
	for name, h := range map[string][]string{
		"wrong secret": {HeaderClientID, "6f2c1a0e.access", HeaderClientSecret, "0123456789abcdef0124"},
		"no secret":    {HeaderClientID, "6f2c1a0e.access"},
		"unknown id":   {HeaderClientID, "nobody.access", HeaderClientSecret, "0123456789abcdef0123"},
	} {
		resp, _ := e.get(c, e.url("wiki.test", "/api"), h...)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
	// Cloudflare's trap: a token only works through a service_auth policy.
	resp, _ = e.get(c, e.url("docs.test", "/api"), good...)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token on an app without service_auth: %d", resp.StatusCode)
	}
}

func TestLogoutEndsEveryApp(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	if resp, _ := e.get(c, e.url("docs.test", "/start")); resp.StatusCode != 200 {
		t.Fatalf("docs login %d", resp.StatusCode)
	}
	nf := e.client(false)
	nf.Jar = c.Jar
	if resp, _ := e.get(nf, e.url("docs.test", "/")); resp.StatusCode != 200 {
		t.Fatalf("docs before logout %d", resp.StatusCode)
	}
	resp := e.logout(c, "wiki.test")
	if resp.StatusCode != 200 {
		t.Fatalf("logout %d", resp.StatusCode)
	}
	if resp, _ := e.get(nf, e.url("docs.test", "/")); resp.StatusCode != http.StatusFound {
		t.Fatalf("docs after logout: %d", resp.StatusCode)
	}
	recs := e.records()
	found := false
	for _, r := range recs {
		found = found || r.Action == ActionLogout
	}
	if !found {
		t.Fatalf("no logout record in %+v", recs)
	}
	// A new login works again.
	if resp, _ := e.get(c, e.url("docs.test", "/again")); resp.StatusCode != 200 {
		t.Fatalf("login after logout %d", resp.StatusCode)
	}
}

// TestUnverifiedEmailIgnored: an address the provider has not verified
// cannot satisfy email selectors.
func TestUnverifiedEmailIgnored(t *testing.T) {
	for _, flag := range []any{false, "false"} {
		e, f := standardEnv(t)
		f.set(func(f *fakeIdP) { f.claims["email_verified"] = flag; f.claims["groups"] = nil })
		resp, _ := e.get(e.client(true), e.url("wiki.test", "/"))
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("email_verified=%#v: status %d", flag, resp.StatusCode)
		}
	}
}
