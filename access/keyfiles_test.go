package access

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// writeKeyFiles writes a fresh pair of key files into dir, as
// `edgegw access keys` does, and returns their paths and the kid.
func writeKeyFiles(t testing.TB, dir, alg string) (cookie, signing, kid string) {
	t.Helper()
	cb, sb, kid, err := NewKeyFiles(alg)
	if err != nil {
		t.Fatal(err)
	}
	cookie, signing = filepath.Join(dir, "cookie.key"), filepath.Join(dir, "signing.pem")
	if err := os.WriteFile(cookie, cb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(signing, sb, 0o600); err != nil {
		t.Fatal(err)
	}
	return cookie, signing, kid
}

// pairNode runs one node of a pair: its own state dir, the shared key
// files, the shared IdP and upstream.
func pairNode(t *testing.T, f *fakeIdP, up *httptest.Server, cookie, signing string) *env {
	t.Helper()
	dir := t.TempDir()
	cfg := defaultConfig(t, up.URL, dir)
	cfg.CookieKeyFile, cfg.SigningKeyFile = cookie, signing
	return startEnv(t, cfg, idpConfig(t, f, dir), dir, up)
}

// visit asks e for host's / with the cookies of jar and no redirects
// followed: 200 means the session cookie was accepted as it is.
func visit(t *testing.T, e *env, from *http.Client, host string) (*http.Response, string) {
	t.Helper()
	c := e.client(false)
	c.Jar = from.Jar
	return e.get(c, e.url(host, "/"))
}

// jwksOf fetches e's published JWKS.
func jwksOf(t *testing.T, e *env) jose.JSONWebKeySet {
	t.Helper()
	_, body := e.get(e.client(false), e.url("wiki.test", PathCerts))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatal(err)
	}
	return set
}

// verifyAssertion checks the upstream assertion in body against set, as an
// upstream holding that JWKS would, and returns its kid.
func verifyAssertion(t *testing.T, body string, set jose.JSONWebKeySet) string {
	t.Helper()
	raw := decodeEcho(t, body).Headers.Get(HeaderAssertion)
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	kid := tok.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %s not in JWKS %v", kid, set)
	}
	var cl jwt.Claims
	if err := tok.Claims(keys[0].Key, &cl); err != nil {
		t.Fatalf("assertion does not verify against the JWKS: %v", err)
	}
	if err := cl.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{"wiki.test"}, Time: time.Now()}, time.Minute); err != nil {
		t.Fatalf("assertion claims: %v", err)
	}
	return kid
}

// TestPairSharesSessions is what an HA failover looks like to a user: a
// session cookie minted by one node is accepted as it is by the other when
// both have the same key files, and the assertions of either verify
// against either node's JWKS (same kid). A node with other files refuses
// the cookie.
func TestPairSharesSessions(t *testing.T) {
	keys := t.TempDir()
	cookie, signing, kid := writeKeyFiles(t, keys, "ES256")
	f := newFakeIdP(t)
	up := newUpstream(t)
	a := pairNode(t, f, up, cookie, signing)
	b := pairNode(t, f, up, cookie, signing)

	c := a.login("wiki.test")
	resp, bodyA := visit(t, a, c, "wiki.test")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("node A: %d", resp.StatusCode)
	}
	resp, bodyB := visit(t, b, c, "wiki.test") // "failover": same cookie, other node
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("node B refused node A's session: %d", resp.StatusCode)
	}
	setA, setB := jwksOf(t, a), jwksOf(t, b)
	for name, set := range map[string]jose.JSONWebKeySet{"A": setA, "B": setB} {
		if len(set.Keys) != 1 || set.Keys[0].KeyID != kid {
			t.Fatalf("node %s JWKS %v, want only kid %s", name, set.Keys, kid)
		}
	}
	for _, body := range []string{bodyA, bodyB} {
		for _, set := range []jose.JSONWebKeySet{setA, setB} {
			if got := verifyAssertion(t, body, set); got != kid {
				t.Fatalf("assertion kid %s, want %s", got, kid)
			}
		}
	}

	// A node with other key files: the cookie is refused (a login starts)
	// and its JWKS does not verify the pair's assertions.
	other := t.TempDir()
	oc, os_, okid := writeKeyFiles(t, other, "ES256")
	x := pairNode(t, f, up, oc, os_)
	resp, _ = visit(t, x, c, "wiki.test")
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "/authorize") && !strings.Contains(resp.Header.Get("Location"), "login") {
		t.Fatalf("node with other keys: %d Location %q, want a redirect to log in", resp.StatusCode, resp.Header.Get("Location"))
	}
	if set := jwksOf(t, x); len(set.Keys) != 1 || set.Keys[0].KeyID != okid || okid == kid || len(set.Key(kid)) != 0 {
		t.Fatalf("other node JWKS %v", set.Keys)
	}
}

// TestFileKeysReplaced: the admin replaces the signing file and reloads;
// the new key signs at once, the previous one stays published and
// accepted for the grace, and the node never rotates a file key itself.
// Removing the files goes back to the node's own keys.
func TestFileKeysReplaced(t *testing.T) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	cookie, signing, kid1 := writeKeyFiles(t, dir, "ES256")
	cfg := defaultConfig(t, up.URL, dir)
	cfg.CookieKeyFile, cfg.SigningKeyFile = cookie, signing
	e := startEnv(t, cfg, idpConfig(t, f, dir), dir, up)
	c := e.login("wiki.test")

	if err := e.srv.RotateKeys(); !errors.Is(err, errFileKey) {
		t.Fatalf("RotateKeys with a file key = %v, want errFileKey", err)
	}
	// Far past signing.rotation: still the file's key.
	sc := e.srv.snap.Load().cfg.Signing
	if changed, err := e.srv.keys.rotate(time.Now().Add(sc.Rotation*3), jose.ES256, sc.Rotation, sc.Grace, false); err != nil || changed {
		t.Fatalf("rotation of a file key: changed %v, %v", changed, err)
	}

	// A new signing file (same cookie file), then a reload.
	_, sb, kid2, err := NewKeyFiles("ES256")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(signing, sb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Set(cfg, e.idp); err != nil {
		t.Fatal(err)
	}
	if kids := jwksKids(t, e); !slices.Equal(kids, []string{kid2, kid1}) {
		t.Fatalf("after replacing the file JWKS %v, want [%s %s]", kids, kid2, kid1)
	}
	// The session signed with kid1 is still accepted and re-signed.
	resp, body := visit(t, e, c, "wiki.test")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("session of the previous key during the grace: %d", resp.StatusCode)
	}
	if got := assertionKid(t, body); got != kid2 {
		t.Fatalf("assertion kid %s, want %s", got, kid2)
	}
	// After the grace the previous key is gone.
	if _, err := e.srv.keys.rotate(time.Now().Add(sc.Grace+time.Minute), jose.ES256, sc.Rotation, sc.Grace, false); err != nil {
		t.Fatal(err)
	}
	if kids := jwksKids(t, e); !slices.Equal(kids, []string{kid2}) {
		t.Fatalf("after the grace JWKS %v", kids)
	}

	// A new cookie key ends the sessions it sealed.
	cb, _, _, err := NewKeyFiles("ES256")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cookie, cb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Set(cfg, e.idp); err != nil {
		t.Fatal(err)
	}
	if resp, _ := visit(t, e, c, "wiki.test"); resp.StatusCode != http.StatusFound {
		t.Fatalf("session sealed with the replaced cookie key: %d, want a redirect to log in", resp.StatusCode)
	}
	c = e.login("wiki.test")

	// Without the files the node makes its own key again; the file's stays
	// for the grace.
	own := cfg
	own.CookieKeyFile, own.SigningKeyFile = "", ""
	if err := e.srv.Set(own, e.idp); err != nil {
		t.Fatal(err)
	}
	kids := jwksKids(t, e)
	if len(kids) != 2 || kids[0] == kid2 || kids[1] != kid2 {
		t.Fatalf("back to the node's own keys, JWKS %v", kids)
	}
	if _, err := os.Stat(filepath.Join(dir, "access", "cookie.key")); err != nil {
		t.Fatalf("state dir cookie key: %v", err)
	}
}

func pemOf(t testing.TB, typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// TestKeyFileForms: the forms the key files are accepted in, and clear
// errors for the rest, at compile (check and reload) time.
func TestKeyFileForms(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecSEC1, _ := x509.MarshalECPrivateKey(ec)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	certPEM := pemOf(t, "CERTIFICATE", []byte{1, 2, 3})
	ecParams := []byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n")
	wantKid, _ := keyID(ec.Public())
	idp := idpConfig(t, &fakeIdP{issuer: "http://127.0.0.1:1", clientID: "x", secret: "y"}, dir)

	for name, tt := range map[string]struct {
		mod  func(c *Config)
		want string // "" : accepted
	}{
		"cookie raw 32 bytes": {func(c *Config) { c.CookieKeyFile = write("raw", raw) }, ""},
		"cookie base64 + \\n": {func(c *Config) { c.CookieKeyFile = write("b64", []byte(base64.StdEncoding.EncodeToString(raw)+"\n")) }, ""},
		"cookie too short":    {func(c *Config) { c.CookieKeyFile = write("short", raw[:16]) }, "cookie_key_file " + filepath.Join(dir, "short") + ": expected 32 random bytes or their base64"},
		"cookie base64 of 16": {func(c *Config) { c.CookieKeyFile = write("b16", []byte(base64.StdEncoding.EncodeToString(raw[:16]))) }, "expected 32 random bytes or their base64"},
		"cookie missing":      {func(c *Config) { c.CookieKeyFile = filepath.Join(dir, "nope") }, "access cookie_key_file: open"},
		"same file":           {func(c *Config) { c.CookieKeyFile = write("same", raw); c.SigningKeyFile = c.CookieKeyFile }, "access.cookie_key_file: is also signing_key_file"},
		"signing SEC 1 + params": {func(c *Config) {
			c.SigningKeyFile = write("sec1", append(ecParams, pemOf(t, "EC PRIVATE KEY", ecSEC1)...))
		}, ""},
		"signing RSA PKCS#1 RS256": {func(c *Config) {
			c.SigningKeyFile = write("rsa", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2048)))
			c.Signing.Algorithm = "RS256"
		}, ""},
		"signing RSA with ES256": {func(c *Config) {
			c.SigningKeyFile = write("rsa2", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2048)))
		}, "holds an RS256 key but access.signing.algorithm is ES256: set algorithm: RS256"},
		"signing RSA 1024": {func(c *Config) {
			c.SigningKeyFile = write("rsa1024", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa1024)))
			c.Signing.Algorithm = "RS256"
		}, "RSA key of 1024 bits: expected at least 2048"},
		"signing P-384":       {func(c *Config) { c.SigningKeyFile = write("p384", pemOf(t, "PRIVATE KEY", p384DER)) }, "EC key on P-384: expected P-256"},
		"signing certificate": {func(c *Config) { c.SigningKeyFile = write("cert", certPEM) }, `PEM block "CERTIFICATE" is not a private key`},
		"signing not PEM":     {func(c *Config) { c.SigningKeyFile = write("junk", raw) }, "no PEM private key"},
		"signing garbage DER": {func(c *Config) { c.SigningKeyFile = write("bad", pemOf(t, "PRIVATE KEY", raw)) }, "parse private key:"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := defaultConfig(t, "http://127.0.0.1:9", dir)
			tt.mod(&cfg)
			p, err := Compile(cfg, idp)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.CookieKeyFile != "" && !slices.Equal(p.cookieKey, raw) {
					t.Fatalf("cookie key %x, want %x", p.cookieKey, raw)
				}
				if strings.HasPrefix(name, "signing SEC") && p.signingKey.ID != wantKid {
					t.Fatalf("kid %s, want %s (from the public key)", p.signingKey.ID, wantKid)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v\nwant %s", err, tt.want)
			}
		})
	}
}

func FuzzParseCookieKey(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add([]byte(base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"))
	f.Add([]byte("  AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := parseCookieKey(b)
		if err == nil && len(key) != CookieKeySize {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
	})
}

func FuzzParseSigningKey(f *testing.F) {
	_, sb, _, err := NewKeyFiles("ES256")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sb)
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sk, err := parseSigningKey(b)
		if err != nil {
			return
		}
		if sk.ID == "" || sk.signer == nil || (sk.Alg != jose.ES256 && sk.Alg != jose.RS256) {
			t.Fatalf("accepted key without kid, signer or a known algorithm: %+v", sk)
		}
	})
}

// TestFileKeyRestart: a signing file replaced while the node was down
// still leaves the previous key published for the grace after the start,
// because the ring in the state dir remembers it.
func TestFileKeyRestart(t *testing.T) {
	dir := t.TempDir()
	f := &fakeIdP{issuer: "http://127.0.0.1:1", clientID: "x", secret: "y"}
	cookie, signing, kid1 := writeKeyFiles(t, dir, "ES256")
	cfg := defaultConfig(t, "http://127.0.0.1:9", dir)
	cfg.CookieKeyFile, cfg.SigningKeyFile = cookie, signing
	first, err := New(cfg, idpConfig(t, f, dir), Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ks := first.keys.set.Load(); ks.current.ID != kid1 || len(ks.byID) != 1 {
		t.Fatalf("first start: current %s, %d keys", ks.current.ID, len(ks.byID))
	}
	_, sb, kid2, err := NewKeyFiles("ES256")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(signing, sb, 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := New(cfg, idpConfig(t, f, dir), Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ks := second.keys.set.Load()
	if ks.current.ID != kid2 || ks.byID[kid1] == nil || ks.byID[kid1].Retired.IsZero() {
		t.Fatalf("after a restart with a new file: current %s, keys %v", ks.current.ID, slices.Collect(maps.Keys(ks.byID)))
	}
	if !slices.Equal(first.cookies.Load().key, second.cookies.Load().key) {
		t.Fatal("the cookie key changed across a restart with the same file")
	}
	if _, err := os.Stat(filepath.Join(dir, "access", "cookie.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a state-dir cookie key was made although cookie_key_file is set: %v", err)
	}
}

// registryLogouts is what the gateway hands Access: the device registry's
// shared logouts.
type registryLogouts struct{ r *identity.Registry }

func (x registryLogouts) Logouts() map[string]int64 { return x.r.Snapshot().Logouts() }
func (x registryLogouts) RecordLogouts(ctx context.Context, m map[string]int64, before time.Time) error {
	return x.r.RecordLogouts(ctx, m, before)
}

// openRegistry opens the device registry in dir as one appliance of a
// pair would (both nodes' registries share the store) and runs it.
func openRegistry(t *testing.T, dir string) *identity.Registry {
	t.Helper()
	r, err := identity.Open(t.Context(), identity.Options{Pool: netip.MustParsePrefix("100.96.0.0/24"), StateDir: dir, Poll: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		r.Close()
	})
	return r
}

// TestPairSharesLogouts: a logout on node A holds on node B (the pair's
// cookie is accepted by both, so a failover must not revive it), and a
// SCIM deactivation that ends sessions on B holds on A, carried by the
// registry both nodes share. A logout made while the other node's store
// is behind is in force on the node that made it at once.
func TestPairSharesLogouts(t *testing.T) {
	keys := t.TempDir()
	cookie, signing, _ := writeKeyFiles(t, keys, "ES256")
	store := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	node := func(r *identity.Registry) *env {
		dir := t.TempDir()
		cfg := defaultConfig(t, up.URL, dir)
		cfg.CookieKeyFile, cfg.SigningKeyFile = cookie, signing
		return startEnv(t, cfg, idpConfig(t, f, dir), dir, up, func(o *Options) { o.Logouts = registryLogouts{r} })
	}
	a := node(openRegistry(t, store))
	b := node(openRegistry(t, store))
	// A refusal clears the cookie from the jar it came in, so each check
	// presents a copy of the cookies kept at login, as a browser that held
	// on to them (or someone who stole them) would after a failover.
	refused := func(e *env, kept []*http.Cookie) error {
		if resp, _ := visit(t, e, jarOf(t, kept), "wiki.test"); resp.StatusCode != http.StatusFound {
			return fmt.Errorf("session accepted: %d", resp.StatusCode)
		}
		return nil
	}
	site := a.url("wiki.test", "/")

	c := a.login("wiki.test")
	kept := cookiesOf(t, c, site)
	if resp, _ := visit(t, b, jarOf(t, kept), "wiki.test"); resp.StatusCode != http.StatusOK {
		t.Fatalf("node B refused node A's session: %d", resp.StatusCode)
	}
	a.clock.Advance(time.Second) // the logout is later than the login
	if resp := a.logout(c, "wiki.test"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout on A: %d", resp.StatusCode)
	}
	if err := refused(a, kept); err != nil {
		t.Fatalf("A after its own logout: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "B refuses the session A logged out", func() error { return refused(b, kept) })

	// SCIM on B ends alice's sessions (a later login's); A follows.
	a.clock.Advance(time.Second)
	c2 := a.login("wiki.test")
	kept2 := cookiesOf(t, c2, site)
	if resp, _ := visit(t, b, jarOf(t, kept2), "wiki.test"); resp.StatusCode != http.StatusOK {
		t.Fatalf("a new login after the logout, on B: %d", resp.StatusCode)
	}
	b.clock.Advance(3 * time.Second)
	b.srv.EndSessions([]string{"alice@corp.example"})
	if err := refused(b, kept2); err != nil {
		t.Fatalf("B after ending alice's sessions: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "A refuses the session SCIM ended on B", func() error { return refused(a, kept2) })
}

// cookiesOf returns the cookies c's jar sends to u.
func cookiesOf(t *testing.T, c *http.Client, u string) []*http.Cookie {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	cs := c.Jar.Cookies(pu)
	if len(cs) == 0 {
		t.Fatal("no cookies to keep")
	}
	return cs
}

// jarOf is a client whose jar holds cookies for every *.test host.
func jarOf(t *testing.T, cs []*http.Cookie) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(&url.URL{Scheme: "https", Host: "wiki.test", Path: "/"}, cs)
	return &http.Client{Jar: jar}
}
