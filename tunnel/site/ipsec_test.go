package site

import (
	"net/netip"
	"slices"
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
