package gateway

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// PeerConfigOptions are the inputs of `edgegw peer config`.
type PeerConfigOptions struct {
	Peer           string   // name of a static peer in the configuration
	Endpoint       string   // HOST:PORT where clients reach the gateway
	PrivateKeyFile string   // the peer's private key; empty writes a placeholder
	AllowedIPs     []string // override of the routed prefixes
	DNS            []string
}

// WritePeerConfig writes a wg-quick configuration for a static peer. Unless
// given, the client routes the tunnel network, the networks of the LAN
// interfaces (read from this host's kernel) and every configured route
// prefix through the tunnel: the office, not the whole internet.
func WritePeerConfig(w io.Writer, cfg *config.Config, o PeerConfigOptions) error {
	wg := cfg.Tunnels.WireGuard
	if wg == nil {
		return fmt.Errorf("the configuration has no tunnels.wireguard section")
	}
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
	gwKey, err := wireguard.LoadOrCreatePrivateKey(wg.PrivateKeyPath(cfg.Appliance.StateDir))
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
		k, err := wireguard.ParseKey(strings.TrimSpace(string(b)))
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
		cc.AllowedIPs = officePrefixes(cfg)
	}
	for _, s := range o.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--dns: %w", err)
		}
		cc.DNS = append(cc.DNS, a)
	}
	return wireguard.WriteClientConfig(w, cc)
}

// officePrefixes is what a remote user reaches through the tunnel.
func officePrefixes(cfg *config.Config) []netip.Prefix {
	ps := []netip.Prefix{cfg.Tunnels.WireGuard.Address.Masked()}
	for _, name := range cfg.Interfaces.LAN {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue // not on this host (the config may be for another box)
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range addrs {
			if p, ok := netipPrefix(a); ok && p.Addr().IsGlobalUnicast() {
				ps = append(ps, p.Masked())
			}
		}
	}
	for _, r := range cfg.Routes {
		ps = append(ps, r.Prefix)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return slices.Compact(ps)
}

func netipPrefix(a netlink.Addr) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}
