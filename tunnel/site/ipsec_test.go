package site

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

func TestCheckIPsecRoutes(t *testing.T) {
	r := func(p, via string, prio int) tunnel.Route {
		return tunnel.Route{Prefix: netip.MustParsePrefix(p), Via: via, Priority: prio}
	}
	routes := []tunnel.Route{
		r("10.20.0.0/16", "fra", 100), r("10.20.0.0/16", "gre1", 200), // GRE backup: fine
		r("10.30.0.0/16", "fra", 100), r("10.30.0.0/16", "ams", 200), // two IPsec tunnels: not
		r("10.30.5.0/24", "ams", 100), // more specific through another: fine
	}
	var got []string
	CheckIPsecRoutes(func(f, m string) { got = append(got, f+": "+m) }, routes, []string{"fra", "ams"})
	want := []string{`[3].via: route 10.30.0.0/16: IPsec tunnels "fra" and "ams" cannot both carry the same prefix (with userspace ESP the prefix selects the tunnel); use a GRE tunnel as the backup`}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestIPsecTunnelsSelectors(t *testing.T) {
	c := ipsec.Config{Name: "fra", Address: netip.MustParsePrefix("10.200.3.0/31")}
	cfg := Config{IPsec: []ipsec.Config{c}, Routes: []tunnel.Route{
		{Prefix: netip.MustParsePrefix("10.30.0.0/16"), Via: "fra"},
		{Prefix: netip.MustParsePrefix("10.20.0.0/16"), Via: "gre1"},
		{Prefix: netip.MustParsePrefix("10.30.0.0/16"), Via: "fra", Priority: 300},
	}}
	ts := ipsecTunnels(cfg)
	if len(ts) != 1 || !slices.Equal(ts[0].RemoteTS(), []netip.Prefix{netip.MustParsePrefix("10.200.3.1/32"), netip.MustParsePrefix("10.30.0.0/16")}) {
		t.Errorf("selectors %v", ts[0].RemoteTS())
	}
}

// TestCheckWideIPsec: with userspace ESP, a second BGP-carrying IPsec
// tunnel is refused, as is a prefix that may be routed through the wide
// tunnel but lies inside another IPsec tunnel's selectors; prefixes that
// only contain them, and GRE tunnels' routes, are fine.
func TestCheckWideIPsec(t *testing.T) {
	pfx := netip.MustParsePrefix
	tun := func(name, addr string) ipsec.Config { return ipsec.Config{Name: name, Address: pfx(addr)} }
	r := func(p, via string) tunnel.Route { return tunnel.Route{Prefix: pfx(p), Via: via} }
	base := Config{
		IPsec:  []ipsec.Config{tun("fra", "10.200.3.0/31"), tun("ams", "10.200.4.0/31")},
		Routes: []tunnel.Route{r("10.30.0.0/16", "ams"), r("10.40.0.0/16", "gre1")},
		Wide:   []string{"fra"},
	}
	cases := []struct {
		name   string
		cfg    func(Config) Config
		ranges map[string][]WideRange
		want   []string
	}{
		{name: "disjoint ranges", ranges: map[string][]WideRange{"fra": {
			{Prefix: pfx("10.20.0.0/16"), MaxLength: 24, Source: "bgp.neighbors[0].import.prefixes[0]"},
			{Prefix: pfx("10.0.0.0/8"), Source: "bgp.neighbors[0].import.prefixes[1]"},                  // holds 10.30/16: the longer route wins, fine
			{Prefix: pfx("10.40.0.0/16"), MaxLength: 24, Source: "bgp.neighbors[0].import.prefixes[2]"}, // a GRE tunnel's prefix: fine
		}}},
		{name: "inside another tunnel's routed prefix", ranges: map[string][]WideRange{"fra": {
			{Prefix: pfx("10.0.0.0/8"), MaxLength: 24, Source: "bgp.neighbors[0].import.prefixes[0]"},
		}}, want: []string{`bgp.neighbors[0].import.prefixes[0]: 10.0.0.0/8 (up to /24) may be routed through IPsec tunnel "fra", ` +
			`which carries BGP, but it lies inside 10.30.0.0/16, a traffic selector of IPsec tunnel "ams": with userspace ESP ` +
			`(no kernel ESP here) its packets would leave through "ams"; narrow it so that it stays outside 10.30.0.0/16`}},
		{name: "any prefix accepted", ranges: map[string][]WideRange{"fra": {
			{Prefix: pfx("0.0.0.0/0"), MaxLength: 32, Source: "bgp.neighbors[0].import"},
		}}, want: []string{
			`bgp.neighbors[0].import: 0.0.0.0/0 (up to /32) may be routed through IPsec tunnel "fra", which carries BGP, but it lies inside ` +
				`10.200.4.1/32, a traffic selector of IPsec tunnel "ams": with userspace ESP (no kernel ESP here) its packets would leave ` +
				`through "ams"; narrow it so that it stays outside 10.200.4.1/32`,
			`bgp.neighbors[0].import: 0.0.0.0/0 (up to /32) may be routed through IPsec tunnel "fra", which carries BGP, but it lies inside ` +
				`10.30.0.0/16, a traffic selector of IPsec tunnel "ams": with userspace ESP (no kernel ESP here) its packets would leave ` +
				`through "ams"; narrow it so that it stays outside 10.30.0.0/16`,
		}},
		{name: "configured route through the wide tunnel", cfg: func(c Config) Config {
			c.Routes = append(c.Routes, r("10.30.1.0/24", "fra"))
			return c
		}, want: []string{`routes[2]: 10.30.1.0/24 may be routed through IPsec tunnel "fra", which carries BGP, but it lies inside ` +
			`10.30.0.0/16, a traffic selector of IPsec tunnel "ams": with userspace ESP (no kernel ESP here) its packets would leave ` +
			`through "ams"; narrow it so that it stays outside 10.30.0.0/16`}},
		{name: "two wide tunnels", cfg: func(c Config) Config {
			c.Wide = []string{"fra", "ams"}
			return c
		}, want: []string{`tunnels.ipsec[1].name: IPsec tunnels "fra" and "ams" both carry BGP: this machine has no kernel ESP ` +
			`(esp4, xfrm_interface), and with userspace ESP every IPsec tunnel shares one device, where both would negotiate ` +
			`0.0.0.0/0 and charon, not the routes, would pick the tunnel for every prefix; run the second session over a GRE ` +
			`tunnel, or on a kernel with ESP`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.Routes = slices.Clone(base.Routes)
			if c.cfg != nil {
				cfg = c.cfg(cfg)
			}
			var got []string
			CheckWideIPsec(func(f, m string) { got = append(got, f+": "+m) }, cfg, c.ranges)
			if !slices.Equal(got, c.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
	// The wide tunnel's selectors are any-to-any, whatever is routed.
	for _, ts := range ipsecTunnels(base) {
		if ts.Name == "fra" && (!ts.Wide || !slices.Equal(ts.RemoteTS(), []netip.Prefix{pfx("0.0.0.0/0")})) {
			t.Errorf("fra: wide %v, selectors %v", ts.Wide, ts.RemoteTS())
		}
	}
}
