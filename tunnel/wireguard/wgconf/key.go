// Package wgconf is WireGuard's keys and wg-quick files, with no
// WireGuard implementation behind them: what a client such as `edgegw
// enroll` needs to make a key and write its configuration, without
// linking wireguard-go or netlink.
package wgconf

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeySize is the length of WireGuard keys in bytes.
const KeySize = 32

// Key is a Curve25519 private or public key, or a preshared key. Its text
// form is standard base64 with padding (44 characters), as `wg genkey`,
// `wg pubkey` and wg-quick files write it.
type Key [KeySize]byte

// ParseKey decodes the base64 text form of a key.
func ParseKey(s string) (Key, error) {
	var k Key
	if s == "" {
		return k, errors.New("empty key: expected 44 characters of base64 as `wg genkey` writes")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != KeySize {
		return k, fmt.Errorf("%q is not a WireGuard key: expected 44 characters of base64 encoding 32 bytes, as `wg genkey` writes", abbreviate(s))
	}
	copy(k[:], b)
	return k, nil
}

// abbreviate keeps error messages about a mistyped key short; the value may
// be a private key pasted into the wrong field, so it is not echoed whole.
func abbreviate(s string) string {
	if len(s) > 12 {
		return s[:6] + "…" + s[len(s)-4:]
	}
	return s
}

// String returns the base64 form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText returns the base64 form, so keys appear as strings in JSON.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses the base64 form.
func (k *Key) UnmarshalText(text []byte) error {
	v, err := ParseKey(string(text))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// IsZero reports whether k is all zeros, the value of an unset key.
func (k Key) IsZero() bool { return k == Key{} }

// hex is the form wireguard-go's configuration protocol uses.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

func ParseHex(s string) (Key, error) {
	var k Key
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return k, fmt.Errorf("bad hex key %q", abbreviate(s))
	}
	copy(k[:], b)
	return k, nil
}

// PublicKey derives the public key of the private key k.
func (k Key) PublicKey() Key {
	var pub Key
	// X25519 clamps the scalar itself and cannot fail with the base point.
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		panic("wireguard: X25519 with the base point failed: " + err.Error())
	}
	copy(pub[:], p)
	return pub
}

// lowOrder reports whether the public key k is one of the Curve25519 points
// of small order, with which no handshake can ever succeed (X25519 with any
// clamped scalar gives all zeros). It compares against the list of their
// encodings, as libsodium does, instead of computing X25519: a 10,000-peer
// configuration is checked in microseconds instead of seconds. The top bit
// is ignored, as X25519 ignores it. TestLowOrder checks the list against
// X25519 itself.
func (k Key) LowOrder() bool {
	k[31] &= 0x7f
	for _, p := range &smallOrder {
		if k == p {
			return true
		}
	}
	return false
}

// smallOrder are the encodings (top bit clear) of the points of order 1, 2,
// 4 and 8: 0, 1, the two points of order 8, and p-1, p, p+1.
var smallOrder = [...]Key{
	{},
	{1},
	{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
		0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
	{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
		0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
	fieldOffset(0xec), // p-1
	fieldOffset(0xed), // p
	fieldOffset(0xee), // p+1
}

// fieldOffset is 2^255 - 256 + low: p-1, p and p+1 for 0xec, 0xed, 0xee.
func fieldOffset(low byte) Key {
	var k Key
	for i := range k {
		k[i] = 0xff
	}
	k[0], k[31] = low, 0x7f
	return k
}

// GeneratePrivateKey returns a new private key from crypto/rand, clamped as
// Curve25519 requires (what `wg genkey` does).
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate private key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// LoadOrCreatePrivateKey reads the private key stored at path, or, when
// there is no such file, generates one and stores it there (base64 and a
// newline, mode 0600, in a directory created with mode 0700). It refuses a
// key file that group or others may access.
func LoadOrCreatePrivateKey(path string) (Key, error) {
	k, err := ReadKeyFile(path)
	if err == nil {
		if k.IsZero() {
			return k, fmt.Errorf("private key %s is all zeros", path)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err = GeneratePrivateKey()
	if err != nil {
		return k, err
	}
	if err := writeKeyFile(path, k); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Someone else created it between our read and write: use theirs.
			return ReadKeyFile(path)
		}
		return Key{}, err
	}
	return k, nil
}

// ReadKeyFile reads a key in base64 from a file only its owner may access.
// Surrounding white space (the newline `wg genkey >file` leaves) is ignored.
func ReadKeyFile(path string) (Key, error) {
	var k Key
	f, err := os.Open(path)
	if err != nil {
		return k, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return k, fmt.Errorf("read key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return k, fmt.Errorf("key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return k, fmt.Errorf("key file %s is accessible by group or others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	if err != nil {
		return k, fmt.Errorf("read key %s: %w", path, err)
	}
	k, err = ParseKey(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return k, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// writeKeyFile stores k at path without ever leaving a partial file there:
// it writes a temporary file in the same directory, syncs it and links it
// into place, which fails with fs.ErrExist if path appeared meanwhile.
func writeKeyFile(path string, k Key) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(k.String() + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
