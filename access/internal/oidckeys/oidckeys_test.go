package oidckeys

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []jose.JSONWebKey
}

func newJWKS(t *testing.T, keys ...jose.JSONWebKey) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func newKey(t testing.TB, kid string) (*ecdsa.PrivateKey, jose.JSONWebKey) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}
}

func sign(t testing.TB, k *ecdsa.PrivateKey, kid string) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign([]byte(`{"sub":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := obj.CompactSerialize()
	return raw
}

// TestUnknownKidBounded: tokens with made-up key ids refetch the JWKS at
// most once per MinRefetch, a kid once found missing is not asked for
// again, and a key the provider rotates in is found after MinRefetch.
func TestUnknownKidBounded(t *testing.T) {
	k1, j1 := newKey(t, "k1")
	srv := newJWKS(t, j1)
	var now atomic.Int64
	now.Store(time.Unix(1_700_000_000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ks := New(srv.URL, srv.Client(), clock)
	ctx := context.Background()
	if _, err := ks.VerifySignature(ctx, sign(t, k1, "k1")); err != nil {
		t.Fatal(err)
	}
	attacker, _ := newKey(t, "")
	for i := range 200 {
		_, err := ks.VerifySignature(ctx, sign(t, attacker, "kid-"+rand.Text()))
		if !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("token %d: %v", i, err)
		}
		// A forged token with the provider's kid never refetches.
		if _, err := ks.VerifySignature(ctx, sign(t, attacker, "k1")); err == nil || errors.Is(err, ErrUnknownKey) {
			t.Fatalf("forged with a known kid: %v", err)
		}
	}
	if got := srv.fetches.Load(); got != 1 {
		t.Fatalf("%d fetches for 400 bad tokens within MinRefetch", got)
	}
	// The provider rotates: k2 is published, then used.
	k2, j2 := newKey(t, "k2")
	srv.mu.Lock()
	srv.keys = append(srv.keys, j2)
	srv.mu.Unlock()
	if _, err := ks.VerifySignature(ctx, sign(t, k2, "k2")); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("before MinRefetch passed: %v", err)
	}
	now.Add(int64(DefaultMinRefetch))
	if _, err := ks.VerifySignature(ctx, sign(t, k2, "k2")); err != nil {
		t.Fatalf("rotated key after MinRefetch: %v", err)
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Fatalf("%d fetches", got)
	}
	// A kid found missing is refused without a fetch until UnknownTTL.
	bad := sign(t, attacker, "kid-remembered")
	now.Add(int64(DefaultMinRefetch))
	ks.VerifySignature(ctx, bad) // fetch 3, remembered as unknown
	now.Add(int64(DefaultMinRefetch))
	ks.VerifySignature(ctx, bad)
	if got := srv.fetches.Load(); got != 3 {
		t.Fatalf("a remembered unknown kid was fetched again: %d fetches", got)
	}
}

// FuzzParseJWKS: the provider's key set is network input; it must never
// panic, and only public signing keys come out.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"a","alg":"ES256","use":"sig"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA"},{"kty":"RSA","n":"","e":""},{"alg":"ES256K"},{"use":"enc"}]}`))
	f.Add([]byte(`{"keys":{}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseJWKS(b)
		if err != nil {
			return
		}
		for _, k := range keys {
			if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
				t.Fatalf("kept key %+v", k)
			}
		}
	})
}

// FuzzVerifySignature feeds arbitrary token text to a key set that holds
// one key and may not fetch: never a panic, and nothing verifies but a
// token that key signed.
func FuzzVerifySignature(f *testing.F) {
	k, j := newKey(f, "k1")
	ks := New("http://127.0.0.1:9/never", nil, nil)
	ks.keys = []jose.JSONWebKey{j}
	ks.lastFetch = time.Now().Add(time.Hour) // no refetch during the fuzz run
	good := sign(f, k, "k1")
	f.Add(good)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, raw string) {
		payload, err := ks.VerifySignature(context.Background(), raw)
		if err == nil && string(payload) != `{"sub":"x"}` {
			t.Fatalf("%q verified with payload %q", raw, payload)
		}
	})
}
