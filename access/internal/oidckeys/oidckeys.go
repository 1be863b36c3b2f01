// Package oidckeys is the identity providers' signing keys (their JWKS)
// for go-oidc verifiers, with the refetch on an unknown key id bounded.
//
// go-oidc's RemoteKeySet fetches the provider's JWKS again whenever a
// token names a key id it does not hold, which is what the spec asks for
// key rotation, but it means that anyone who can post a token (the
// enrollment API, a login callback) makes the gateway call the provider
// once per token just by writing a random "kid". KeySet refetches at most
// once per MinRefetch whatever the tokens say, and remembers key ids the
// provider did not have (a bounded negative cache), so a flood of tokens
// with made-up key ids costs the provider nothing after the first fetch.
package oidckeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// Defaults for KeySet.
const (
	// DefaultMinRefetch is the shortest time between two fetches of the
	// JWKS caused by tokens with unknown key ids. A provider that rotates
	// keys publishes the new one before signing with it, so a user whose
	// token names it waits at most this long.
	DefaultMinRefetch = 10 * time.Second
	// DefaultUnknownTTL is how long a key id the provider did not have is
	// refused without asking again.
	DefaultUnknownTTL = 5 * time.Minute
	maxUnknown        = 4096
	maxJWKS           = 1 << 20
)

// Algorithms are the signature algorithms KeySet accepts: go-oidc's
// asymmetric ones. A verifier narrows them to what the provider announced.
var Algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// ErrUnknownKey is a token signed with a key id the provider's JWKS does
// not have (now, or at the last allowed fetch).
var ErrUnknownKey = errors.New("the token's key id is not in the provider's key set")

// KeySet implements oidc.KeySet for one provider's jwks_uri.
type KeySet struct {
	url    string
	client *http.Client
	now    func() time.Time

	// MinRefetch and UnknownTTL may be set before first use; zero means
	// the defaults.
	MinRefetch time.Duration
	UnknownTTL time.Duration

	fetches atomic.Int64

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	lastFetch time.Time     // when the last fetch started
	inflight  chan struct{} // closed when the running fetch ends; nil when none runs
	fetchErr  error         // the last fetch's error
	unknown   map[string]time.Time
}

// New returns a key set fetching url with client (nil: http.DefaultClient)
// and now as its clock (nil: time.Now).
func New(url string, client *http.Client, now func() time.Time) *KeySet {
	if client == nil {
		client = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	return &KeySet{url: url, client: client, now: now, unknown: map[string]time.Time{}}
}

// ForProvider returns a KeySet for a discovered provider and the signing
// algorithms it announced that go-oidc supports (nil: the verifier's
// default, RS256), ready for oidc.NewVerifier.
func ForProvider(p *oidc.Provider, client *http.Client, now func() time.Time) (*KeySet, []string, error) {
	var meta struct {
		JWKS string   `json:"jwks_uri"`
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, nil, fmt.Errorf("provider metadata: %w", err)
	}
	if meta.JWKS == "" {
		return nil, nil, errors.New("provider metadata has no jwks_uri")
	}
	var algs []string
	for _, a := range meta.Algs {
		for _, ok := range Algorithms {
			if a == string(ok) {
				algs = append(algs, a)
			}
		}
	}
	return New(meta.JWKS, client, now), algs, nil
}

// Fetches is how many times the JWKS was fetched.
func (k *KeySet) Fetches() int64 { return k.fetches.Load() }

func (k *KeySet) minRefetch() time.Duration {
	if k.MinRefetch > 0 {
		return k.MinRefetch
	}
	return DefaultMinRefetch
}

func (k *KeySet) unknownTTL() time.Duration {
	if k.UnknownTTL > 0 {
		return k.UnknownTTL
	}
	return DefaultUnknownTTL
}

// VerifySignature implements oidc.KeySet: it checks the token's signature
// with the provider's key named by its kid (or, without a kid, with any of
// them) and returns the payload.
func (k *KeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, Algorithms)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%d signatures; expected one", len(jws.Signatures))
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.Lock()
	keys, fetched := k.keys, !k.lastFetch.IsZero()
	k.mu.Unlock()
	if fetched {
		if payload, known, err := verifyWith(jws, keys, kid); known || err == nil {
			// A key with this id exists: a bad signature is just bad, and
			// fetching again would not change that.
			return payload, err
		}
	}
	if err := k.refetch(ctx, kid); err != nil {
		return nil, err
	}
	k.mu.Lock()
	keys = k.keys
	k.mu.Unlock()
	payload, known, err := verifyWith(jws, keys, kid)
	if !known && kid != "" {
		k.mu.Lock()
		if len(k.unknown) >= maxUnknown {
			clear(k.unknown) // bounded: at worst one more fetch per MinRefetch
		}
		k.unknown[kid] = k.now().Add(k.unknownTTL())
		k.mu.Unlock()
	}
	return payload, err
}

// verifyWith tries the keys that match kid (all of them when kid is
// empty); known reports whether any key matched the kid.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) (payload []byte, known bool, err error) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		known = kid != ""
		if p, err := jws.Verify(&keys[i]); err == nil {
			return p, true, nil
		}
	}
	if kid != "" && !known {
		return nil, false, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
	}
	return nil, known, errors.New("failed to verify id token signature")
}

// refetch fetches the JWKS for a token whose kid the cached keys lack,
// unless that kid was refused recently or the last fetch is too recent.
// Concurrent callers share one fetch.
func (k *KeySet) refetch(ctx context.Context, kid string) error {
	k.mu.Lock()
	now := k.now()
	if until, ok := k.unknown[kid]; ok && kid != "" {
		if now.Before(until) {
			k.mu.Unlock()
			return fmt.Errorf("%w: kid %q (not in the key set fetched recently)", ErrUnknownKey, kid)
		}
		delete(k.unknown, kid)
	}
	ch := k.inflight
	if ch == nil {
		if !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.minRefetch() {
			err := k.fetchErr
			k.mu.Unlock()
			if err != nil {
				return fmt.Errorf("fetching keys: %w", err)
			}
			return fmt.Errorf("%w: kid %q (key set fetched less than %s ago)", ErrUnknownKey, kid, k.minRefetch())
		}
		ch = make(chan struct{})
		k.inflight = ch
		k.lastFetch = now
		k.mu.Unlock()
		// This caller fetches for everyone waiting; the fetch does not
		// end when this caller gives up, so the others are not failed by
		// it (30 s bound it).
		k.fetch(context.WithoutCancel(ctx), ch)
	} else {
		k.mu.Unlock()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fetchErr != nil {
		return fmt.Errorf("fetching keys: %w", k.fetchErr)
	}
	return nil
}

// fetch gets the JWKS and publishes it, then closes done.
func (k *KeySet) fetch(ctx context.Context, done chan struct{}) {
	keys, err := k.get(ctx)
	k.mu.Lock()
	k.fetchErr = err
	if err == nil {
		k.keys = keys
	}
	k.inflight = nil
	k.mu.Unlock()
	close(done)
}

func (k *KeySet) get(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.fetches.Add(1)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", k.url, resp.Status)
	}
	if len(body) > maxJWKS {
		return nil, fmt.Errorf("%s: key set larger than %d bytes", k.url, maxJWKS)
	}
	return ParseJWKS(body)
}

// ParseJWKS reads a JWKS document, skipping keys of algorithms or types
// go-jose does not support rather than refusing the whole set, as go-oidc
// does. The document comes from the provider over the network: it is
// untrusted input.
func ParseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("parse key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, b := range raw.Keys {
		var meta struct {
			Alg string `json:"alg"`
			Use string `json:"use"`
		}
		if json.Unmarshal(b, &meta) != nil {
			continue
		}
		if meta.Use != "" && meta.Use != "sig" {
			continue
		}
		if meta.Alg != "" && !supported(meta.Alg) {
			continue
		}
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(b, &jwk); err != nil || !jwk.Valid() || !jwk.IsPublic() {
			continue
		}
		keys = append(keys, jwk)
	}
	return keys, nil
}

func supported(alg string) bool {
	for _, a := range Algorithms {
		if string(a) == alg {
			return true
		}
	}
	return false
}
