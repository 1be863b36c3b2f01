package access

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/renameio/v2"
)

// signingKey is one key of the ring. Retired is zero for the current key.
type signingKey struct {
	ID      string
	Alg     jose.SignatureAlgorithm
	Created time.Time
	Retired time.Time
	priv    crypto.Signer
	signer  jose.Signer
}

// keySet is an immutable view of the ring, published atomically.
type keySet struct {
	current *signingKey
	byID    map[string]*signingKey
	jwks    []byte
}

// keyring holds the assertion signing keys: the current one and the
// previous ones still inside their grace period. It persists them in the
// state dir (when there is one) so that upstreams' cached keys survive a
// restart.
type keyring struct {
	mu   sync.Mutex // serialises rotation
	set  atomic.Pointer[keySet]
	path string // "" keeps keys in memory only
}

type storedKey struct {
	ID      string    `json:"kid"`
	Alg     string    `json:"alg"`
	Created time.Time `json:"created"`
	Retired time.Time `json:"retired,omitzero"`
	PEM     string    `json:"pem"`
}

func newKeyring(dir string) (*keyring, error) {
	k := &keyring{}
	if dir == "" {
		k.set.Store(&keySet{byID: map[string]*signingKey{}})
		return k, nil
	}
	k.path = filepath.Join(dir, "signing-keys.json")
	keys, err := loadKeys(k.path)
	if err != nil {
		return nil, err
	}
	k.publish(keys)
	return k, nil
}

func loadKeys(path string) ([]*signingKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	var stored []storedKey
	if err := json.Unmarshal(b, &stored); err != nil {
		return nil, fmt.Errorf("parse signing keys %s: %w", path, err)
	}
	var keys []*signingKey
	for _, s := range stored {
		blk, _ := pem.Decode([]byte(s.PEM))
		if blk == nil {
			return nil, fmt.Errorf("signing key %s in %s: no PEM block", s.ID, path)
		}
		priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key %s in %s: %w", s.ID, path, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("signing key %s in %s: not a signing key", s.ID, path)
		}
		sk := &signingKey{ID: s.ID, Alg: jose.SignatureAlgorithm(s.Alg), Created: s.Created, Retired: s.Retired, priv: signer}
		if err := sk.init(); err != nil {
			return nil, err
		}
		keys = append(keys, sk)
	}
	return keys, nil
}

func (k *keyring) save(keys []*signingKey) error {
	if k.path == "" {
		return nil
	}
	var stored []storedKey
	for _, sk := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(sk.priv)
		if err != nil {
			return err
		}
		stored = append(stored, storedKey{ID: sk.ID, Alg: string(sk.Alg), Created: sk.Created, Retired: sk.Retired,
			PEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))})
	}
	b, err := json.MarshalIndent(stored, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(k.path, b, 0o600)
}

func (sk *signingKey) init() error {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: sk.Alg, Key: jose.JSONWebKey{Key: sk.priv, KeyID: sk.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return fmt.Errorf("signing key %s: %w", sk.ID, err)
	}
	sk.signer = s
	return nil
}

func generateKey(alg jose.SignatureAlgorithm, now time.Time) (*signingKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("unsupported signing algorithm %s", alg)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	sk := &signingKey{ID: base64.RawURLEncoding.EncodeToString(sum[:12]), Alg: alg, Created: now, priv: priv}
	return sk, sk.init()
}

// rotate makes sure there is a current key of alg younger than rotation and
// drops retired keys older than grace. It reports whether anything changed.
func (k *keyring) rotate(now time.Time, alg jose.SignatureAlgorithm, rotation, grace time.Duration, force bool) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.set.Load()
	var keys []*signingKey
	for _, sk := range old.byID {
		keys = append(keys, sk)
	}
	changed := false
	cur := old.current
	if force || cur == nil || cur.Alg != alg || now.Sub(cur.Created) >= rotation {
		nk, err := generateKey(alg, now)
		if err != nil {
			return false, err
		}
		for i, sk := range keys {
			if sk == cur {
				c := *sk
				c.Retired = now
				keys[i] = &c
			}
		}
		keys = append(keys, nk)
		changed = true
	}
	keys = slices.DeleteFunc(keys, func(sk *signingKey) bool {
		drop := !sk.Retired.IsZero() && now.Sub(sk.Retired) >= grace
		changed = changed || drop
		return drop
	})
	if !changed {
		return false, nil
	}
	if err := k.save(keys); err != nil {
		return false, fmt.Errorf("save signing keys: %w", err)
	}
	k.publish(keys)
	return true, nil
}

func (k *keyring) publish(keys []*signingKey) {
	ks := &keySet{byID: map[string]*signingKey{}}
	slices.SortFunc(keys, func(a, b *signingKey) int { return b.Created.Compare(a.Created) })
	var jwks jose.JSONWebKeySet
	for _, sk := range keys {
		ks.byID[sk.ID] = sk
		if sk.Retired.IsZero() && ks.current == nil {
			ks.current = sk
		}
		jwks.Keys = append(jwks.Keys, jose.JSONWebKey{Key: sk.priv.Public(), KeyID: sk.ID, Algorithm: string(sk.Alg), Use: "sig"})
	}
	if jwks.Keys == nil {
		jwks.Keys = []jose.JSONWebKey{}
	}
	ks.jwks, _ = json.Marshal(jwks)
	k.set.Store(ks)
}

// loadCookieKey returns the 32-byte key sealing session cookies, made and
// kept in dir when there is one.
func loadCookieKey(dir string) ([]byte, error) {
	key := make([]byte, 32)
	if dir == "" {
		_, err := rand.Read(key)
		return key, err
	}
	path := filepath.Join(dir, "cookie.key")
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == 32:
		return b, nil
	case err == nil:
		return nil, fmt.Errorf("cookie key %s: expected 32 bytes, found %d", path, len(b))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read cookie key: %w", err)
	}
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return key, writeFileAtomic(path, key, 0o600)
}

// writeFileAtomic replaces path with b through a synced temporary file
// beside it and a rename, so a crash leaves the old key or the new one.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	return renameio.WriteFile(path, b, mode, renameio.WithStaticPermissions(mode), renameio.WithTempDir(filepath.Dir(path)))
}
