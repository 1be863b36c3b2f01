package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const egressYAML = `
lists:
  partners: [198.51.100.0/24]
egress:
  addresses:
    - name: eu
      address: 203.0.113.1
      country: DE
      region: DE-BE
      city: Berlin
    - name: us
      address: 203.0.113.2
      interface: wan2
      prefix: 203.0.113.0/28
      country: US
      region: US-CA
    - name: us6
      address: 2001:db8:e::2
      country: US
  policies:
    - id: partners-from-us
      expression: ip.dst in $partners and tcp.dstport == 443
      egress: us
    - id: eu-staff
      expression: identity.groups contains "eu"
      egress: eu
    - id: us-staff
      expression: identity.groups contains "us" or identity.email == "carol@example.com"
      egress: us
    - id: us-staff-v6
      expression: identity.groups contains "us"
      egress: us6
    - id: lab
      expression: ip.src in {10.9.0.0/16}
      egress: us
`

func egressConfig(t testing.TB, y string) *Config {
	t.Helper()
	var c Config
	if err := yaml.Unmarshal([]byte(y), &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestCompileEgress(t *testing.T) {
	c := egressConfig(t, egressYAML)
	var errs []string
	c.Validate(func(f, m string) { errs = append(errs, f+": "+m) })
	if len(errs) > 0 {
		t.Fatalf("valid config reported: %v", errs)
	}
	eg, err := CompileEgress(c)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := CompileRules(c)
	if err != nil {
		t.Fatal(err)
	}
	out := Compile(Spec{WAN: "wan1", Rules: rs, Egress: eg}).String()
	post := out[strings.Index(out, "chain postrouting"):]
	for _, want := range []string{
		// The gateway's own packets from an egress address keep it.
		`oifname "wan1" meta nfproto ipv4 ip saddr 203.0.113.1 accept`,
		`oifname "wan2" meta nfproto ipv4 ip saddr 203.0.113.2 accept`,
		// Destination and port conditions, with the list's set.
		`oifname "wan2" meta nfproto ipv4 meta l4proto tcp ip daddr @l4_partners tcp dport 443 counter name "eg1" snat to 203.0.113.2`,
		// The identity-only policies 2 to 4 are one run: one map lookup
		// per link and family.
		`oifname "wan1" meta nfproto ipv4 snat ip to ip saddr map @egm4_0_wan1`,
		`oifname "wan2" meta nfproto ipv4 snat ip to ip saddr map @egm4_0_wan2`,
		`oifname "wan1" meta nfproto ipv6 snat ip6 to ip6 saddr map @egm6_0_wan1`,
		// A source prefix is not an identity: a rule of its own.
		`oifname "wan2" meta nfproto ipv4 ip saddr >= 10.9.0.0 ip saddr <= 10.9.255.255 counter name "eg5" snat to 203.0.113.2`,
		`oifname "wan1" counter masquerade`,
		// Other egress links masquerade what no policy chose, as the WAN does.
		`oifname "wan2" counter masquerade`,
	} {
		if !strings.Contains(post, want) {
			t.Errorf("postrouting lacks %q:\n%s", want, post)
		}
	}
	if strings.Contains(out, "eid") || strings.Contains(out, "egm6_0_wan2") {
		t.Errorf("identity sets no rule looks up, or a map of a family no policy of its link has:\n%s", out)
	}
	// The policies keep their order, before the masquerade, the local
	// sources first.
	order := []string{"accept", `"eg1"`, "@egm4_0_wan1", "@egm6_0_wan1", `"eg5"`, "masquerade"}
	for i := 1; i < len(order); i++ {
		if strings.Index(post, order[i-1]) > strings.Index(post, order[i]) {
			t.Errorf("%s comes after %s:\n%s", order[i-1], order[i], post)
		}
	}
	for _, want := range []string{
		`counter eg1 { } # egress policy "partners-from-us", connections`,
		`counter eg5 { } # egress policy "lab", connections`,
		"map egm4_0_wan1 {\n\t\ttype ipv4_addr : ipv4_addr\n\t\tflags interval\n\t\tcounter\n" +
			"\t\t# users with identity.groups contains \"eu\" → 203.0.113.1 (egress policy \"eu-staff\")\n",
		"\t\t# users with identity.groups contains \"us\" or identity.email == \"carol@example.com\" → 203.0.113.2 (egress policy \"us-staff\")\n",
		"set l4_partners ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "counter eg2 ") {
		t.Errorf("an identity-only policy has a named counter (its map's elements count):\n%s", out)
	}
	if strings.Count(out, "chain ") != 2 {
		t.Errorf("egress policies made chains of their own:\n%s", out)
	}
}

func TestEgressFor(t *testing.T) {
	eg, err := CompileEgress(egressConfig(t, egressYAML))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		src    netip.Addr
		email  string
		groups []string
		hasID  bool
		want   string // address name; "" none
		policy string
	}{
		{"eu user", a("100.96.0.2"), "alice@example.com", []string{"eu"}, true, "eu", "eu-staff"},
		{"us user", a("100.96.0.3"), "bob@example.com", []string{"us"}, true, "us", "us-staff"},
		{"by email", a("100.96.0.4"), "carol@example.com", nil, true, "us", "us-staff"},
		{"us user on IPv6", a("fd00::3"), "bob@example.com", []string{"us"}, true, "us6", "us-staff-v6"},
		{"eu user on IPv6: no IPv6 policy", a("fd00::2"), "alice@example.com", []string{"eu"}, true, "", ""},
		{"identity not given", a("100.96.0.2"), "alice@example.com", []string{"eu"}, false, "", ""},
		{"by source", a("10.9.1.1"), "", nil, false, "us", "lab"},
		{"nobody", a("10.8.1.1"), "", nil, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := eg.For(tc.src, tc.email, tc.groups, tc.hasID)
			if ok != (tc.want != "") || c.Address.Name != tc.want || c.Policy != tc.policy {
				t.Errorf("For = %+v, %v; want %q by %q", c, ok, tc.want, tc.policy)
			}
		})
	}
	as := eg.Assignments([]Identity{{Email: "alice@example.com", Groups: []string{"eu"},
		Addrs: []netip.Prefix{netip.MustParsePrefix("100.96.0.2/32")}}})
	if len(as) != 1 || as[0].Egress != "eu" || as[0].Country != "DE" || as[0].Address != a("203.0.113.1") {
		t.Errorf("Assignments = %+v", as)
	}
}

func TestEgressGeofeed(t *testing.T) {
	eg, err := CompileEgress(egressConfig(t, egressYAML))
	if err != nil {
		t.Fatal(err)
	}
	want := "# RFC 8805 geofeed of edgegw's egress addresses: ip_prefix,alpha2code,region,city,postal_code\n" +
		"203.0.113.1/32,DE,DE-BE,Berlin,\n" +
		"203.0.113.0/28,US,US-CA,,\n" +
		"2001:db8:e::2/128,US,,,\n"
	if got := string(eg.Geofeed()); got != want {
		t.Errorf("Geofeed =\n%s\nwant\n%s", got, want)
	}
}

func TestEgressValidate(t *testing.T) {
	for _, tc := range []struct {
		name, yml, want string
	}{
		{"unknown address", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  policies: [{id: p, expression: 'identity.groups contains "x"', egress: b}]`,
			`egress.policies[0].egress: "b" is not the name of an egress address (have: a)`},
		{"bad country", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: Germany}]`,
			`egress.addresses[0].country: "Germany" is not an ISO 3166-1 alpha-2 code`},
		{"region of another country", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE, region: US-CA}]`,
			`egress.addresses[0].region: "US-CA" is not a region of country DE`},
		{"prefix without the address", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE, prefix: 198.51.100.0/24}]`,
			`egress.addresses[0].prefix: 198.51.100.0/24 does not contain the address 203.0.113.1`},
		{"duplicate address", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}, {name: b, address: 203.0.113.1, country: DE}]`,
			`egress.addresses[1].address: 203.0.113.1 is already egress.addresses[0]`},
		{"not", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  policies: [{id: p, expression: 'not identity.groups contains "x"', egress: a}]`,
			`egress.policies[0].expression: egress policy "p": an egress policy is conditions joined by and/or`},
		{"unknown list", `
lists: {partners: []}
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  policies: [{id: p, expression: 'ip.dst in $partner', egress: a}]`,
			`did you mean $partners?`},
		{"alias", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  policies: [{id: p, expression: 'ingress == "lan"', egress: a}]`,
			`ingress aliases`},
		{"city with a comma", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE, city: "Berlin, Mitte"}]`,
			`egress.addresses[0].city: a city may not contain commas`},
		{"geofeed path not a path", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  geofeed_path: geofeed.csv`,
			`egress.geofeed_path: "geofeed.csv": expected a URL path such as /geofeed.csv`},
		{"geofeed path with dot segments", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  geofeed_path: /a/../geofeed.csv`,
			`egress.geofeed_path: "/a/../geofeed.csv": expected a clean URL path`},
		{"geofeed path of the API", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  geofeed_path: /api/v1/geofeed`,
			`egress.geofeed_path: "/api/v1/geofeed" is the admin listener's own`},
		{"geofeed path of the metrics", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  geofeed_path: /metrics`,
			`egress.geofeed_path: "/metrics" is the admin listener's own`},
		{"geofeed path is fine", `
egress:
  addresses: [{name: a, address: 203.0.113.1, country: DE}]
  geofeed_path: /.well-known/geofeed.csv`, ""},
		{"private address is fine", `
egress:
  addresses: [{name: a, address: 10.0.0.1, country: DE}]`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := egressConfig(t, tc.yml)
			var got []string
			c.Validate(func(f, m string) { got = append(got, f+": "+m) })
			all := strings.Join(got, "\n")
			if tc.want == "" {
				if all != "" {
					t.Errorf("unexpected errors:\n%s", all)
				}
				return
			}
			if !strings.Contains(all, tc.want) {
				t.Errorf("errors\n%s\nlack %q", all, tc.want)
			}
			if _, err := CompileEgress(c); err == nil {
				t.Error("CompileEgress accepted what Validate refuses")
			}
		})
	}
}

func TestEgressConfigEqual(t *testing.T) {
	a := egressConfig(t, egressYAML)
	b := a.Clone()
	if !a.Equal(b) {
		t.Fatal("clone differs")
	}
	b.Egress.Policies[1].Egress = "us"
	if a.Equal(b) {
		t.Error("a changed egress policy is Equal")
	}
	c := a.Clone()
	c.Egress.GeofeedPath = "/geofeed.csv"
	if a.Equal(c) || !c.Equal(c.Clone()) {
		t.Error("Equal or Clone ignores geofeed_path")
	}
	if _, only := b.ChangedLists(a); only {
		t.Error("a changed egress policy was taken for a list change")
	}
}
