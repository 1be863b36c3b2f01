package wireguard

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

// PeerConfigOptions are the inputs of `edgegw peer config`.
type PeerConfigOptions struct {
	Peer           string   // name of a static peer in the configuration
	Endpoint       string   // HOST:PORT where clients reach the gateway
	PrivateKeyFile string   // the peer's private key; empty writes a placeholder
	AllowedIPs     []string // override of the routed prefixes
	DNS            []string
}

// WritePeerConfig writes a wg-quick configuration for static peer o.Peer
// of wg, whose gateway key lives in stateDir unless wg names its file.
// Unless o.AllowedIPs is given, the client routes office through the
// tunnel: the office, not the whole internet.
func WritePeerConfig(w io.Writer, wg *Config, stateDir string, office []netip.Prefix, o PeerConfigOptions) error {
	peer, ok := wg.Peer(o.Peer)
	if !ok {
		var names []string
		for _, p := range wg.Peers {
			names = append(names, p.Name)
		}
		return fmt.Errorf("no static peer named %q (peers: %s)", o.Peer, strings.Join(names, ", "))
	}
	cc, err := wg.ClientConfigFor(o.Peer)
	if err != nil {
		return err
	}
	gwKey, err := LoadOrCreatePrivateKey(wg.PrivateKeyPath(stateDir))
	if err != nil {
		return fmt.Errorf("the gateway's key: %w", err)
	}
	cc.GatewayPublicKey = gwKey.PublicKey()
	cc.Endpoint = o.Endpoint
	if cc.PersistentKeepalive == 0 {
		cc.PersistentKeepalive = 25 * time.Second // remote users are usually behind NAT
	}
	if o.PrivateKeyFile != "" {
		b, err := os.ReadFile(o.PrivateKeyFile)
		if err != nil {
			return fmt.Errorf("peer private key: %w", err)
		}
		k, err := ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("peer private key %s: %w", o.PrivateKeyFile, err)
		}
		if k.PublicKey() != peer.PublicKey {
			return fmt.Errorf("the key in %s is not the private half of peer %q's public key %s", o.PrivateKeyFile, peer.Name, peer.PublicKey)
		}
		cc.PrivateKey = k
	}
	if len(o.AllowedIPs) > 0 {
		for _, s := range o.AllowedIPs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("--allowed-ips: %w", err)
			}
			cc.AllowedIPs = append(cc.AllowedIPs, p.Masked())
		}
	} else {
		cc.AllowedIPs = office
	}
	for _, s := range o.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--dns: %w", err)
		}
		cc.DNS = append(cc.DNS, a)
	}
	return WriteClientConfig(w, cc)
}
