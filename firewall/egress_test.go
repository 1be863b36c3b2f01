package firewall

import (
	"bytes"
	"fmt"
	"net"
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

// egressMapsYAML interleaves identity-only policies on two links and
// both families with one on the destination, which splits them into two
// runs, and shadows policies with earlier ones.
const egressMapsYAML = `
egress:
  addresses:
    - {name: a, address: 203.0.113.1, country: DE}
    - {name: b, address: 203.0.113.2, interface: wan2, country: US}
    - {name: c, address: 203.0.113.3, country: FR}
    - {name: a6, address: "2001:db8:e::1", country: DE}
    - {name: b6, address: "2001:db8:e::2", interface: wan2, country: US}
  policies:
    - {id: eng, expression: 'identity.groups contains "eng"', egress: a}
    - {id: carol, expression: 'identity.email == "carol@example.com"', egress: b}
    - {id: ops-or-dave, expression: 'identity.groups contains "ops" or identity.email == "dave@example.com"', egress: c}
    - {id: eng6, expression: 'identity.groups contains "eng"', egress: a6}
    - {id: partner, expression: 'ip.dst == 198.51.100.1', egress: b}
    - {id: sales-not-erin, expression: 'identity.groups contains "sales" and identity.email != "erin@example.com"', egress: b}
    - {id: sales6, expression: 'identity.groups contains "sales"', egress: b6}
    - {id: ops-again, expression: 'identity.groups contains "ops"', egress: a}
`

// lookupMap is the kernel's lookup in an interval map: the value of the
// interval holding addr, or nil.
func lookupMap(es []mapElem, addr netip.Addr) *mapElem {
	var cur *mapElem
	for i := range es {
		k, _ := netip.AddrFromSlice(es[i].key)
		if k.Compare(addr) > 0 {
			break
		}
		if es[i].end {
			cur = nil
		} else {
			cur = &es[i]
		}
	}
	return cur
}

// TestEgressMapsMatchFor checks the identity maps against the pure
// evaluator: for every identity address and every map, the map gives
// the first policy of its run, on its link and family, that the
// identity satisfies (nothing if none does), and a packet leaving by
// the link of Egress.For's choice meets no earlier map or rule that
// would take it: the maps keep the configuration's first-match order.
func TestEgressMapsMatchFor(t *testing.T) {
	eg, err := CompileEgress(egressConfig(t, egressMapsYAML))
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	ids := []Identity{
		{Email: "alice@example.com", Groups: []string{"eng"}, Addrs: []netip.Prefix{pfx("10.0.0.10/32"), pfx("fd00::10/128")}},
		{Email: "carol@example.com", Groups: []string{"eng"}, Addrs: []netip.Prefix{pfx("10.0.0.11/32")}},
		{Email: "carol2@example.com", Groups: []string{"sales"}, Addrs: []netip.Prefix{pfx("10.0.0.12/32"), pfx("fd00::12/128")}},
		{Email: "dave@example.com", Addrs: []netip.Prefix{pfx("10.0.0.13/32")}},
		{Email: "erin@example.com", Groups: []string{"sales"}, Addrs: []netip.Prefix{pfx("10.0.0.14/32")}},
		{Email: "frank@example.com", Groups: []string{"ops", "sales"}, Addrs: []netip.Prefix{pfx("10.0.1.0/29")}},
		// Inside frank's /29: the first policy either satisfies wins.
		{Email: "gina@example.com", Groups: []string{"eng"}, Addrs: []netip.Prefix{pfx("10.0.1.4/32")}},
		{Email: "nobody@example.com", Groups: []string{"none"}, Addrs: []netip.Prefix{pfx("10.0.0.20/32"), pfx("fd00::20/128")}},
	}
	p := Compile(Spec{WAN: "wan1", Egress: eg})
	type mapKey struct {
		run  int
		link string
		v6   bool
	}
	maps := map[mapKey][]mapElem{}
	byName := map[string]mapKey{}
	for i := range p.Sets {
		s := &p.Sets[i]
		if s.egressMap == nil {
			continue
		}
		var k mapKey
		var fam int
		if _, err := fmt.Sscanf(strings.ReplaceAll(s.Name, "_", " "), "egm%d %d %s", &fam, &k.run, &k.link); err != nil {
			t.Fatalf("map name %q: %v", s.Name, err)
		}
		k.v6 = fam == 6
		es := p.egressMapElements(s, ids)
		checkMapElements(t, s.Name, es)
		maps[k], byName[s.Name] = es, k
	}
	wantMaps := []string{"egm4_0_wan1", "egm4_0_wan2", "egm6_0_wan1", "egm4_1_wan2", "egm6_1_wan2", "egm4_1_wan1"}
	if len(byName) != len(wantMaps) {
		t.Errorf("maps %v, want %v", byName, wantMaps)
	}
	for _, n := range wantMaps {
		if _, ok := byName[n]; !ok {
			t.Errorf("no map %s among %v", n, byName)
		}
	}
	// Brute force, address by address: the runs as the configuration
	// orders them.
	runOf := []int{0, 0, 0, 0, -1, 1, 1, 1}
	linkOf := func(a EgressAddress) string { return ifaceOf(a, "wan1") }
	var addrs []netip.Addr
	for _, id := range ids {
		for _, pf := range id.Addrs {
			for a := pf.Masked().Addr(); pf.Contains(a); a = a.Next() {
				addrs = append(addrs, a)
			}
		}
	}
	owners := func(a netip.Addr) []Identity {
		var out []Identity
		for _, id := range ids {
			for _, pf := range id.Addrs {
				if pf.Contains(a) {
					out = append(out, id)
				}
			}
		}
		return out
	}
	for _, a := range addrs {
		for k, es := range maps {
			if k.v6 != a.Is6() {
				continue
			}
			var want *egressPolicy
		find:
			for i := range eg.policies {
				pol := &eg.policies[i]
				ad := eg.addrs[pol.egress]
				if runOf[i] != k.run || linkOf(ad) != k.link || ad.Address.Is6() != k.v6 {
					continue
				}
				for _, id := range owners(a) {
					if _, ok := (&Egress{addrs: eg.addrs, policies: []egressPolicy{*pol}}).For(a, id.Email, id.Groups, true); ok {
						want = pol
						break find
					}
				}
			}
			got := lookupMap(es, a)
			switch {
			case want == nil && got != nil:
				t.Errorf("map %v: %s → %s (%s), want no element", k, a, net.IP(got.val), got.policy)
			case want != nil && got == nil:
				t.Errorf("map %v: %s has no element, want %s", k, a, want.id)
			case want != nil && (got.policy != want.id || !bytes.Equal(got.val, eg.addrs[want.egress].Address.AsSlice())):
				t.Errorf("map %v: %s → %s (%s), want %s (%s)", k, a, net.IP(got.val), got.policy, eg.addrs[want.egress].Address, want.id)
			}
		}
		// The chain for a packet leaving by the link of For's choice:
		// earlier runs' maps on that link miss it, its own run's map
		// gives For's address. (For judges one identity: an address of
		// two is checked by the brute force above.)
		os := owners(a)
		if len(os) != 1 {
			continue
		}
		id := os[0]
		c, ok := eg.For(a, id.Email, id.Groups, true)
		if !ok {
			continue
		}
		var pos int
		for i, pol := range eg.policies {
			if pol.id == c.Policy {
				pos = i
			}
		}
		for k, es := range maps {
			if k.link != linkOf(c.Address) || k.v6 != a.Is6() || k.run > runOf[pos] {
				continue
			}
			got := lookupMap(es, a)
			if k.run < runOf[pos] && got != nil {
				t.Errorf("%s (%s): an earlier run's map %v takes it to %s", a, id.Email, k, got.policy)
			}
			if k.run == runOf[pos] && (got == nil || got.policy != c.Policy) {
				t.Errorf("%s (%s): map %v gives %v, For chose %s", a, id.Email, k, got, c.Policy)
			}
		}
	}
	// A few by hand, so the brute force is not the only witness.
	for _, tc := range []struct {
		m, addr, want string // want: policy id, "" none
	}{
		{"egm4_0_wan1", "10.0.0.10", "eng"},
		{"egm4_0_wan2", "10.0.0.11", "carol"}, // carol is in eng too, but eng's address is on wan1
		{"egm4_0_wan1", "10.0.0.11", "eng"},
		{"egm4_0_wan1", "10.0.0.13", "ops-or-dave"},
		{"egm4_0_wan1", "10.0.1.4", "eng"}, // gina, inside frank's /29
		{"egm4_0_wan1", "10.0.1.5", "ops-or-dave"},
		{"egm4_1_wan2", "10.0.0.14", ""}, // erin is excluded by name
		{"egm4_1_wan2", "10.0.0.12", "sales-not-erin"},
		{"egm4_1_wan1", "10.0.1.1", "ops-again"}, // shadowed on wan1 by ops-or-dave, in an earlier run
		{"egm6_0_wan1", "fd00::10", "eng6"},
		{"egm6_1_wan2", "fd00::12", "sales6"},
		{"egm6_0_wan1", "fd00::20", ""},
	} {
		got := lookupMap(maps[byName[tc.m]], netip.MustParseAddr(tc.addr))
		if (got == nil) != (tc.want == "") || got != nil && got.policy != tc.want {
			t.Errorf("%s %s → %v, want %q", tc.m, tc.addr, got, tc.want)
		}
	}
}

// checkMapElements checks that es is what an nft interval map accepts:
// starts in increasing order, each followed by its end (or running to
// the end of the address space), no two intervals overlapping.
func checkMapElements(t *testing.T, name string, es []mapElem) {
	t.Helper()
	var last []byte
	for i, e := range es {
		if e.end {
			if i == 0 || es[i-1].end || bytes.Compare(e.key, es[i-1].key) <= 0 {
				t.Errorf("%s: end %x at %d does not close an interval", name, e.key, i)
			}
			last = e.key
			continue
		}
		if len(e.val) == 0 || e.policy == "" {
			t.Errorf("%s: start %x has no value or policy", name, e.key)
		}
		if last != nil && bytes.Compare(e.key, last) < 0 {
			t.Errorf("%s: start %x overlaps the interval before", name, e.key)
		}
		if i > 0 && !es[i-1].end {
			t.Errorf("%s: start %x follows an open interval", name, e.key)
		}
		last = e.key
	}
}

func TestSubtractIntervals(t *testing.T) {
	iv := func(lo, hi byte) interval { return interval{[]byte{lo}, []byte{hi}} }
	for _, tc := range []struct {
		name string
		a, b []interval
		want []interval
	}{
		{"nothing to take", []interval{iv(5, 10)}, nil, []interval{iv(5, 10)}},
		{"hole", []interval{iv(5, 10)}, []interval{iv(7, 8)}, []interval{iv(5, 6), iv(9, 10)}},
		{"covered", []interval{iv(5, 10)}, []interval{iv(0, 255)}, nil},
		{"left edge", []interval{iv(5, 10)}, []interval{iv(0, 5)}, []interval{iv(6, 10)}},
		{"right edge to the end of the space", []interval{iv(5, 255)}, []interval{iv(200, 255)}, []interval{iv(5, 199)}},
		{"two holes, two intervals", []interval{iv(0, 10), iv(20, 30)}, []interval{iv(2, 3), iv(9, 21), iv(25, 25)},
			[]interval{iv(0, 1), iv(4, 8), iv(22, 24), iv(26, 30)}},
		{"disjoint", []interval{iv(5, 6)}, []interval{iv(1, 2), iv(8, 9)}, []interval{iv(5, 6)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := subtractIntervals(tc.a, tc.b)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
