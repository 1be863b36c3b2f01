package wgconf

import (
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/curve25519"
)

// x25519LowOrder is the definition lowOrder implements by table: X25519
// with a clamped scalar gives all zeros exactly for points of small order.
func x25519LowOrder(k Key) bool {
	scalar := Key{1}
	_, err := curve25519.X25519(scalar[:], k[:])
	return err != nil
}

func TestLowOrder(t *testing.T) {
	var keys []Key
	for _, p := range smallOrder {
		hi := p
		hi[31] |= 0x80 // X25519 ignores the top bit
		keys = append(keys, p, hi)
		if !x25519LowOrder(p) || !x25519LowOrder(hi) {
			t.Errorf("%x is in the table but X25519 accepts it", p)
		}
	}
	// Neighbours of the table's entries and random keys, which must agree
	// with X25519 too.
	for _, p := range smallOrder {
		for _, d := range []byte{1, 2, 0x80} {
			q := p
			q[0] ^= d
			keys = append(keys, q)
		}
	}
	for range 2000 {
		var k Key
		rand.Read(k[:])
		keys = append(keys, k)
	}
	for _, k := range keys {
		if got, want := k.LowOrder(), x25519LowOrder(k); got != want {
			t.Errorf("lowOrder(%x) = %v, X25519 says %v", k, got, want)
		}
	}
}
