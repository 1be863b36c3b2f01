package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
)

// Role is what a token may do: a viewer reads (GET), an admin does
// everything.
type Role string

// The roles a token can have.
const (
	RoleViewer Role = "viewer"
	RoleAdmin  Role = "admin"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleViewer || r == RoleAdmin }

// TokenPrefix starts every token, so that secret scanners and people can
// tell an edgegw admin token from other strings.
const TokenPrefix = "edgegw_"

// Token is one token as the API lists it: never its secret or hash.
type Token struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
	LastUsed  time.Time `json:"last_used"`
}

// storedToken is one entry of tokens.json.
type storedToken struct {
	Token
	// SHA256 is the hex SHA-256 of the token text. The text is 256 random
	// bits, so a plain hash is enough: there is nothing to guess.
	SHA256 string `json:"sha256"`
}

type tokenFile struct {
	Version int           `json:"version"`
	Tokens  []storedToken `json:"tokens"`
}

// Errors of the token store that the API maps to status codes.
var (
	ErrTokenExists   = errors.New("a token with that name exists")
	ErrTokenNotFound = errors.New("no token has that name")
	errBadName       = errors.New("a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
)

var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// lastUsedEvery is how stale a token's stored last-used time may get: a
// scraper using its token every 15 s does not rewrite the file each time.
const lastUsedEvery = time.Minute

// tokens is the token store: tokens.json in <state_dir>/admin, mode 0600,
// replaced atomically on every change. Only hashes are kept.
type tokens struct {
	path string
	now  func() time.Time

	mu     sync.Mutex
	list   []storedToken
	hashes [][sha256.Size]byte // parallel to list
	dirty  bool                // last-used times newer than the file
}

func openTokens(dir string, now func() time.Time) (*tokens, error) {
	t := &tokens{path: filepath.Join(dir, "tokens.json"), now: now}
	data, err := os.ReadFile(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin tokens: %w", err)
	}
	var f tokenFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("admin tokens: %s is not a token file (move it away to start with no tokens): %w", t.path, err)
	}
	for _, s := range f.Tokens {
		h, err := hex.DecodeString(s.SHA256)
		if err != nil || len(h) != sha256.Size || !tokenNameRE.MatchString(s.Name) || !s.Role.Valid() {
			return nil, fmt.Errorf("admin tokens: %s: entry %q is damaged (move the file away to start with no tokens)", t.path, s.Name)
		}
		t.list = append(t.list, s)
		t.hashes = append(t.hashes, [sha256.Size]byte(h))
	}
	return t, nil
}

// authenticate returns the token whose hash matches secret. Every stored
// hash is compared in constant time, so the answer's timing says nothing
// about which one, if any, came close.
func (t *tokens) authenticate(secret string) (Token, bool) {
	if !strings.HasPrefix(secret, TokenPrefix) || len(secret) > 256 {
		return Token{}, false
	}
	return t.check(sha256.Sum256([]byte(secret)))
}

// check returns the token whose hash is h, as authenticate does; a
// console session holds the hash of the token it was opened with and asks
// again on every request, so a revoked token ends it.
func (t *tokens) check(h [sha256.Size]byte) (Token, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	found := -1
	for i := range t.hashes {
		if subtle.ConstantTimeCompare(h[:], t.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Token{}, false
	}
	now := t.now().UTC().Truncate(time.Second)
	if now.Sub(t.list[found].LastUsed) >= lastUsedEvery {
		t.list[found].LastUsed = now
		t.dirty = true
	}
	return t.list[found].Token, true
}

// create makes a token and stores its hash; the secret is returned once
// and kept nowhere.
func (t *tokens) create(name string, role Role, by string) (Token, string, error) {
	if !tokenNameRE.MatchString(name) {
		return Token{}, "", errBadName
	}
	if !role.Valid() {
		return Token{}, "", fmt.Errorf("role %q: expected admin or viewer", role)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, "", fmt.Errorf("admin tokens: %w", err)
	}
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	h := sha256.Sum256([]byte(secret))
	t.mu.Lock()
	defer t.mu.Unlock()
	if slices.ContainsFunc(t.list, func(s storedToken) bool { return s.Name == name }) {
		return Token{}, "", fmt.Errorf("%q: %w", name, ErrTokenExists)
	}
	tok := Token{Name: name, Role: role, Created: t.now().UTC().Truncate(time.Second), CreatedBy: by}
	list := append(slices.Clip(t.list), storedToken{Token: tok, SHA256: hex.EncodeToString(h[:])})
	if err := t.write(list); err != nil {
		return Token{}, "", err
	}
	t.list = list
	t.hashes = append(slices.Clip(t.hashes), h)
	return tok, secret, nil
}

// revoke deletes a token: it fails from this moment. When the file cannot
// be written the token is still gone from the running gateway, and the
// error says it would come back at the next start.
func (t *tokens) revoke(name string) (Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := slices.IndexFunc(t.list, func(s storedToken) bool { return s.Name == name })
	if i < 0 {
		return Token{}, fmt.Errorf("%q: %w", name, ErrTokenNotFound)
	}
	old := t.list[i].Token
	t.list = slices.Delete(slices.Clone(t.list), i, i+1)
	t.hashes = slices.Delete(slices.Clone(t.hashes), i, i+1)
	if err := t.write(t.list); err != nil {
		return old, fmt.Errorf("token %q is revoked in the running gateway, but the token file could not be written, so it would be valid again after a restart: %w", name, err)
	}
	return old, nil
}

// all lists the tokens by name.
func (t *tokens) all() []Token {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Token, 0, len(t.list))
	for _, s := range t.list {
		out = append(out, s.Token)
	}
	slices.SortFunc(out, func(a, b Token) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// flush writes last-used times that moved since the file was written.
func (t *tokens) flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.dirty {
		return nil
	}
	return t.write(t.list)
}

// write replaces the file with list: a temporary file in the same
// directory, synced, renamed over the old one, the directory synced. A
// crash leaves the old file or the new one, never half of one. Called
// with mu held.
func (t *tokens) write(list []storedToken) error {
	dir := filepath.Dir(t.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("admin tokens: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("admin tokens: %w", err)
	}
	if list == nil {
		list = []storedToken{}
	}
	data, err := json.MarshalIndent(tokenFile{Version: 1, Tokens: list}, "", "  ")
	if err != nil {
		return fmt.Errorf("admin tokens: %w", err)
	}
	if err := renameio.WriteFile(t.path, append(data, '\n'), 0o600, renameio.WithStaticPermissions(0o600), renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("admin tokens: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	t.dirty = false
	return nil
}
