package dns

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	base := func() Config {
		return Config{
			Listen:    []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")},
			Upstreams: []string{"1.1.1.1:53"},
			Lists:     map[string]List{"ads": {File: "/x"}},
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"ok", func(c *Config) {
			c.Policies = []Policy{{ID: "a", Expression: `dns.domains in $ads or dns.qtype == "AAAA"`, Action: "block"}}
		}, ""},
		{"scheme", func(c *Config) { c.Upstreams = []string{"quic://1.1.1.1:853"} }, "upstreams[0]: \"quic://1.1.1.1:853\""},
		{"unknown field", func(c *Config) {
			c.Policies = []Policy{{ID: "p1", Expression: `ip.src == 10.0.0.1`, Action: "block"}}
		}, `policies[0].expression: policy "p1": 1:1: unknown field "ip.src" (did you mean "dns.src"?)`},
		{"unknown list", func(c *Config) {
			c.Policies = []Policy{{ID: "p1", Expression: `dns.fqdn in $nope`, Action: "block"}}
		}, `unknown list $nope`},
		{"override empty", func(c *Config) {
			c.Policies = []Policy{{ID: "ov", Expression: `dns.fqdn == "a"`, Action: "override"}}
		}, `policies[0].override: policy "ov": missing`},
		{"override bad", func(c *Config) {
			c.Policies = []Policy{{ID: "ov", Expression: `dns.fqdn == "a"`, Action: "override", Override: []string{"a.example", "b.example"}}}
		}, `at most one name`},
		{"override after resolution", func(c *Config) {
			c.Policies = []Policy{{ID: "ov", Expression: `dns.resolved_ips == 10.0.0.1`, Action: "override", Override: []string{"10.0.0.2"}}}
		}, `cannot use dns.resolved_ips`},
		{"block response", func(c *Config) { c.BlockResponse = "page" }, `block_response: "page"`},
		{"max inflight", func(c *Config) { c.MaxInflight = -1 }, `max_inflight: -1 is out of range 1..1000000`},
		{"dot", func(c *Config) {
			c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:853")}, CertFile: "/c", KeyFile: "/k", IdentifiedOnly: true}
		}, ""},
		{"dot on the plain port", func(c *Config) {
			c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, CertFile: "/c", KeyFile: "/k"}
		}, `dot.listen[0]: 127.0.0.1:53 is also in listen`},
		{"dot without listen", func(c *Config) { c.DoT = &DoT{CertFile: "/c", KeyFile: "/k"} }, `dot.listen: missing`},
		{"dot without key", func(c *Config) {
			c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:853")}, CertFile: "/c"}
		}, `dot.key_file: missing`},
		{"dot with acme, no files: a self-signed fallback", func(c *Config) {
			c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:853")}, ACME: true}
		}, ""},
		{"dot without files or acme", func(c *Config) {
			c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:853")}}
		}, `dot.cert_file: missing`},
		{"dot with acme, a key and no certificate", func(c *Config) {
			c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:853")}, KeyFile: "/k", ACME: true}
		}, `dot.key_file: set without cert_file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			c.SetDefaults()
			var got []string
			c.Validate(func(f, m string) { got = append(got, f+": "+m) })
			all := strings.Join(got, "\n")
			if tc.want == "" && len(got) > 0 || tc.want != "" && !strings.Contains(all, tc.want) {
				t.Errorf("got %q, want %q", all, tc.want)
			}
		})
	}
}

func TestConfigEqualClone(t *testing.T) {
	c := Config{Upstreams: []string{"1.1.1.1:53"}, Policies: []Policy{{ID: "a", Override: []string{"10.0.0.1"}}}}
	d := c.Clone()
	if !c.Equal(d) {
		t.Error("clone differs")
	}
	d.Policies[0].Override[0] = "10.0.0.2"
	if c.Equal(d) || c.Policies[0].Override[0] != "10.0.0.1" {
		t.Error("clone shares memory")
	}
	c.DoT = &DoT{Listen: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:853")}}
	e := c.Clone()
	if !c.Equal(e) {
		t.Error("clone with dot differs")
	}
	e.DoT.Listen[0] = netip.MustParseAddrPort("10.0.0.2:853")
	if c.Equal(e) || c.DoT.Listen[0].Port() != 853 || c.DoT.Listen[0].Addr().String() != "10.0.0.1" {
		t.Error("dot clone shares memory")
	}
	e = c.Clone()
	e.DoT.IdentifiedOnly = true
	if c.Equal(e) {
		t.Error("identified_only ignored by Equal")
	}
	e = c.Clone()
	e.MaxInflight = 7
	if c.Equal(e) {
		t.Error("max_inflight ignored by Equal")
	}
}
