package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v4/api"
)

func validConfig() Config {
	return Config{
		ASN: 65000, RouterID: netip.MustParseAddr("203.0.113.10"),
		Announce: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.11.0.0/16")},
		Neighbors: []Neighbor{
			{Name: "branch1", Address: netip.MustParseAddr("10.200.1.1"), RemoteAS: 65020, Tunnel: "gre1"},
			{Name: "isp1", Address: netip.MustParseAddr("203.0.113.1"), RemoteAS: 64500,
				Export: []ExportRule{{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}, Communities: []string{"64500:80"}}}},
		},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // "field: substring"; none for a valid config
	}{
		{"valid", func(*Config) {}, nil},
		{"no asn", func(c *Config) { c.ASN = 0 }, []string{"asn: 0 is not a usable AS number"}},
		{"as_trans", func(c *Config) { c.ASN = 23456 }, []string{"asn: 23456"}},
		{"router id", func(c *Config) { c.RouterID = netip.Addr{} }, []string{"router_id: expected an IPv4 address"}},
		{"listen port", func(c *Config) { c.ListenPort = 70000 }, []string{"listen_port: must be from 1 to 65535"}},
		{"no listen", func(c *Config) { c.ListenPort = -1 }, nil},
		{"announce host bits", func(c *Config) { c.Announce[0] = netip.MustParsePrefix("10.10.0.1/16") },
			[]string{"announce[0]: 10.10.0.1/16 has host bits set", "neighbors[1].export[0].prefixes[0]: 10.10.0.0/16 is not in announce"}},
		{"announce v6", func(c *Config) { c.Announce = append(c.Announce, netip.MustParsePrefix("2001:db8::/32")) },
			[]string{"announce[2]: 2001:db8::/32: only IPv4 unicast"}},
		{"announce twice", func(c *Config) { c.Announce = append(c.Announce, c.Announce[0]) }, []string{"announce[2]: 10.10.0.0/16 is announced twice"}},
		{"duplicate name", func(c *Config) { c.Neighbors[1].Name = "branch1" }, []string{`neighbors[1].name: "branch1" is also neighbors[0]`}},
		{"duplicate address", func(c *Config) { c.Neighbors[1].Address = c.Neighbors[0].Address }, []string{"neighbors[1].address: 10.200.1.1 is also neighbors[0]"}},
		{"ibgp", func(c *Config) { c.Neighbors[0].RemoteAS = 65000 }, []string{"neighbors[0].remote_as: 65000 is edgegw's own AS"}},
		{"no remote as", func(c *Config) { c.Neighbors[0].RemoteAS = 0 }, []string{"neighbors[0].remote_as: missing"}},
		{"bad address", func(c *Config) { c.Neighbors[0].Address = netip.MustParseAddr("127.0.0.1") }, []string{"neighbors[0].address: 127.0.0.1 is not a unicast"}},
		{"bad tunnel name", func(c *Config) { c.Neighbors[0].Tunnel = "a tunnel" }, []string{"neighbors[0].tunnel:"}},
		{"hold time", func(c *Config) { c.Neighbors[0].HoldTime = 2 }, []string{"neighbors[0].hold_time: must be from 3"}},
		{"max length", func(c *Config) {
			c.Neighbors[0].Import.Prefixes = []PrefixRange{{Prefix: netip.MustParsePrefix("10.20.0.0/16"), MaxLength: 8}}
		}, []string{"neighbors[0].import.prefixes[0].max_length: must be from the prefix's length (16) to 32"}},
		{"community", func(c *Config) { c.Neighbors[1].Export[0].Communities = []string{"64500:70000"} },
			[]string{"neighbors[1].export[0].communities[0]: community \"64500:70000\": the value half"}},
		{"large community", func(c *Config) { c.Neighbors[1].Export[0].LargeCommunities = []string{"1:2"} },
			[]string{"neighbors[1].export[0].large_communities[0]: large community \"1:2\": expected ASN:x:y"}},
		{"prepend", func(c *Config) { c.Neighbors[1].Export[0].Prepend = 11 }, []string{"neighbors[1].export[0].prepend: must be from 0 to 10"}},
		{"export not announced", func(c *Config) {
			c.Neighbors[1].Export[0].Prefixes = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}, []string{"neighbors[1].export[0].prefixes[0]: 192.0.2.0/24 is not in announce (10.10.0.0/16, 10.11.0.0/16)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			c.SetDefaults()
			var got []string
			c.Validate(func(f, msg string) { got = append(got, f+": "+msg) })
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors %q, want %d like %q", len(got), got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) && !strings.Contains(got[i], w) {
					t.Errorf("error %d: %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := validConfig()
	c.SetDefaults()
	n := c.Neighbors[0]
	if c.ListenPort != 179 || n.Priority != 100 || n.HoldTime != 90 || n.Import.MaxPrefixes != 1000 || n.Import.AllowDefault {
		t.Errorf("defaults: listen %d, neighbor %+v", c.ListenPort, n)
	}
}

func TestCheckTunnels(t *testing.T) {
	c := validConfig()
	var got []string
	CheckTunnels(func(f, msg string) { got = append(got, f+": "+msg) }, &c, []string{"gre2", "ipsec1"})
	want := []string{`neighbors[0].tunnel: no GRE or IPsec tunnel is named "gre1" (tunnels: gre2, ipsec1)`}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestImportAccepts(t *testing.T) {
	ranged := ImportPolicy{Prefixes: []PrefixRange{
		{Prefix: netip.MustParsePrefix("10.20.0.0/16"), MaxLength: 24},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24")},
	}}
	tests := []struct {
		p      ImportPolicy
		prefix string
		want   bool
	}{
		{ImportPolicy{}, "10.1.0.0/16", true},
		{ImportPolicy{}, "0.0.0.0/0", false},
		{ImportPolicy{AllowDefault: true}, "0.0.0.0/0", true},
		{ranged, "10.20.0.0/16", true},
		{ranged, "10.20.7.0/24", true},
		{ranged, "10.20.7.128/25", false}, // longer than max_length
		{ranged, "10.0.0.0/8", false},     // shorter than the range
		{ranged, "10.21.0.0/24", false},
		{ranged, "192.0.2.0/24", true},
		{ranged, "192.0.2.0/25", false}, // max_length defaults to the prefix's own
		{ranged, "0.0.0.0/0", false},
	}
	for _, tt := range tests {
		if got := tt.p.Accepts(netip.MustParsePrefix(tt.prefix)); got != tt.want {
			t.Errorf("%+v accepts %s: %v, want %v", tt.p, tt.prefix, got, tt.want)
		}
	}
}

func TestParseCommunity(t *testing.T) {
	for s, want := range map[string]uint32{
		"64500:80": 64500<<16 | 80, "0:0": 0, "65535:65535": 0xffffffff,
		"no-export": 0xFFFFFF01, "NO-ADVERTISE": 0xFFFFFF02, "graceful-shutdown": 0xFFFF0000, "blackhole": 0xFFFF029A,
	} {
		if got, err := ParseCommunity(s); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %#x, %v; want %#x", s, got, err, want)
		}
	}
	for _, s := range []string{"", "64500", "64500:", ":80", "65536:1", "1:65536", "-1:1", "+1:1", "a:b", "1:2:3"} {
		if _, err := ParseCommunity(s); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", s)
		}
	}
	if l, err := ParseLargeCommunity("4200000000:1:80"); err != nil || l != (LargeCommunity{4200000000, 1, 80}) || l.String() != "4200000000:1:80" {
		t.Errorf("ParseLargeCommunity: %v %v", l, err)
	}
	for _, s := range []string{"", "1:2", "1:2:3:4", "4294967296:1:1", "a:1:1", "1::1"} {
		if _, err := ParseLargeCommunity(s); err == nil {
			t.Errorf("ParseLargeCommunity(%q) accepted", s)
		}
	}
}

// FuzzParseCommunity: the parsers never panic, and what they accept
// prints back to a value they read the same way.
func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{"64500:80", "no-export", "1:2:3", "4294967295:0:4294967295", ":", "::", "65536:0", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := ParseCommunity(s); err == nil {
			again, err := ParseCommunity(fmt.Sprintf("%d:%d", v>>16, v&0xffff))
			if err != nil || again != v {
				t.Fatalf("%q → %#x does not round-trip: %#x %v", s, v, again, err)
			}
		}
		if l, err := ParseLargeCommunity(s); err == nil {
			again, err := ParseLargeCommunity(l.String())
			if err != nil || again != l {
				t.Fatalf("%q → %v does not round-trip: %v %v", s, l, again, err)
			}
		}
	})
}

// TestExportPolicy checks the compiled policy: one statement per rule,
// matching its neighbor, its prefixes exactly and local routes only; the
// implicit rule of a neighbor without rules; rejection by default.
func TestExportPolicy(t *testing.T) {
	c := validConfig()
	c.Neighbors[1].Export = append(c.Neighbors[1].Export, ExportRule{
		Prefixes: []netip.Prefix{netip.MustParsePrefix("10.11.0.0/16")}, LargeCommunities: []string{"64500:1:80"},
		Communities: []string{"no-export"}, Prepend: 3})
	req := exportPolicy(&c)
	if len(req.Policies) != 1 || len(req.Policies[0].Statements) != 3 {
		t.Fatalf("policies: %v", req.Policies)
	}
	sets := map[string]*api.DefinedSet{}
	for _, d := range req.DefinedSets {
		sets[d.Name] = d
	}
	st := req.Policies[0].Statements
	// branch1: no rules, every announced prefix, no attributes.
	if ps := sets[st[0].Conditions.PrefixSet.Name].Prefixes; len(ps) != 2 || st[0].Actions.Community != nil || st[0].Actions.AsPrepend != nil {
		t.Errorf("branch1's implicit rule: %v, %v", ps, st[0].Actions)
	}
	if l := sets[st[0].Conditions.NeighborSet.Name].List; !slices.Equal(l, []string{"10.200.1.1/32"}) {
		t.Errorf("branch1's neighbor set: %v", l)
	}
	for _, s := range st {
		if s.Conditions.RouteType != api.Conditions_ROUTE_TYPE_LOCAL || s.Actions.RouteAction != api.RouteAction_ROUTE_ACTION_ACCEPT {
			t.Errorf("%s: route type %v, action %v", s.Name, s.Conditions.RouteType, s.Actions.RouteAction)
		}
	}
	p := sets[st[1].Conditions.PrefixSet.Name].Prefixes
	if len(p) != 1 || p[0].IpPrefix != "10.10.0.0/16" || p[0].MaskLengthMin != 16 || p[0].MaskLengthMax != 16 {
		t.Errorf("isp1 rule 0 prefixes: %v", p)
	}
	if got := st[1].Actions.Community.GetCommunities(); !slices.Equal(got, []string{"64500:80"}) {
		t.Errorf("isp1 rule 0 communities: %v", got)
	}
	a := st[2].Actions
	if !slices.Equal(a.Community.GetCommunities(), []string{"65535:65281"}) || !slices.Equal(a.LargeCommunity.GetCommunities(), []string{"64500:1:80"}) ||
		a.AsPrepend.GetAsn() != 65000 || a.AsPrepend.GetRepeat() != 3 {
		t.Errorf("isp1 rule 1 actions: %v", a)
	}
	var export *api.PolicyAssignment
	for _, as := range req.Assignments {
		if as.Direction == api.PolicyDirection_POLICY_DIRECTION_EXPORT {
			export = as
		}
	}
	if export == nil || export.DefaultAction != api.RouteAction_ROUTE_ACTION_REJECT || export.Name != "global" {
		t.Errorf("export assignment: %v", export)
	}
}

// TestWantGuards: the guarded ranges are the import ranges of neighbors on
// tunnels, once each, masked and sorted; a WAN neighbor's are not.
func TestWantGuards(t *testing.T) {
	rng := func(p string) PrefixRange { return PrefixRange{Prefix: netip.MustParsePrefix(p), MaxLength: 24} }
	c := Config{Neighbors: []Neighbor{
		{Tunnel: "gre1", Import: ImportPolicy{Prefixes: []PrefixRange{rng("10.30.0.0/16"), rng("10.20.0.0/16")}}},
		{Tunnel: "gre2", Import: ImportPolicy{Prefixes: []PrefixRange{rng("10.20.0.0/16")}}},
		{Import: ImportPolicy{Prefixes: []PrefixRange{rng("192.0.2.0/24")}}},
		{Tunnel: "gre3"}, // anything: no range to guard
	}}
	want := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("10.30.0.0/16")}
	if got := wantGuards(&c); !slices.Equal(got, want) {
		t.Errorf("guards %v, want %v", got, want)
	}
}
