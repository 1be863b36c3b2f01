package enroll

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// sealer encrypts and authenticates the small values the browser carries
// between requests (login state, the enrollment ticket). Its key lives in
// memory only: a restart ends sign-ins in progress, which then start again.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("enroll: sealer: %w", err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("enroll: sealer: %w", err)
	}
	return &sealer{a}, nil
}

var errBadSeal = errors.New("sealed value is invalid or was made by another gateway run")

// seal encodes v as JSON, encrypts it with purpose as associated data (so
// a value sealed for one use cannot be replayed as another) and returns
// base64url text.
func (s *sealer) seal(purpose string, v any) (string, error) {
	pt, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(pt)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, pt, []byte(purpose))), nil
}

func (s *sealer) open(purpose, text string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(b) < s.aead.NonceSize() {
		return errBadSeal
	}
	n := s.aead.NonceSize()
	pt, err := s.aead.Open(nil, b[:n], b[n:], []byte(purpose))
	if err != nil {
		return errBadSeal
	}
	if err := json.Unmarshal(pt, v); err != nil {
		return fmt.Errorf("%w: %v", errBadSeal, err)
	}
	return nil
}
