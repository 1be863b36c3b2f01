package wireguard

import (
	"crypto/rand"
	"net/netip"
	"testing"
)

// BenchmarkCheck10kPeers validates the configuration of a device with
// 10,000 enrolled peers, which the gateway does on every registry change.
func BenchmarkCheck10kPeers(b *testing.B) {
	c := Config{Interface: "wg0", ListenPort: 51820, Address: netip.MustParsePrefix("100.96.0.1/12")}
	a := netip.MustParseAddr("100.96.0.2")
	for range 10_000 {
		var k Key
		rand.Read(k[:])
		c.Peers = append(c.Peers, Peer{Name: "dev-" + a.String(), PublicKey: k, AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)}})
		a = a.Next()
	}
	for b.Loop() {
		if _, err := c.check(); err != nil {
			b.Fatal(err)
		}
	}
}
