package access

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Token types, as in the `type` claim.
const (
	tokenApp     = "app"
	tokenService = "service"
)

// tokenClaims is the app token: the JWT sent upstream as the assertion and,
// sealed, the session cookie. Custom carries the claims that claim
// selectors read, frozen at login.
type tokenClaims struct {
	jwt.Claims
	Type       string              `json:"type"`
	Email      string              `json:"email,omitempty"`
	Groups     []string            `json:"groups,omitempty"`
	IdP        string              `json:"idp,omitempty"`
	Custom     map[string][]string `json:"custom,omitempty"`
	CommonName string              `json:"common_name,omitempty"`
	Country    string              `json:"country,omitempty"`
	// AuthMillis is the login time in ms, compared against logouts.
	AuthMillis int64 `json:"auth_ms,omitempty"`
}

// tokenLeeway tolerates clock skew between edgegw instances sharing keys.
const tokenLeeway = 30 * time.Second

var errBadToken = errors.New("invalid token")

// sign makes a compact JWS with the current key.
func (ks *keySet) sign(c *tokenClaims) (string, error) {
	if ks.current == nil {
		return "", errors.New("no signing key")
	}
	return jwt.Signed(ks.current.signer).Claims(c).Serialize()
}

// verify checks a compact JWS made by sign: an allowed algorithm, a known
// kid whose key matches the algorithm, the signature, iss, aud, exp, nbf.
func (ks *keySet) verify(raw, issuer, audience string, now time.Time) (*tokenClaims, string, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", errBadToken, err)
	}
	if len(tok.Headers) != 1 {
		return nil, "", fmt.Errorf("%w: %d signatures", errBadToken, len(tok.Headers))
	}
	h := tok.Headers[0]
	sk := ks.byID[h.KeyID]
	if sk == nil {
		return nil, "", fmt.Errorf("%w: unknown kid %q", errBadToken, h.KeyID)
	}
	if h.Algorithm != string(sk.Alg) {
		return nil, "", fmt.Errorf("%w: alg %s for a %s key", errBadToken, h.Algorithm, sk.Alg)
	}
	var c tokenClaims
	if err := tok.Claims(sk.priv.Public(), &c); err != nil {
		return nil, "", fmt.Errorf("%w: %v", errBadToken, err)
	}
	if c.Expiry == nil || c.IssuedAt == nil {
		return nil, "", fmt.Errorf("%w: exp and iat are required", errBadToken)
	}
	exp := jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: now}
	if err := c.ValidateWithLeeway(exp, tokenLeeway); err != nil {
		return nil, "", fmt.Errorf("%w: %v", errBadToken, err)
	}
	return &c, h.KeyID, nil
}

// sealer encrypts session cookies: JWE, direct AES-256-GCM, around the
// signed app token. Encryption hides the identity from the browser;
// the signature inside is what is trusted.
type sealer struct {
	kid string
	key []byte
	enc jose.Encrypter
}

// deriveKey makes a key for one purpose from the cookie key.
func deriveKey(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

func newSealer(key []byte) (*sealer, error) {
	sum := sha256.Sum256(key)
	kid := fmt.Sprintf("c%x", sum[:4])
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.DIRECT, Key: key, KeyID: kid},
		(&jose.EncrypterOptions{}).WithContentType("JWT"))
	if err != nil {
		return nil, err
	}
	return &sealer{kid: kid, key: key, enc: enc}, nil
}

func (s *sealer) seal(b []byte) (string, error) {
	obj, err := s.enc.Encrypt(b)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

func (s *sealer) open(v string) ([]byte, error) {
	obj, err := jose.ParseEncryptedCompact(v, []jose.KeyAlgorithm{jose.DIRECT}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadToken, err)
	}
	if obj.Header.KeyID != s.kid {
		return nil, fmt.Errorf("%w: unknown cookie key %q", errBadToken, obj.Header.KeyID)
	}
	b, err := obj.Decrypt(s.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadToken, err)
	}
	return b, nil
}

// revocations remembers logouts: a user's tokens issued before the logout
// are refused on every app. Entries outlive the longest session, then go.
type revocations struct {
	mu sync.RWMutex
	m  map[string]int64 // idp + "\x00" + sub -> logout time in ms
}

func userKey(idp, sub string) string { return idp + "\x00" + sub }

func (r *revocations) revoke(key string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]int64{}
	}
	r.m[key] = at.UnixMilli()
}

func (r *revocations) revoked(key string, authMillis int64) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.m[key]
	return ok && authMillis <= t
}

func (r *revocations) expire(before time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.m {
		if t < before.UnixMilli() {
			delete(r.m, k)
		}
	}
}

// sessionCache maps a cookie to its verified token, so the hot path does
// one map lookup instead of a decryption and a signature check. It is
// dropped whole when it grows too large or the keys change.
type sessionCache struct {
	mu sync.RWMutex
	m  map[string]*cachedSession // by cookie value
}

type cachedSession struct {
	claims *tokenClaims
	raw    string // the signed token, sent upstream
	kid    string
	app    string
}

const sessionCacheSize = 20000

func (c *sessionCache) get(cookie, app string) *cachedSession {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s := c.m[cookie]; s != nil && s.app == app {
		return s
	}
	return nil
}

func (c *sessionCache) put(cookie string, s *cachedSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= sessionCacheSize {
		c.m = map[string]*cachedSession{}
	}
	c.m[cookie] = s
}

func (c *sessionCache) reset() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
