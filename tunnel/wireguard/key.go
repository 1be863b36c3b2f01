package wireguard

import "github.com/edgegw/edgegw/tunnel/wireguard/wgconf"

// KeySize is the length of WireGuard keys in bytes.
const KeySize = wgconf.KeySize

// Key is a Curve25519 private or public key, or a preshared key
// (wgconf.Key, which clients use without this package).
type Key = wgconf.Key

// ParseKey reads a key in base64 (wgconf.ParseKey).
func ParseKey(s string) (Key, error) { return wgconf.ParseKey(s) }

// GeneratePrivateKey makes a new private key (wgconf.GeneratePrivateKey).
func GeneratePrivateKey() (Key, error) { return wgconf.GeneratePrivateKey() }

// LoadOrCreatePrivateKey reads the private key at path, or makes and
// stores one (wgconf.LoadOrCreatePrivateKey).
func LoadOrCreatePrivateKey(path string) (Key, error) { return wgconf.LoadOrCreatePrivateKey(path) }
