package wireguard

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/tunnel"
)

// TestSiteHealthConfig checks a site peer's health_check: its defaults
// (type request, the peer's tunnel address as target) and what is
// refused, with the field named.
func TestSiteHealthConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(p *Peer)
		field string // "" valid
		msg   string
	}{
		{"defaults", func(p *Peer) {}, "", ""},
		{"reply", func(p *Peer) { p.HealthCheck.Type = "reply" }, "peers[1].health_check.type", "cannot cross a WireGuard tunnel"},
		{"no single address", func(p *Peer) { p.AllowedIPs = pfx("10.20.0.0/16") }, "peers[1].health_check.target", "name the peer's tunnel address"},
		{"target outside allowed_ips", func(p *Peer) { p.HealthCheck.Target = netip.MustParseAddr("10.30.0.1") },
			"peers[1].health_check.target", "is not in the peer's allowed_ips"},
		{"target in a routed prefix", func(p *Peer) { p.HealthCheck.Target = netip.MustParseAddr("10.20.0.1") }, "", ""},
		{"IPv6 target", func(p *Peer) {
			p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix("fd00::11/128"))
			p.HealthCheck.Target = netip.MustParseAddr("fd00::11")
		}, "peers[1].health_check.target", "expected an IPv4 address"},
		{"bad rate", func(p *Peer) { p.HealthCheck.Rate = "fast" }, "peers[1].health_check.rate", `"fast"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.Peers[1].HealthCheck = &tunnel.HealthCheck{}
			tc.edit(&c.Peers[1])
			c.SetDefaults()
			var got []string
			c.Validate(func(f, m string) { got = append(got, f+": "+m) })
			all := strings.Join(got, "\n")
			if tc.field == "" {
				if all != "" {
					t.Errorf("unexpected errors:\n%s", all)
				}
				return
			}
			if !strings.Contains(all, tc.field+": ") || !strings.Contains(all, tc.msg) {
				t.Errorf("errors\n%s\nlack %s: …%s…", all, tc.field, tc.msg)
			}
		})
	}
	c := validConfig()
	c.Peers[1].HealthCheck = &tunnel.HealthCheck{}
	n, err := c.check()
	if err != nil {
		t.Fatal(err)
	}
	if hc := n.Peers[1].HealthCheck; hc.Type != "request" || hc.Rate != "mid" || c.Peers[1].HealthCheck.Type != "" {
		t.Errorf("defaults %+v (the caller's config changed: %+v)", hc, c.Peers[1].HealthCheck)
	}
	if a, ok := n.healthTarget(n.Peers[1]); !ok || a != netip.MustParseAddr("100.96.0.11") {
		t.Errorf("default target %v %v", a, ok)
	}
}
