package firewall

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/netlab"
	"go.yaml.in/yaml/v3"
)

// benchConfig returns n rules of the shapes seen in practice, none of which
// match the benchmark's traffic: address and port pairs, sets, and every
// tenth a rule with not (compiled to a chain).
func benchConfig(n int) *Config {
	var b strings.Builder
	b.WriteString("lists:\n  admins: [10.0.0.0/28, 2001:db8::/64]\nrules:\n")
	for i := range n {
		x, y := i/250, i%250
		var e string
		switch i % 10 {
		case 0:
			e = fmt.Sprintf("tcp.dstport == %d and not ip.src in $admins", 1000+i%60000)
		case 1, 2:
			e = fmt.Sprintf("ip.src in {172.%d.%d.0/24 198.18.%d.%d} and udp.dstport in {53 %d}", x%256, y, x%256, y, 2000+i%60000)
		case 3:
			e = fmt.Sprintf("ip.src == 2001:db8:%x::%x and tcp.dstport == %d", x, y, 1000+i%60000)
		default:
			e = fmt.Sprintf("ip.src == 172.%d.%d.1 and tcp.dstport == %d", x%256, y, 1000+i%60000)
		}
		fmt.Fprintf(&b, "  - id: rule-%d\n    expression: %q\n    action: block\n", i, e)
	}
	var c Config
	if err := yaml.Unmarshal([]byte(b.String()), &c); err != nil {
		panic(err)
	}
	return &c
}

// benchTable returns a Table that works in a fresh namespace.
func benchTable(b *testing.B) (*Table, *netlab.NS) {
	lab := netlab.NewT(b)
	ns, err := lab.NS("r")
	if err != nil {
		b.Fatal(err)
	}
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = ns.Do(tbl.Close) })
	return tbl, ns
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{200, 10000, 50000} {
		c := benchConfig(n)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := CompileRules(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkApply(b *testing.B) {
	for _, n := range []int{200, 10000, 50000} {
		rs, err := CompileRules(benchConfig(n))
		if err != nil {
			b.Fatal(err)
		}
		p := Compile(Spec{WAN: "eth0", Rules: rs})
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			tbl, ns := benchTable(b)
			for b.Loop() {
				if err := ns.Do(func() error { return tbl.Apply(p) }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// bigList returns n distinct prefixes: /32s and /24s, IPv4 and IPv6.
func bigList(n, offset int) []string {
	out := make([]string, 0, n)
	for i := offset; len(out) < n; i++ {
		switch i % 4 {
		case 0:
			out = append(out, fmt.Sprintf("100.%d.%d.0/24", 64+(i>>16)%64, (i>>8)%256))
		case 3:
			out = append(out, fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff))
		default:
			out = append(out, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())
		}
	}
	return out
}

func listConfig(items []string) *Config {
	on := true
	return &Config{
		Lists: map[string][]string{"big": items},
		Rules: []Rule{{ID: "big", Expression: "ip.src in $big", Action: "block", Enabled: &on}},
	}
}

func BenchmarkApplyList100k(b *testing.B) {
	rs, err := CompileRules(listConfig(bigList(100000, 0)))
	if err != nil {
		b.Fatal(err)
	}
	p := Compile(Spec{Rules: rs})
	tbl, ns := benchTable(b)
	for b.Loop() {
		if err := ns.Do(func() error { return tbl.Apply(p) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateList1000 changes 1,000 entries of a 100,000-entry list
// in place: each iteration adds 1,000 new entries or removes them again.
func BenchmarkUpdateList1000(b *testing.B) {
	base := bigList(100000, 0)
	rs, err := CompileRules(listConfig(base))
	if err != nil {
		b.Fatal(err)
	}
	tbl, ns := benchTable(b)
	if err := ns.Do(func() error { return tbl.Apply(Compile(Spec{Rules: rs})) }); err != nil {
		b.Fatal(err)
	}
	parse := func(items []string) []netip.Prefix {
		ps := make([]netip.Prefix, len(items))
		for i, s := range items {
			if ps[i], err = ParseListItem(s); err != nil {
				b.Fatal(err)
			}
		}
		return ps
	}
	small, large := parse(base), parse(append(base[:len(base):len(base)], bigList(1000, 1<<22)...))
	i := 0
	for b.Loop() {
		items := large
		if i%2 == 1 {
			items = small
		}
		i++
		if err := ns.Do(func() error { return tbl.UpdateList("big", items) }); err != nil {
			b.Fatal(err)
		}
	}
}
