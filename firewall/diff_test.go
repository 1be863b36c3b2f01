package firewall

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// The differential test: random rules and random packets; what the kernel
// does to each packet routed through r must be what the pure evaluator
// (rules.Program.Eval, first match wins) says.

var (
	diffSrc4 = []string{"10.98.0.1", "10.98.0.2", "10.98.0.3", "10.98.0.9", "10.98.1.7"}
	diffDst4 = []string{"10.99.0.1", "10.99.0.2", "10.99.3.4"}
	diffSrc6 = []string{"fd98::1", "fd98::2", "fd98::9", "fd98::1:1"}
	diffDst6 = []string{"fd99::1", "fd99::2", "fd99::3:4"}
	ports    = []uint16{22, 53, 80, 443, 1000, 1005, 5353, 8080}
	diffIDs  = map[string]Identity{
		"10.98.0.1": {Email: "alice@corp.example", Groups: []string{"eng"}},
		"10.98.0.2": {Email: "bob@corp.example", Groups: []string{"eng", "ops"}},
		"fd98::1":   {Email: "carol@corp.example", Groups: []string{"ops"}},
		"fd98::2":   {Email: "dave@corp.example"},
	}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// genCond returns a random condition over the packet pools.
func genCond(r *rand.Rand) string {
	port := func() uint16 { return pick(r, ports) }
	portField := func() string {
		return pick(r, []string{"tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport"})
	}
	addrField := func() string { return pick(r, []string{"ip.src", "ip.dst"}) }
	addr := func() string {
		return pick(r, [][]string{diffSrc4, diffDst4, diffSrc6, diffDst6, {"10.98.0.0/29", "10.99.0.0/16", "fd98::/120", "fd99::/64"}}[r.IntN(5)])
	}
	switch r.IntN(16) {
	case 0:
		return fmt.Sprintf("%s == %s", addrField(), addr())
	case 1:
		return fmt.Sprintf("%s != %s", addrField(), addr())
	case 2:
		return fmt.Sprintf("%s in {%s %s %s}", addrField(), addr(), addr(), addr())
	case 3:
		return fmt.Sprintf("%s in $pool", addrField())
	case 4:
		return fmt.Sprintf("%s %s %s", addrField(), pick(r, []string{"<", ">=", "<=", ">"}), pick(r, append(diffSrc4, diffSrc6...)))
	case 5:
		return fmt.Sprintf("ip.proto %s", pick(r, []string{`== "tcp"`, `== udp`, `== "icmp"`, `== icmpv6`, `== 47`, `in {tcp udp}`, `!= 6`}))
	case 6:
		return fmt.Sprintf("ip.len %s", pick(r, []string{"> 300", "<= 100", "in {60..200 400..500}", "== 60"}))
	case 7:
		return fmt.Sprintf("ip.ttl %s", pick(r, []string{"== 64", "< 10", "in {2 5 255}", ">= 128"}))
	case 8:
		return fmt.Sprintf("ip.hdr_len %s", pick(r, []string{"> 5", "== 5", "!= 6"}))
	case 9:
		return fmt.Sprintf("%s %s", portField(), pick(r, []string{
			fmt.Sprintf("== %d", port()), fmt.Sprintf("!= %d", port()), fmt.Sprintf(">= %d", port()),
			fmt.Sprintf("in {%d %d 1000..1010}", port(), port()), "& 0xff == 0x50", "in {0..100}"}))
	case 10:
		return pick(r, []string{"tcp.flags & 0x12 == 0x12", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags == 2",
			"tcp.flags & 0x04", "tcp.flags.fin", "tcp.flags > 0x80", "not tcp.flags.urg"})
	case 11:
		return fmt.Sprintf("icmp.%s", pick(r, []string{"type == 8", "type in {0 8 128}", "type != 3", "code == 1", "type < 100"}))
	case 12:
		return fmt.Sprintf("ingress %s", pick(r, []string{`== "r0"`, `!= "r2"`, `in {"r0" "x9"}`, `!= "r0"`, `== "lo"`,
			`== "wan"`, `!= "wan"`, `== "lan"`, `!= "lan"`, `in {"lan" "x9"}`, `in {"wan" "r0"}`, `in {"wan" "lan"}`}))
	case 13:
		return pick(r, []string{`identity.email == "alice@corp.example"`, `identity.groups contains "eng"`,
			`identity.email in {"alice@corp.example" "carol@corp.example"}`, `identity.email != "bob@corp.example"`,
			`identity.groups in {"ops"}`, `identity.email contains "a"`})
	case 14:
		return fmt.Sprintf("(%s or %s)", portField()+fmt.Sprintf(" == %d", port()), "ip.proto == icmp")
	}
	return fmt.Sprintf("%s == %d and ip.src == %s", portField(), port(), addr())
}

// genExpr returns a random expression of conditions joined by not, and,
// or and xor.
func genExpr(r *rand.Rand, depth int) string {
	if depth == 0 || r.IntN(3) == 0 {
		return genCond(r)
	}
	switch r.IntN(5) {
	case 0:
		return "not (" + genExpr(r, depth-1) + ")"
	case 1:
		return "(" + genExpr(r, depth-1) + ") xor (" + genExpr(r, depth-1) + ")"
	case 2:
		return "(" + genExpr(r, depth-1) + ") or (" + genExpr(r, depth-1) + ")"
	}
	return "(" + genExpr(r, depth-1) + ") and (" + genExpr(r, depth-1) + ")"
}

// diffPacket is a random packet and the ingress it arrives on.
type diffPacket struct {
	pkt
	ingress string
}

func genPacket(r *rand.Rand, marker uint64) diffPacket {
	v4 := r.IntN(2) == 0
	p := pkt{ttl: pick(r, []uint8{2, 5, 10, 64, 128, 255}), payload: 8 + r.IntN(500), marker: marker}
	if v4 {
		p.src, p.dst = netip.MustParseAddr(pick(r, diffSrc4)), netip.MustParseAddr(pick(r, diffDst4))
		p.opts = pick(r, []int{0, 0, 1, 2})
	} else {
		p.src, p.dst = netip.MustParseAddr(pick(r, diffSrc6)), netip.MustParseAddr(pick(r, diffDst6))
	}
	icmp := uint8(unix.IPPROTO_ICMP)
	if !v4 {
		icmp = unix.IPPROTO_ICMPV6
	}
	p.proto = pick(r, []uint8{unix.IPPROTO_TCP, unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_UDP, icmp, 47})
	p.sport, p.dport, p.flags = pick(r, ports), pick(r, ports), uint8(r.IntN(256))
	if v4 {
		p.icmpType = pick(r, []uint8{0, 3, 8, 11})
	} else {
		p.icmpType = pick(r, []uint8{1, 3, 128, 129})
	}
	p.icmpCd = uint8(r.IntN(2))
	return diffPacket{pkt: p, ingress: pick(r, []string{"r0", "r2"})}
}

// record describes the packet to the evaluator.
func (d diffPacket) record(t *testing.T) *rules.Record {
	rec := rules.NewRecord(rules.FirewallSchema())
	b := d.build()
	set := func(name string, v rules.Value) {
		if err := rec.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	set("ip.src", rules.IPValue(d.src))
	set("ip.dst", rules.IPValue(d.dst))
	set("ip.proto", rules.IntValue(uint64(d.proto)))
	set("ip.len", rules.IntValue(ipLen(b)))
	set("ip.ttl", rules.IntValue(uint64(d.ttl)))
	if d.src.Is4() {
		set("ip.hdr_len", rules.IntValue(uint64(5+d.opts)))
	}
	switch {
	case d.proto == unix.IPPROTO_TCP:
		set("tcp.srcport", rules.IntValue(uint64(d.sport)))
		set("tcp.dstport", rules.IntValue(uint64(d.dport)))
		set("tcp.flags", rules.IntValue(uint64(d.flags)))
		for _, f := range []string{"fin", "syn", "reset", "push", "ack", "urg", "ecn", "cwr"} {
			bit, _ := rules.TCPFlagBit("tcp.flags." + f)
			set("tcp.flags."+f, rules.BoolValue(d.flags&bit != 0))
		}
	case d.proto == unix.IPPROTO_UDP:
		set("udp.srcport", rules.IntValue(uint64(d.sport)))
		set("udp.dstport", rules.IntValue(uint64(d.dport)))
	case d.proto == unix.IPPROTO_ICMP && d.src.Is4(), d.proto == unix.IPPROTO_ICMPV6 && d.src.Is6():
		set("icmp.type", rules.IntValue(uint64(d.icmpType)))
		set("icmp.code", rules.IntValue(uint64(d.icmpCd)))
	}
	set("ingress", rules.StringValue(d.ingress))
	if id, ok := diffIDs[d.src.String()]; ok {
		set("identity.email", rules.StringValue(id.Email))
		set("identity.groups", rules.StringsValue(id.Groups...))
	}
	return rec
}

var diffSeed = flag.Uint64("diffseed", 0, "seed of TestKernelDifferential; 0: from the clock")

func TestKernelDifferential(t *testing.T) {
	// Rounds alternate between many rules (grouped by protocol and port)
	// and few (one linear chain).
	const rounds, npackets = 6, 150
	sizes := []int{60, 12, 80}
	n := newTestNet(t)
	var ids []Identity
	for a, id := range diffIDs {
		id.Addrs = []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(a), netip.MustParseAddr(a).BitLen())}
		ids = append(ids, id)
	}
	if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
		t.Fatal(err)
	}
	var send = map[string]*packetSock{}
	for ifc, peer := range map[string]string{"a0": "r0", "a1": "r2"} {
		if err := n.a.Do(func() (err error) { send[peer], err = openPacketSock(ifc, n.rMAC[peer]); return err }); err != nil {
			t.Fatal(err)
		}
		defer send[peer].Close()
	}
	var recv *packetSock
	if err := n.b.Do(func() (err error) { recv, err = openPacketSock("b0", nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer recv.Close()

	const diffGroup = 6102
	rd := openNflog(t, n, diffGroup, func(m uint64) bool { return m>>48 == 0xED6E })
	seed := *diffSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -diffseed=%[1]d)", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	for round := range rounds {
		var b strings.Builder
		b.WriteString("lists:\n  pool: [10.98.0.0/30, 10.99.0.2/32, fd98::/126]\nrules:\n")
		for i := range sizes[round%len(sizes)] {
			e := genExpr(r, 3)
			if r.IntN(2) == 0 { // narrow rules, so that later rules get packets too
				e = fmt.Sprintf("%s and %s and (%s)", genCond(r), genCond(r), genExpr(r, 2))
			}
			fmt.Fprintf(&b, "  - id: r%d\n    expression: %q\n    action: %s\n", i, e, pick(r, []string{"block", "allow"}))
		}
		yml := b.String()
		var c Config
		if err := yaml.Unmarshal([]byte(yml), &c); err != nil {
			t.Fatal(err)
		}
		rs, err := CompileRules(&c)
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, yml)
		}
		// r2 plays the WAN, r0 one of two LAN interfaces (the other absent).
		spec := Spec{WAN: "r2", LAN: []string{"x7", "r0"}, Rules: rs}
		// Odd rounds sample every packet: the sampled copy of the rules
		// must decide as the rules do, and log which rule decided.
		sampled := round%2 == 1
		if sampled {
			spec.Sampling = Sampling{Rate: 1, Group: diffGroup}
		}
		prog := Compile(spec)
		maps := 0
		for _, s := range prog.Sets {
			if s.Map {
				maps++
			}
		}
		t.Logf("round %d: %d base rules, %d chains, %d verdict maps, sampled %v", round, len(prog.Chains[0].Rules), len(prog.Chains), maps, sampled)
		if err := n.r.Do(func() error { return n.tbl.Apply(prog) }); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		pkts := make([]diffPacket, npackets)
		want := map[uint64]bool{}
		hits := map[string]uint64{}
		base := uint64(0xED6E000000000000) | uint64(round)<<32
		for i := range pkts {
			pkts[i] = genPacket(r, base+uint64(i))
			rule, ok := spec.Match(pkts[i].record(t))
			want[pkts[i].marker] = !ok || rule.Action != "block"
			if ok {
				hits[rule.ID]++
			}
			if err := send[pkts[i].ingress].send(pkts[i].build()); err != nil {
				t.Fatal(err)
			}
		}
		got, err := recv.receive(300*time.Millisecond, time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, p := range pkts {
			if delivered := got[p.marker] > 0; delivered != want[p.marker] {
				bad++
				if bad <= 5 {
					rule, _ := spec.Match(p.record(t))
					t.Errorf("round %d: packet %s on %s: kernel delivered=%v, evaluator says %v (rule %q)",
						round, p.record(t), p.ingress, delivered, want[p.marker], rule.ID)
				}
			}
		}
		if sampled {
			logged := rd.wait(100 * time.Millisecond)
			for _, p := range pkts {
				want := SamplePrefix(0, true)
				if rule, ok := spec.Match(p.record(t)); ok {
					want = SamplePrefix(rule.Position, rule.Action != "block")
				}
				if got := logged[p.marker]; len(got) != 1 || got[0] != want {
					bad++
					if bad <= 5 {
						t.Errorf("round %d: packet %s on %s logged %v, want [%s]", round, p.record(t), p.ingress, got, want)
					}
				}
			}
		}
		if bad > 0 {
			t.Fatalf("round %d: %d of %d packets differ; rules:\n%s", round, bad, npackets, yml)
		}
		dropped := 0
		for _, ok := range want {
			if !ok {
				dropped++
			}
		}
		t.Logf("round %d: %d packets agree, %d of them dropped, %d rules matched", round, npackets, dropped, len(hits))
		cs := n.counters(t)
		for id, h := range hits {
			if cs[id].Packets < h {
				t.Errorf("round %d: counter %s = %d, evaluator matched %d packets", round, id, cs[id].Packets, h)
			}
		}
	}
}
