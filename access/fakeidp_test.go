package access

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fakeIdP is a minimal OIDC provider for attack tests: it approves every
// authorization at once and mints ID tokens through mint, which a test can
// replace to forge them. It checks PKCE S256 and the client secret like a
// real provider.
type fakeIdP struct {
	t        testing.TB
	srv      *http.Server
	ln       net.Listener
	issuer   string
	clientID string
	secret   string
	key      *rsa.PrivateKey
	kid      string

	mu      sync.Mutex
	codes   map[string]authReq
	mint    func(c map[string]any) string // nil: sign c with key
	mutate  func(c map[string]any)        // applied to the claims before minting
	claims  map[string]any                // extra claims for every token
	lastReq authReq

	jwksFetches atomic.Int64
}

type authReq struct {
	nonce, challenge, method, redirect, state string
}

func newFakeIdP(t testing.TB) *fakeIdP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startFakeIdP(t, ln)
}

func startFakeIdP(t testing.TB, ln net.Listener) *fakeIdP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIdP{
		t: t, ln: ln, issuer: "http://" + ln.Addr().String(), clientID: "edgegw-test", secret: "s3cret-s3cret-s3cret",
		key: key, kid: "idp-key-1", codes: map[string]authReq{},
		claims: map[string]any{"email": "alice@corp.example", "email_verified": true, "groups": []string{"engineering"}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", f.discovery)
	mux.HandleFunc("/keys", f.keys)
	mux.HandleFunc("/authorize", f.authorize)
	mux.HandleFunc("/token", f.token)
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fakeIdP) discovery(w http.ResponseWriter, r *http.Request) {
	json.NewEncoder(w).Encode(map[string]any{
		"issuer": f.issuer, "authorization_endpoint": f.issuer + "/authorize", "token_endpoint": f.issuer + "/token",
		"jwks_uri": f.issuer + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"code_challenge_methods_supported": []string{"S256"},
	})
}

func (f *fakeIdP) keys(w http.ResponseWriter, r *http.Request) {
	f.jwksFetches.Add(1)
	json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &f.key.PublicKey, KeyID: f.kid, Algorithm: "RS256", Use: "sig"}}})
}

func (f *fakeIdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != f.clientID || q.Get("response_type") != "code" {
		http.Error(w, "bad client", http.StatusBadRequest)
		return
	}
	code := randomString(16)
	ar := authReq{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), method: q.Get("code_challenge_method"), redirect: q.Get("redirect_uri"), state: q.Get("state")}
	f.mu.Lock()
	f.codes[code] = ar
	f.lastReq = ar
	f.mu.Unlock()
	u, _ := url.Parse(ar.redirect)
	v := url.Values{"code": {code}, "state": {ar.state}}
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (f *fakeIdP) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != f.clientID || secret != f.secret {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	ar, ok := f.codes[r.PostForm.Get("code")]
	delete(f.codes, r.PostForm.Get("code"))
	f.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !ok || ar.method != "S256" || base64.RawURLEncoding.EncodeToString(sum[:]) != ar.challenge || r.PostForm.Get("redirect_uri") != ar.redirect {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	now := time.Now()
	c := map[string]any{"iss": f.issuer, "sub": "user-1", "aud": f.clientID, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "nonce": ar.nonce}
	f.mu.Lock()
	for k, v := range f.claims {
		c[k] = v
	}
	mutate, mint := f.mutate, f.mint
	f.mu.Unlock()
	if mutate != nil {
		mutate(c)
	}
	var raw string
	if mint != nil {
		raw = mint(c)
	} else {
		raw = signJWT(f.t, f.key, f.kid, jose.RS256, c)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + randomString(8), "token_type": "Bearer", "expires_in": 300, "id_token": raw})
}

func (f *fakeIdP) set(fn func(f *fakeIdP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func signJWT(t testing.TB, key any, kid string, alg jose.SignatureAlgorithm, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// unsignedJWT builds an `alg: none` token.
func unsignedJWT(kid string, claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
	b, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(b) + "."
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
