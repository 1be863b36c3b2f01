package access

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
)

// fuzzServer is a Server that is never run: ServeHTTP works on its
// snapshot, and no provider is contacted.
func fuzzServer(f *testing.F) *Server {
	dir := f.TempDir()
	secret := filepath.Join(dir, "ci.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	cfg := Config{Listen: "127.0.0.1:0", Apps: []App{
		{Name: "wiki", Domain: "wiki.test", Upstream: "http://127.0.0.1:9", Policies: []policy.Policy{
			{Name: "staff", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "corp.example"}}},
			{Name: "ci", Action: policy.ServiceAuth, Include: []policy.Selector{{ServiceToken: "ci-bot"}}},
		}},
		{Name: "open", Domain: "open.test", Upstream: "http://127.0.0.1:9", Policies: []policy.Policy{
			{Name: "p", Action: policy.Bypass, Include: []policy.Selector{{Everyone: yes()}}},
		}},
	}, ServiceTokens: []ServiceToken{{Name: "ci-bot", ClientID: "6f2c1a0e.access", ClientSecretFile: secret}}}
	idp := identity.Config{Providers: []identity.Provider{{Name: "corp", Issuer: "http://127.0.0.1:9", ClientID: "edgegw"}}}
	srv, err := New(cfg, idp, Options{StateDir: dir})
	if err != nil {
		f.Fatal(err)
	}
	return srv
}

// FuzzAppHost: the Host header picks an app only when it names the app's
// domain (any case, an optional trailing dot and port), never an address.
func FuzzAppHost(f *testing.F) {
	snap := &snapshot{apps: map[string]*appState{"wiki.test": {cfg: App{Name: "wiki"}}, "xn--bcher-kva.test": {cfg: App{Name: "idn"}}}}
	for _, s := range []string{"wiki.test", "WIKI.test.", "wiki.test:8443", "[::1]:443", "127.0.0.1", "wiki.test.:1", "wiki.test..", "wiki.test:", "", ":", "[wiki.test]:1", "xn--bcher-kva.test", "bücher.test"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		a := snap.app(host)
		if a == nil {
			return
		}
		// What is left of the host once the app's domain is taken out may
		// only be a port, brackets and a trailing dot.
		var domain string
		for d, app := range snap.apps {
			if app == a {
				domain = d
			}
		}
		rest := strings.Replace(strings.ToLower(host), domain, "", 1)
		if !strings.Contains(strings.ToLower(host), domain) || strings.Trim(rest, "[]:.0123456789") != "" {
			t.Fatalf("host %q routed to %s", host, a.cfg.Name)
		}
	})
}

// FuzzRequestHeaders: whatever headers a client sends, a service token is
// accepted only for the exact id and secret, and no identity or
// client-address header survives stripping in any spelling.
func FuzzRequestHeaders(f *testing.F) {
	srv := fuzzServer(f)
	f.Add("Edgegw-Access-Client-Id", "6f2c1a0e.access", "Edgegw-Access-Client-Secret", "0123456789abcdef0123")
	f.Add("Cf-Access-Client-Id", "6f2c1a0e.access", "Cf-Access-Client-Secret", "0123456789abcdef0123")
	f.Add("cf_access_client_id", "6f2c1a0e.access", "CF_ACCESS_CLIENT_SECRET", "x")
	f.Add("Cf_Access_Jwt_Assertion", "a.b.c", "X_REAL_IP", "10.0.0.1")
	f.Add("Edgegw-Access-Client-Id", "", "Edgegw-Access-Client-Secret", "")
	f.Add("Edgegw-Access-Client-Id", "6f2c1a0e.access\x00", "Edgegw-Access-Client-Secret", "0123456789abcdef0123 ")
	want := sha256.Sum256([]byte("0123456789abcdef0123"))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		r := httptest.NewRequest(http.MethodGet, "https://wiki.test/", nil)
		r.Header[k1] = []string{v1}
		r.Header[k2] = append(r.Header[k2], v2)
		q := &request{w: httptest.NewRecorder(), r: r, snap: srv.snap.Load(), app: srv.snap.Load().apps["wiki.test"]}
		id, secret := r.Header.Get(HeaderClientID), r.Header.Get(HeaderClientSecret)
		if id == "" {
			id, secret = r.Header.Get("Cf-Access-Client-Id"), r.Header.Get("Cf-Access-Client-Secret")
		}
		ok := srv.network(q)
		if q.net.ServiceToken != "" && (!ok || id != "6f2c1a0e.access" || sha256.Sum256([]byte(secret)) != want) {
			t.Fatalf("token accepted for id %q secret %q", id, secret)
		}
		stripHeaders(r)
		for k := range r.Header {
			if strippedHeaders[normHeader(k)] {
				t.Fatalf("%q survived stripping", k)
			}
		}
	})
}

// FuzzCallbackQuery sends arbitrary callback queries and cookies: without
// a login state this gateway sealed, nothing but a refusal comes back, and
// no session cookie.
func FuzzCallbackQuery(f *testing.F) {
	srv := fuzzServer(f)
	f.Add("code=abc&state=0123456789abcdef0123", "__Host-EDGEGW_Login_0123456789abcdef=eyJhbGciOiJkaXIifQ..a.b.c")
	f.Add("error=access_denied&error_description=%0d%0a", "")
	f.Add("state=AAAAAAAAAAAAAAAA&state=B", "__Host-EDGEGW_Login_AAAAAAAAAAAAAAAA=x; __Host-EDGEGW_Authorization=y")
	f.Add("%zz&state=;", "a=b;;;=")
	f.Add("state="+strings.Repeat("x", 5000), "")
	f.Fuzz(func(t *testing.T, query, cookie string) {
		r := httptest.NewRequest(http.MethodGet, "https://wiki.test/", nil)
		r.URL.Path = PathCallback
		r.URL.RawQuery = query
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code < 400 {
			t.Fatalf("callback answered %d", w.Code)
		}
		for _, c := range w.Result().Cookies() {
			if c.Name == CookieSession && c.MaxAge >= 0 {
				t.Fatalf("a session cookie was set: %v", c)
			}
		}
	})
}

// FuzzIdPClaims reads arbitrary claim sets as a provider could send them:
// never a panic; an email only when it is a string not marked unverified,
// lower-cased; groups and custom claims only strings.
func FuzzIdPClaims(f *testing.F) {
	f.Add([]byte(`{"email":"Alice@Corp.Example","email_verified":true,"groups":["eng","ops"],"dept":"it"}`))
	f.Add([]byte(`{"email":"a@b","email_verified":"false","groups":"solo"}`))
	f.Add([]byte(`{"email":7,"groups":[1,true,null,{"a":1},[["deep"]]],"dept":[]}`))
	f.Add([]byte(`{"groups":{"not":"a list"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var claims map[string]any
		if json.Unmarshal(b, &claims) != nil {
			return
		}
		l := loginFromClaims(claims, "groups", []string{"dept", "groups"})
		if l.Email != "" {
			e, _ := claims["email"].(string)
			if l.Email != strings.ToLower(e) || claims["email_verified"] == false || claims["email_verified"] == "false" {
				t.Fatalf("email %q from %s", l.Email, b)
			}
		}
		if claims["groups"] == nil && len(l.Groups) != 0 {
			t.Fatalf("groups %q from nothing", l.Groups)
		}
		for name, v := range l.Custom {
			if name != "dept" && name != "groups" || len(v) == 0 {
				t.Fatalf("custom %s=%q", name, v)
			}
		}
	})
}
