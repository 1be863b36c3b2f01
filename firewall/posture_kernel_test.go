package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/edgegw/edgegw/firewall/rules"
)

// postureRules block port 443 for devices on an old kernel and port 8443
// for those whose disk is not known to be encrypted (unknown included:
// "not" of an absent field holds).
const postureRules = `
rules:
  - id: old-kernel
    expression: tcp.dstport == 443 and device.posture.os_version < "6.1"
    action: block
  - id: unencrypted
    expression: tcp.dstport == 8443 and not device.posture.disk_encrypted
    action: block
`

// TestKernelPostureSets checks that a device.posture.* condition compiles
// to an identity set that holds exactly the addresses of the devices
// whose posture satisfies it, that UpdateIdentities changes it in place
// (no rule replaced) as postures change, and that traffic follows.
func TestKernelPostureSets(t *testing.T) {
	n := newTestNet(t)
	p := n.apply(t, postureRules)
	for _, host := range []string{"10.2.0.2:443", "[fd02::2]:443", "10.2.0.2:8443"} {
		l, err := n.b.Listen("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() { // ends when the deferred Close makes Accept fail
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	before := ruleHandles(t, n, p)
	// The set of each posture condition, per family.
	setOf := func(cond string, v6 bool) *Set {
		t.Helper()
		for i := range p.Sets {
			if s := &p.Sets[i]; s.Identity != nil && s.V6 == v6 && strings.Contains(s.Identity.Source, cond) {
				return s
			}
		}
		t.Fatalf("no identity set for %s (v6 %v)", cond, v6)
		return nil
	}
	kernel := func(s *Set) []interval {
		t.Helper()
		var es []nftables.SetElement
		if err := n.r.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			es, err = c.GetSetElements(nftSet(s))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(es, func(a, b nftables.SetElement) int { return strings.Compare(string(a.Key), string(b.Key)) })
		return elementIntervals(es)
	}
	expect := func(what, cond string, addrs ...string) {
		t.Helper()
		var ps []netip.Prefix
		for _, a := range addrs {
			ps = append(ps, netip.MustParsePrefix(a))
		}
		v4, v6 := prefixIntervals(ps)
		for _, x := range []struct {
			v6   bool
			want []interval
		}{{false, v4}, {true, v6}} {
			if got := kernel(setOf(cond, x.v6)); fmtIntervals(got) != fmtIntervals(x.want) {
				t.Errorf("%s: set of %s (v6 %v) = [%s], want [%s]", what, cond, x.v6, fmtIntervals(got), fmtIntervals(x.want))
			}
		}
	}
	update := func(ids []Identity) {
		t.Helper()
		if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, want bool, addr string) {
		t.Helper()
		if got := dialOK(n, addr); got != want {
			t.Errorf("%s: tcp to %s allowed=%v, want %v", what, addr, got, want)
		}
	}
	pfx := func(s ...string) []netip.Prefix {
		var ps []netip.Prefix
		for _, x := range s {
			ps = append(ps, netip.MustParsePrefix(x))
		}
		return ps
	}
	const oldKernel, unencrypted = `device.posture.os_version < "6.1"`, "device.posture.disk_encrypted"

	// The client a (10.1.0.2, fd01::2) is a device on 5.10 with an
	// encrypted disk; 10.9.0.7 runs 6.12 with the disk unknown; 10.9.0.8
	// is a static peer (no posture); fd09::9 reports an unparsable version.
	ids := []Identity{
		{Email: "ann@corp.example", Addrs: pfx("10.1.0.2/32", "fd01::2/128"),
			Posture: rules.Posture{OS: "linux", OSVersion: "5.10.0-30-amd64", DiskEncrypted: rules.CheckYes}},
		{Email: "bob@corp.example", Addrs: pfx("10.9.0.7/32"),
			Posture: rules.Posture{OS: "linux", OSVersion: "6.12.38+deb13-amd64"}},
		{Email: "static@corp.example", Addrs: pfx("10.9.0.8/32")},
		{Email: "odd@corp.example", Addrs: pfx("fd09::9/128"),
			Posture: rules.Posture{OSVersion: "rolling", DiskEncrypted: rules.CheckNo}},
	}
	update(ids)
	expect("initial", oldKernel, "10.1.0.2/32", "fd01::2/128")
	// The block rule negates the set: an address outside it (unknown,
	// no posture) is blocked; the set holds only the encrypted.
	expect("initial", unencrypted, "10.1.0.2/32", "fd01::2/128")
	check("5.10 kernel", false, "10.2.0.2:443")
	check("5.10 kernel", false, "[fd02::2]:443")
	check("encrypted disk", true, "10.2.0.2:8443")

	// ann upgrades her kernel and loses the encryption check (unknown);
	// bob downgrades (a version compared as numbers: 6.9 < 6.10 > 6.1).
	ids[0].Posture = rules.Posture{OS: "linux", OSVersion: "6.10"}
	ids[1].Posture.OSVersion = "6.0.9"
	update(ids)
	expect("after reports", oldKernel, "10.9.0.7/32")
	expect("after reports", unencrypted)
	check("6.10 kernel", true, "10.2.0.2:443")
	check("6.10 kernel", true, "[fd02::2]:443")
	check("disk unknown", false, "10.2.0.2:8443")

	if after := ruleHandles(t, n, p); !slices.Equal(before, after) {
		t.Errorf("rule handles changed by posture updates: %v → %v", before, after)
	}
}

// TestEgressPosture: an egress policy on device.posture.* is identity-only
// (it compiles to the identity maps), and ForIdentity, which Gateway DNS
// asks for a client's egress, sees the posture the maps are filled with.
func TestEgressPosture(t *testing.T) {
	eg, err := CompileEgress(egressConfig(t, `
egress:
  addresses:
    - name: eu
      address: 203.0.113.1
      country: DE
  policies:
    - id: compliant-eu
      expression: device.posture.compliant and identity.groups contains "eu"
      egress: eu
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(eg.policies) != 1 || !eg.policies[0].identityOnly {
		t.Fatalf("the posture policy is not identity-only: %+v", eg.policies)
	}
	src := netip.MustParseAddr("100.96.0.2")
	ok := Identity{Email: "alice@example.com", Groups: []string{"eu"}, Posture: rules.Posture{Compliant: rules.CheckYes},
		Addrs: []netip.Prefix{netip.PrefixFrom(src, 32)}}
	unknown := ok
	unknown.Posture = rules.Posture{}
	for _, tc := range []struct {
		name string
		id   Identity
		want bool
	}{{"compliant", ok, true}, {"posture unknown", unknown, false}} {
		c, got := eg.ForIdentity(src, tc.id, true)
		if got != tc.want || got && c.Policy != "compliant-eu" {
			t.Errorf("%s: ForIdentity = %+v, %v; want %v", tc.name, c, got, tc.want)
		}
		if as := eg.Assignments([]Identity{tc.id}); len(as) != 1 || (as[0].Policy != "") != tc.want {
			t.Errorf("%s: Assignments = %+v", tc.name, as)
		}
	}
	if _, got := eg.For(src, "alice@example.com", []string{"eu"}, true); got {
		t.Error("For without a posture matched a posture policy")
	}
}
