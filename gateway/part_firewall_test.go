package gateway

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/ipsec"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestTunnelSources checks what the firewall's anti-spoofing stage is told
// each tunnel owns, and where identities and strict reverse-path filtering
// apply.
func TestTunnelSources(t *testing.T) {
	pfx := netip.MustParsePrefix
	ipsecIf := "ipsec*"
	if ipsec.DefaultBackend() == ipsec.BackendKernel {
		ipsecIf = "branch-x"
	}
	wg := &config.WireGuard{Config: wireguard.Config{Interface: "wg0", Address: pfx("100.96.0.1/12"),
		Peers: []wireguard.Peer{{Name: "alice", AllowedIPs: []netip.Prefix{pfx("100.96.0.10/32")}},
			{Name: "router", AllowedIPs: []netip.Prefix{pfx("10.50.0.0/24"), pfx("0.0.0.0/0")}}}}}
	site := config.Tunnels{
		GRE:   []gre.Config{{Name: "branch-a", Address: pfx("10.200.1.0/31")}},
		IPsec: []ipsec.Config{{Name: "branch-x", Address: pfx("10.200.2.0/31")}},
	}
	routes := []tunnel.Route{{Prefix: pfx("10.20.0.0/16"), Via: "branch-a"},
		{Prefix: pfx("10.30.0.0/16"), Via: "branch-x"}, {Prefix: pfx("10.20.0.0/16"), Via: "branch-x"}}
	for _, tc := range []struct {
		name              string
		cfg               config.Config
		sources, identity string
		strict            string
	}{
		{"nothing", config.Config{Interfaces: config.Interfaces{LAN: []string{"eth1"}}}, "", "-", "eth1 eth0"},
		{"wireguard", config.Config{Tunnels: config.Tunnels{WireGuard: wg}, Interfaces: config.Interfaces{LAN: []string{"eth1", "eth2"}}},
			// The WireGuard prefix is given masked; 0.0.0.0/0 is passed on
			// (the firewall ignores it: no one owns every address).
			"wg0=[100.96.0.0/12 100.96.0.10/32 10.50.0.0/24 0.0.0.0/0]", "wg0", "wg0 eth1 eth2 eth0"},
		{"site to site", config.Config{Tunnels: site, Routes: routes},
			fmt.Sprintf("branch-a=[10.200.1.0/31 10.20.0.0/16] %s=[10.200.2.0/31 10.30.0.0/16 10.20.0.0/16]", ipsecIf), "-", "eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range tunnelSources(&tc.cfg) {
				got = append(got, fmt.Sprintf("%s=%v", s.Interface, s.Prefixes))
			}
			if g := strings.Join(got, " "); g != tc.sources {
				t.Errorf("tunnel sources:\n got  %s\n want %s", g, tc.sources)
			}
			if g := identityInterface(&tc.cfg); g != tc.identity {
				t.Errorf("identity interface %q, want %q", g, tc.identity)
			}
			if g := strings.Join(strictRPInterfaces(&tc.cfg, "eth0"), " "); g != tc.strict {
				t.Errorf("strict rp_filter on %q, want %q", g, tc.strict)
			}
		})
	}
}
