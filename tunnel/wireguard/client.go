package wireguard

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// ClientConfig is what a stock client needs to reach the gateway
// (wgconf.ClientConfig).
type ClientConfig = wgconf.ClientConfig

// WriteClientConfig writes c as a wg-quick file (wgconf.WriteClientConfig).
func WriteClientConfig(w io.Writer, c ClientConfig) error { return wgconf.WriteClientConfig(w, c) }

// ClientConfigFor fills a ClientConfig for the static peer called name:
// its allowed IPs inside the interface prefix become its addresses (all of
// them if none is inside), the interface prefix is what it routes to the
// gateway, and its preshared key is read from its file. The caller adds
// Endpoint, GatewayPublicKey, and whatever else the client should route.
func (c *Config) ClientConfigFor(name string) (ClientConfig, error) {
	n := c.Clone()
	n.SetDefaults()
	p, ok := n.Peer(name)
	if !ok {
		return ClientConfig{}, fmt.Errorf("no wireguard peer is called %q", name)
	}
	cc := ClientConfig{Name: p.Name, MTU: n.MTU, AllowedIPs: []netip.Prefix{n.Address.Masked()}, PersistentKeepalive: p.PersistentKeepalive}
	own := n.Address.Masked()
	for _, a := range p.AllowedIPs {
		if a.Bits() >= own.Bits() && own.Contains(a.Addr()) {
			cc.Address = append(cc.Address, a)
		}
	}
	if len(cc.Address) == 0 {
		cc.Address = p.AllowedIPs
	}
	if p.PresharedKeyFile != "" {
		psk, err := wgconf.ReadKeyFile(p.PresharedKeyFile)
		if err != nil {
			return ClientConfig{}, fmt.Errorf("peer %q: preshared key: %w", name, err)
		}
		cc.PresharedKey = psk
	}
	return cc, nil
}
