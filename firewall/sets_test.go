package firewall

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/firewall/rules"
)

func ivs(ps ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ps {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func fmtIntervals(rs []interval) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, formatValue(r.lo, kindAddr)+"-"+formatValue(r.hi, kindAddr))
	}
	return strings.Join(parts, " ")
}

func TestPrefixIntervals(t *testing.T) {
	for _, tc := range []struct {
		in     []netip.Prefix
		v4, v6 string
	}{
		{ivs("10.0.0.0/24", "10.0.1.0/24", "10.0.0.7/32"), "10.0.0.0-10.0.1.255", ""},
		{ivs("10.0.0.0/8", "10.1.0.0/16", "192.0.2.1/32", "2001:db8::/127"), "10.0.0.0-10.255.255.255 192.0.2.1-192.0.2.1", "2001:db8::-2001:db8::1"},
		{ivs("0.0.0.0/0", "::/0"), "0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{ivs("255.255.255.255/32", "255.255.255.254/32"), "255.255.255.254-255.255.255.255", ""},
	} {
		v4, v6 := prefixIntervals(tc.in)
		if got := fmtIntervals(v4); got != tc.v4 {
			t.Errorf("%v: v4 %q, want %q", tc.in, got, tc.v4)
		}
		if got := fmtIntervals(v6); got != tc.v6 {
			t.Errorf("%v: v6 %q, want %q", tc.in, got, tc.v6)
		}
		// Elements round-trip, with no end element past the last address.
		if back := fmtIntervals(elementIntervals(intervalElements(v4))); back != tc.v4 {
			t.Errorf("%v: elements round-trip %q, want %q", tc.in, back, tc.v4)
		}
	}
}

func TestDiffIntervals(t *testing.T) {
	a, _ := prefixIntervals(ivs("10.0.0.0/24", "10.0.2.0/24", "10.0.4.0/24"))
	b, _ := prefixIntervals(ivs("10.0.0.0/24", "10.0.3.0/24", "10.0.4.0/25"))
	del, add := diffIntervals(a, b)
	if got, want := fmtIntervals(del), "10.0.2.0-10.0.2.255 10.0.4.0-10.0.4.255"; got != want {
		t.Errorf("del %q, want %q", got, want)
	}
	if got, want := fmtIntervals(add), "10.0.3.0-10.0.4.127"; got != want { // 10.0.3.0/24 and 10.0.4.0/25 merge
		t.Errorf("add %q, want %q", got, want)
	}
}

// FuzzCompile checks that every expression the rules package accepts
// either compiles to a Program or is reported as unsupported, never a
// panic, and that the listing renders.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"tcp.dstport == 22", "not (ip.src in $l or udp.srcport in {1..9 80})",
		`ingress in {"a" "b"} xor identity.groups contains "x"`, "tcp.flags & 0x12 == 0x12 and ip.len > 9",
		"ip.dst >= 2001:db8::1 or icmp.type in {0 3 8 11 128 129}", `not not ip.proto == "gre"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		if _, err := rules.Compile(expr, rules.FirewallSchema(), (&Config{Lists: map[string][]string{"l": {"10.0.0.0/8"}}}).listResolver()); err != nil {
			return
		}
		on := true
		c := &Config{Lists: map[string][]string{"l": {"10.0.0.0/8", "fd00::/8"}},
			Rules: []Rule{{ID: "f", Expression: expr, Action: "block", Enabled: &on}}}
		rs, err := CompileRules(c)
		if err != nil {
			if !strings.Contains(err.Error(), "supported") {
				t.Fatalf("%q: %v", expr, err)
			}
			return
		}
		_ = fmt.Sprint(Compile(Spec{Rules: rs}))
	})
}
