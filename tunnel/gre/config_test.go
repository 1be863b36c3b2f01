//go:build linux

package gre

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConfigBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"remote equals local", func(c *Config) { c.Remote = c.Local }, "remote: 203.0.113.10 is also local"},
		{"name too long", func(c *Config) { c.Name = "branch-new-york-city" }, `name: "branch-new-york-city" is 20 characters`},
		{"not a /31", func(c *Config) { c.Address = netip.MustParsePrefix("10.200.1.0/24") }, "address: 10.200.1.0/24: a tunnel address must be on a /31 or /30"},
		{"mtu too big", func(c *Config) { c.MTU = 1500 }, "mtu: must be from 576 to 1476"},
		{"multicast remote", func(c *Config) { c.Remote = netip.MustParseAddr("224.0.0.5") }, "remote: 224.0.0.5 is not a unicast address"},
		{"IPv6 local", func(c *Config) { c.Local = netip.MustParseAddr("2001:db8::1") }, "local: expected this appliance's public IPv4 address"},
	} {
		c := cfg("branch-nyc", "203.0.113.10", "198.51.100.20", "10.200.1.0/31")
		c.SetDefaults()
		tc.mutate(&c)
		var got []string
		c.Validate(func(f, m string) { got = append(got, f+": "+m) })
		if tc.want == "" && len(got) > 0 || tc.want != "" && !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tc.want) }) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestValidateList(t *testing.T) {
	a := cfg("nyc", "203.0.113.10", "198.51.100.20", "10.200.1.0/31")
	b := cfg("nyc", "203.0.113.10", "198.51.100.20", "10.200.1.0/30")
	c := cfg("fra", "203.0.113.10", "198.51.100.20", "10.200.2.0/31")
	c.Key = u32(5)
	var got []string
	ValidateList([]Config{a, b, c}, func(f, m string) { got = append(got, f+": "+m) })
	want := []string{
		`[1].name: tunnel "nyc" is defined twice (also [0])`,
		`[1].address: tunnel "nyc": 10.200.1.0/30 overlaps tunnel "nyc"'s 10.200.1.0/31`,
		`[1].remote: tunnel "nyc": tunnel "nyc" already connects 203.0.113.10 to 198.51.100.20 with the same key; give one a key`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMetricsLint(t *testing.T) {
	tn := fakeTunnel(cfg("nyc", "203.0.113.10", "198.51.100.20", "10.200.1.0/31"))
	tn.drop(dropWrongKey)
	problems, err := testutil.CollectAndLint(tn)
	if err != nil || len(problems) > 0 {
		t.Fatalf("tunnel lint: %v %+v", err, problems)
	}
	want := `
# HELP edgegw_gre_dropped_packets_total ` + tunnelDropHelp + `
# TYPE edgegw_gre_dropped_packets_total counter
edgegw_gre_dropped_packets_total{reason="invalid_inner_packet",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="missing_sequence",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="out_of_order",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="replayed",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="send_error",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="too_many_segments",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="tun_write_error",tunnel="nyc"} 0
edgegw_gre_dropped_packets_total{reason="wrong_key",tunnel="nyc"} 1
`
	if err := testutil.CollectAndCompare(tn, strings.NewReader(want), "edgegw_gre_dropped_packets_total"); err != nil {
		t.Error(err)
	}
	ep := fakeEndpoint(tn)
	ep.local = netip.MustParseAddr("203.0.113.10")
	ep.owner.socks[ep.local] = ep
	ep.drops[dropUnknownSource].Add(2)
	problems, err = testutil.CollectAndLint(ep.owner)
	if err != nil || len(problems) > 0 {
		t.Fatalf("endpoints lint: %v %+v", err, problems)
	}
	if got := ep.owner.Drops()["203.0.113.10"]["unknown_source"]; got != 2 {
		t.Errorf("unknown_source drops %d", got)
	}
}
