package firewall

import (
	"testing"

	"github.com/edgegw/edgegw/firewall/rules"
)

// TestAliasMatch checks the pure evaluator's view of ingress aliases: the
// same mapping the kernel gets in the sets if_wan and if_lan.
func TestAliasMatch(t *testing.T) {
	on := true
	c := &Config{Rules: []Rule{
		{ID: "wan-ssh", Expression: `ingress == "wan" and tcp.dstport == 22`, Action: "block", Enabled: &on},
		{ID: "not-lan-dns", Expression: `ingress != "lan" and udp.dstport == 53`, Action: "block", Enabled: &on},
		{ID: "lan-or-wg", Expression: `ingress in {"lan" "wg0"}`, Action: "allow", Enabled: &on},
		{ID: "literal", Expression: `ingress == "eth0"`, Action: "rate_limit", Rate: Rate{Packets: 5, Unit: "second"}, Enabled: &on},
	}}
	rs, err := CompileRules(c)
	if err != nil {
		t.Fatal(err)
	}
	spec := &Spec{WAN: "eth0", LAN: []string{"eth1", "eth2"}, Rules: rs}
	pkt := func(ingress string, proto string, port uint64) *rules.Record {
		r := rules.NewRecord(rules.FirewallSchema())
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(r.Set("ingress", rules.StringValue(ingress)))
		if proto != "" {
			must(r.Set(proto+".dstport", rules.IntValue(port)))
		}
		return r
	}
	for _, tc := range []struct {
		spec    *Spec
		pkt     *rules.Record
		want    string // rule id; "" for no match
		comment string
	}{
		{spec, pkt("eth0", "tcp", 22), "wan-ssh", "WAN interface is wan"},
		{spec, pkt("wan", "tcp", 22), "wan-ssh", "an interface literally named wan"},
		{spec, pkt("eth1", "tcp", 22), "lan-or-wg", "a LAN interface is not wan"},
		{spec, pkt("eth0", "udp", 53), "not-lan-dns", "WAN is not lan"},
		{spec, pkt("eth2", "udp", 53), "lan-or-wg", "second LAN interface"},
		{spec, pkt("lan", "udp", 53), "lan-or-wg", "literal lan"},
		{spec, pkt("wg0", "udp", 53), "not-lan-dns", "a tunnel is not lan"},
		{spec, pkt("wg0", "udp", 54), "lan-or-wg", "literal in a set with an alias"},
		{spec, pkt("eth0", "udp", 54), "literal", "the literal name still matches"},
		{spec, pkt("eth9", "udp", 54), "", "no rule"},
		{&Spec{Rules: rs}, pkt("eth0", "tcp", 22), "literal", "no WAN configured"},
		{&Spec{Rules: rs}, pkt("eth1", "udp", 53), "not-lan-dns", "no LAN configured"},
		{&Spec{WAN: "eth0"}, pkt("eth0", "tcp", 22), "", "no rules"},
	} {
		got, ok := tc.spec.Match(tc.pkt)
		if !ok {
			got.ID = ""
		}
		if got.ID != tc.want {
			t.Errorf("%s: %s matched %q, want %q", tc.comment, tc.pkt, got.ID, tc.want)
		}
	}
	// Absent ingress: != is false, as for any absent field.
	r := rules.NewRecord(rules.FirewallSchema())
	_ = r.Set("udp.dstport", rules.IntValue(53))
	if got, ok := spec.Match(r); ok {
		t.Errorf("no ingress: matched %q, want none", got.ID)
	}
}

func TestByPosition(t *testing.T) {
	on, off := true, false
	rs, err := CompileRules(&Config{Rules: []Rule{
		{ID: "a", Expression: "tcp.dstport == 1", Action: "block", Enabled: &on},
		{ID: "b", Expression: "tcp.dstport == 2", Action: "block", Enabled: &off},
		{ID: "c", Expression: "tcp.dstport == 3", Action: "allow", Enabled: &on},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{0: "", 1: "a", 2: "", 3: "c", 4: ""} {
		got, ok := rs.ByPosition(n)
		if !ok {
			got.ID = ""
		}
		if got.ID != want {
			t.Errorf("ByPosition(%d) = %q, want %q", n, got.ID, want)
		}
	}
}
