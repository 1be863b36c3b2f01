package access

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
)

// groupsStorage is the zitadel example storage with a groups claim added
// to userinfo, as a directory-backed provider would send.
type groupsStorage struct {
	*storage.Storage
}

func (s groupsStorage) SetUserinfoFromToken(ctx context.Context, ui *zoidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	ui.AppendClaims("groups", []string{"engineering", "staff"})
	return nil
}

// zitadelOP is an OpenID provider built on github.com/zitadel/oidc/v3 (its
// example OP with in-memory storage and a username/password form), on
// loopback. Clients are added with addClient before the first login.
type zitadelOP struct {
	issuer  string
	clients map[string]*storage.Client
}

const zitadelPassword = "verysecure"

func startZitadel(t *testing.T) *zitadelOP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zitadelOP{issuer: "http://" + ln.Addr().String(), clients: map[string]*storage.Client{}}
	st := groupsStorage{storage.NewStorageWithClients(storage.NewUserStore(z.issuer), z.clients)}
	router := exampleop.SetupServer(z.issuer, st, nil, false)
	srv := &http.Server{Handler: router}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return z
}

func (z *zitadelOP) addClient(id, secret string, redirects ...string) {
	z.clients[id] = storage.WebClient(id, secret, redirects...)
}

// username is the example user's login name, which the example store
// derives from the issuer's host.
func (z *zitadelOP) username() string {
	u, _ := url.Parse(z.issuer)
	return "test-user@" + u.Hostname()
}

// zitadelEnv runs edgegw in front of an echo upstream with the zitadel OP
// as its only provider. The app lets zitadel.ch addresses in when they are
// in the engineering group.
func zitadelEnv(t *testing.T) (*env, *zitadelOP) {
	dir := t.TempDir()
	z := startZitadel(t)
	up := newUpstream(t)
	secret := filepath.Join(dir, "zitadel.secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Listen: "127.0.0.1:0",
		Apps: []App{{Name: "wiki", Domain: "wiki.test", Upstream: up.URL, Policies: []policy.Policy{{
			Name: "engineering", Action: policy.Allow,
			Include: []policy.Selector{{EmailDomain: "zitadel.ch"}},
			Require: []policy.Selector{{Group: "engineering"}},
		}}}},
	}
	idp := identity.Config{Providers: []identity.Provider{{
		Name: "zitadel", Issuer: z.issuer, ClientID: "web", ClientSecretFile: secret,
		Scopes: []string{"openid", "email", "profile"},
	}}}
	e := startEnv(t, cfg, idp, dir, up)
	z.addClient("web", "secret", e.url("wiki.test", PathCallback))
	return e, z
}

// TestZitadelCodeFlow drives the whole login against a real OpenID
// provider: app → edgegw login → provider login form → callback → app,
// with the upstream seeing the verified identity.
func TestZitadelCodeFlow(t *testing.T) {
	e, z := zitadelEnv(t)
	c := e.client(true)
	resp, body := e.get(c, e.url("wiki.test", "/docs/page?q=1"))
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
		t.Fatalf("expected the provider's login form, got %d at %s", resp.StatusCode, resp.Request.URL)
	}
	formURL := resp.Request.URL
	id := formURL.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("no auth request id in %s", formURL)
	}
	post := func(password string) (*http.Response, string) {
		r, err := c.PostForm(formURL.String(), url.Values{"id": {id}, "username": {z.username()}, "password": {password}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b := new(strings.Builder)
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return r, b.String()
	}
	if r, _ := post("wrong"); r.Request.URL.Hostname() == "wiki.test" {
		t.Fatal("a wrong password logged in")
	}
	resp, body = post(zitadelPassword)
	if resp.StatusCode != 200 || resp.Request.URL.Hostname() != "wiki.test" || resp.Request.URL.RequestURI() != "/docs/page?q=1" {
		t.Fatalf("after login: %d at %s: %s", resp.StatusCode, resp.Request.URL, body)
	}
	ec := decodeEcho(t, body)
	if got := ec.Headers.Get(HeaderEmail); got != "test-user@zitadel.ch" {
		t.Fatalf("upstream saw email %q", got)
	}
	if ec.Headers.Get(HeaderAssertion) == "" {
		t.Fatal("no assertion upstream")
	}
	// get-identity shows the groups read from the provider.
	_, body = e.get(c, e.url("wiki.test", PathIdentity))
	if !strings.Contains(body, `"groups":["engineering","staff"]`) || !strings.Contains(body, `"idp":"zitadel"`) {
		t.Fatalf("identity %s", body)
	}
	// Logout, then the app asks for a login again.
	if resp := e.logout(c, "wiki.test"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	nf := e.client(false)
	nf.Jar = c.Jar
	if resp, _ := e.get(nf, e.url("wiki.test", "/")); resp.StatusCode != http.StatusFound {
		t.Fatalf("after logout %d", resp.StatusCode)
	}
}
