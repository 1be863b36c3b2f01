package access

import (
	"bytes"
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
	File    bool // from access.signing_key_file: never rotated by the node
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
	// file is access.signing_key_file's key, nil without one. When set it
	// is the current key and the ring never makes one of its own: both
	// nodes of a pair sign with it and publish the same kid.
	file atomic.Pointer[signingKey]
}

type storedKey struct {
	ID      string    `json:"kid"`
	Alg     string    `json:"alg"`
	Created time.Time `json:"created"`
	Retired time.Time `json:"retired,omitzero"`
	File    bool      `json:"file,omitempty"`
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
		sk := &signingKey{ID: s.ID, Alg: jose.SignatureAlgorithm(s.Alg), Created: s.Created, Retired: s.Retired, File: s.File, priv: signer}
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
		stored = append(stored, storedKey{ID: sk.ID, Alg: string(sk.Alg), Created: sk.Created, Retired: sk.Retired, File: sk.File,
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
	kid, err := keyID(priv.Public())
	if err != nil {
		return nil, err
	}
	sk := &signingKey{ID: kid, Alg: alg, Created: now, priv: priv}
	return sk, sk.init()
}

// keyID derives a key's kid from its public key alone, so that two nodes
// holding the same key file publish the same kid.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("signing key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:12]), nil
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
	retireCurrent := func() {
		for i, sk := range keys {
			if sk == cur {
				c := *sk
				c.Retired = now
				keys[i] = &c
			}
		}
	}
	if fk := k.file.Load(); fk != nil {
		if force {
			return false, errFileKey
		}
		if cur == nil || cur.ID != fk.ID {
			// The admin gave a new file (or switched to one): it is current
			// from now on; the previous key stays published for the grace.
			retireCurrent()
			keys = slices.DeleteFunc(keys, func(sk *signingKey) bool { return sk.ID == fk.ID })
			nk := *fk
			nk.Created, nk.Retired = now, time.Time{}
			keys = append(keys, &nk)
			changed = true
		}
	} else if force || cur == nil || cur.File || cur.Alg != alg || now.Sub(cur.Created) >= rotation {
		// cur.File: signing_key_file was removed, so the node makes its
		// own key again rather than keep signing with the file's.
		nk, err := generateKey(alg, now)
		if err != nil {
			return false, err
		}
		retireCurrent()
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

// errFileKey refuses a forced rotation of a key the admin gave in a file.
var errFileKey = errors.New("the signing key comes from access.signing_key_file: replace that file (on both nodes of a pair) and reload instead")

// cookieKeys are the keys derived from the cookie key, swapped as a whole
// when access.cookie_key_file changes.
type cookieKeys struct {
	key     []byte  // the 32-byte cookie key they come from
	session *sealer // session cookies
	login   *sealer // login state cookies
	csrf    []byte  // logout form tokens
}

func newCookieKeys(key []byte) (*cookieKeys, error) {
	ck := &cookieKeys{key: key, csrf: deriveKey(key, "logout csrf")}
	var err error
	// One key each, so that neither kind of cookie opens as the other.
	if ck.session, err = newSealer(deriveKey(key, "session cookie")); err != nil {
		return nil, err
	}
	if ck.login, err = newSealer(deriveKey(key, "login state cookie")); err != nil {
		return nil, err
	}
	return ck, nil
}

// useKeys installs the plan's keys: the cookie key of
// access.cookie_key_file (else the state dir's) and the signing key of
// access.signing_key_file (else the node's own rotating ring). It reports
// whether a key changed, which ends cached sessions. Callers hold s.mu or
// own s alone.
func (s *Server) useKeys(p *Plan) (bool, error) {
	key := p.cookieKey
	if key == nil {
		if s.dirCookieKey == nil {
			k, err := loadCookieKey(s.dir)
			if err != nil {
				return false, err
			}
			s.dirCookieKey = k
		}
		key = s.dirCookieKey
	}
	old := s.cookies.Load()
	var ck *cookieKeys
	if old == nil || !bytes.Equal(old.key, key) {
		var err error
		if ck, err = newCookieKeys(key); err != nil {
			return false, err
		}
	}
	prevFile := s.keys.file.Swap(p.signingKey)
	cfg := p.cfg.Signing
	rotated, err := s.keys.rotate(s.now(), jose.SignatureAlgorithm(cfg.Algorithm), cfg.Rotation, cfg.Grace, false)
	if err != nil {
		s.keys.file.Store(prevFile)
		return false, err
	}
	if ck != nil {
		s.cookies.Store(ck)
	}
	return rotated || (old != nil && ck != nil), nil
}

// readKeyFiles reads access.cookie_key_file and access.signing_key_file
// into the plan, when the configuration names them.
func (p *Plan) readKeyFiles() error {
	if f := p.cfg.CookieKeyFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("access cookie_key_file: %w", err)
		}
		if p.cookieKey, err = parseCookieKey(b); err != nil {
			return fmt.Errorf("access cookie_key_file %s: %w", f, err)
		}
	}
	if f := p.cfg.SigningKeyFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("access signing_key_file: %w", err)
		}
		sk, err := parseSigningKey(b)
		if err != nil {
			return fmt.Errorf("access signing_key_file %s: %w", f, err)
		}
		if string(sk.Alg) != p.cfg.Signing.Algorithm {
			return fmt.Errorf("access signing_key_file %s holds an %s key but access.signing.algorithm is %s: set algorithm: %s", f, sk.Alg, p.cfg.Signing.Algorithm, sk.Alg)
		}
		p.signingKey = sk
	}
	return nil
}

// CookieKeySize is the length of the cookie key, in bytes.
const CookieKeySize = 32

// parseCookieKey accepts the cookie key file's two forms: the 32 raw bytes,
// or their standard base64 (44 characters, surrounding white space
// ignored), which is what `edgegw access keys` writes because it survives
// copying between the nodes as text. Anything else is refused rather than
// hashed into a key, so a truncated copy fails loudly on the node it was
// copied to.
func parseCookieKey(b []byte) ([]byte, error) {
	if len(b) == CookieKeySize {
		return bytes.Clone(b), nil
	}
	t := bytes.TrimSpace(b)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(t)))
	n, err := base64.StdEncoding.Decode(key, t)
	if err != nil || n != CookieKeySize {
		return nil, fmt.Errorf("expected %d random bytes or their base64 (44 characters), found %d bytes that are neither", CookieKeySize, len(b))
	}
	return key[:n], nil
}

// parseSigningKey reads a PEM private key: PKCS#8 ("PRIVATE KEY"), SEC 1
// ("EC PRIVATE KEY", as openssl ecparam writes it, EC PARAMETERS block
// skipped) or PKCS#1 ("RSA PRIVATE KEY"). An EC key must be on P-256
// (ES256), an RSA key at least 2048 bits (RS256). The kid comes from the
// public key.
func parseSigningKey(b []byte) (*signingKey, error) {
	var blk *pem.Block
	for rest := b; ; {
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("no PEM private key (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")
		}
		if blk.Type != "EC PARAMETERS" {
			break
		}
	}
	if _, encrypted := blk.Headers["Proc-Type"]; encrypted {
		return nil, errors.New("the PEM key is encrypted; edgegw needs it unencrypted (mode 0600)")
	}
	var priv any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	sk := &signingKey{File: true}
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("EC key on %s: expected P-256 (ES256)", k.Curve.Params().Name)
		}
		sk.Alg, sk.priv = jose.ES256, k
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits: expected at least 2048 (RS256)", k.N.BitLen())
		}
		sk.Alg, sk.priv = jose.RS256, k
	default:
		return nil, fmt.Errorf("a %T key: expected EC P-256 or RSA", priv)
	}
	if sk.ID, err = keyID(sk.priv.Public()); err != nil {
		return nil, err
	}
	return sk, sk.init()
}

// NewKeyFiles makes the contents of a pair's key files: a cookie key (the
// base64 of 32 random bytes, newline-terminated) and a signing key of alg
// (ES256 or RS256) as PKCS#8 PEM, with the kid both nodes will publish.
func NewKeyFiles(alg string) (cookie, signing []byte, kid string, err error) {
	key := make([]byte, CookieKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, "", err
	}
	cookie = []byte(base64.StdEncoding.EncodeToString(key) + "\n")
	sk, err := generateKey(jose.SignatureAlgorithm(alg), time.Time{})
	if err != nil {
		return nil, nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(sk.priv)
	if err != nil {
		return nil, nil, "", err
	}
	return cookie, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), sk.ID, nil
}
