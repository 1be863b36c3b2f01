package firewall

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/florianl/go-nflog/v2"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// nflogReader collects the NFLOG prefixes of the test packets (by marker)
// logged to one group in a namespace.
type nflogReader struct {
	mu  sync.Mutex
	got map[uint64][]string
	nf  *nflog.Nflog
}

// markerBase tags the packets of the sampling tests.
const markerBase = 0xED5A000000000000

// openNflog reads group in r, keeping the packets whose marker ours accepts.
func openNflog(t *testing.T, n *testNet, group uint16, ours func(marker uint64) bool) *nflogReader {
	t.Helper()
	rd := &nflogReader{got: map[uint64][]string{}}
	err := n.r.Do(func() (err error) {
		// The socket belongs to the namespace it is created in.
		rd.nf, err = nflog.Open(&nflog.Config{Group: group, Copymode: nflog.CopyPacket, Bufsize: 256, Timeout: 1})
		return err
	})
	if err != nil {
		t.Fatalf("open NFLOG group %d: %v", group, err)
	}
	_ = rd.nf.Con.SetReadBuffer(8 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); rd.nf.Close() })
	hook := func(a nflog.Attribute) int {
		if a.Payload == nil || a.Prefix == nil {
			return 0
		}
		if m, ok := markerOf(*a.Payload); ok && ours(m) {
			rd.mu.Lock()
			rd.got[m] = append(rd.got[m], *a.Prefix)
			rd.mu.Unlock()
		}
		return 0
	}
	if err := rd.nf.RegisterWithErrorFunc(ctx, hook, func(e error) int {
		if ctx.Err() == nil {
			t.Errorf("NFLOG: %v", e)
		}
		return 1
	}); err != nil {
		t.Fatal(err)
	}
	return rd
}

// wait returns what was logged once nothing new arrived for quiet.
func (rd *nflogReader) wait(quiet time.Duration) map[uint64][]string {
	count := func() int {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		n := 0
		for _, ps := range rd.got {
			n += len(ps)
		}
		return n
	}
	last := -1
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if c := count(); c == last {
			break
		} else {
			last = c
		}
		time.Sleep(quiet) // an NFLOG batch is flushed every 10 ms (Timeout 1)
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	out := make(map[uint64][]string, len(rd.got))
	for m, ps := range rd.got {
		out[m] = slices.Clone(ps)
	}
	clear(rd.got)
	return out
}

const samplingRules = `
lists:
  blocked: [10.98.0.66/32, fd98::66/128]
rules:
  - id: drop-ssh
    expression: tcp.dstport == 22
    action: block
  - id: disabled
    expression: tcp.dstport == 80
    action: block
    enabled: false
  - id: web
    expression: tcp.dstport == 80 and not ip.src == 10.98.0.9
    action: allow
  - id: flood
    expression: udp.dstport == 9
    action: rate_limit
    rate: 5/second
  - id: no-ping-from-wan
    expression: (icmp.type == 8 or icmp.type == 128) and ingress == "wan"
    action: block
  - id: blocked
    expression: ip.src in $blocked
    action: block
`

// TestKernelSampling checks the flow-sampling contract: with rate 1 every
// packet is logged exactly once, with prefix ef/<position>/<a|b> agreeing
// with the pure evaluator and with what the kernel delivered; with rate 4
// about a quarter are.
func TestKernelSampling(t *testing.T) {
	n := newTestNet(t)
	const group = 6101
	var c Config
	if err := yaml.Unmarshal([]byte(samplingRules), &c); err != nil {
		t.Fatal(err)
	}
	rs, err := CompileRules(&c)
	if err != nil {
		t.Fatal(err)
	}
	// r2 is the WAN; a reaches r through r0 (LAN) and r2.
	spec := Spec{WAN: "r2", LAN: []string{"r0"}, Rules: rs, Sampling: Sampling{Rate: 1, Group: group}}
	if err := n.r.Do(func() error { return n.tbl.Apply(Compile(spec)) }); err != nil {
		t.Fatal(err)
	}
	rd := openNflog(t, n, group, func(m uint64) bool { return m&^0xffffffff == markerBase })
	send := map[string]*packetSock{}
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

	type tp struct {
		desc string
		pkt  diffPacket
		// flood packets: the meter decides, so only consistency with
		// delivery is checked.
		limited bool
	}
	var pkts []tp
	add := func(desc string, p pkt, ingress string, limited bool) {
		p.marker = markerBase | uint64(len(pkts))
		if p.ttl == 0 {
			p.ttl = 64
		}
		pkts = append(pkts, tp{desc, diffPacket{p, ingress}, limited})
	}
	for _, fam := range []struct{ src, src9, bad, dst string }{
		{"10.98.0.1", "10.98.0.9", "10.98.0.66", "10.99.0.1"},
		{"fd98::1", "fd98::9", "fd98::66", "fd99::1"},
	} {
		src, src9, bad, dst := netip.MustParseAddr(fam.src), netip.MustParseAddr(fam.src9), netip.MustParseAddr(fam.bad), netip.MustParseAddr(fam.dst)
		echo, icmp := uint8(8), uint8(unix.IPPROTO_ICMP)
		if src.Is6() {
			echo, icmp = 128, unix.IPPROTO_ICMPV6
		}
		add("ssh", pkt{src: src, dst: dst, proto: unix.IPPROTO_TCP, sport: 1000, dport: 22, flags: 2}, "r0", false)
		add("web", pkt{src: src, dst: dst, proto: unix.IPPROTO_TCP, sport: 1000, dport: 80, flags: 2}, "r0", false)
		add("web from .9: no rule", pkt{src: src9, dst: dst, proto: unix.IPPROTO_TCP, sport: 1000, dport: 80, flags: 2}, "r0", false)
		add("dns: no rule", pkt{src: src, dst: dst, proto: unix.IPPROTO_UDP, sport: 1000, dport: 53}, "r2", false)
		add("ping from lan", pkt{src: src, dst: dst, proto: icmp, icmpType: echo}, "r0", false)
		add("ping from wan", pkt{src: src, dst: dst, proto: icmp, icmpType: echo}, "r2", false)
		add("listed source", pkt{src: bad, dst: dst, proto: unix.IPPROTO_UDP, sport: 1000, dport: 53}, "r0", false)
		for range 12 {
			add("flood", pkt{src: src, dst: dst, proto: unix.IPPROTO_UDP, sport: 1000, dport: 9}, "r0", true)
		}
	}
	for _, p := range pkts {
		if err := send[p.pkt.ingress].send(p.pkt.build()); err != nil {
			t.Fatal(err)
		}
	}
	delivered, err := recv.receive(300*time.Millisecond, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	logged := rd.wait(100 * time.Millisecond)
	seen := map[string]bool{}
	for _, p := range pkts {
		m := p.pkt.marker
		ps := logged[m]
		if len(ps) != 1 {
			t.Errorf("%s (%s on %s): logged %d times %v, want once", p.desc, p.pkt.record(t), p.pkt.ingress, len(ps), ps)
			continue
		}
		got := delivered[m] > 0
		want := SamplePrefix(0, true)
		if rule, ok := spec.Match(p.pkt.record(t)); ok {
			want = SamplePrefix(rule.Position, rule.Action != "block")
			if p.limited {
				want = SamplePrefix(rule.Position, got)
			}
		}
		if ps[0] != want {
			t.Errorf("%s (%s on %s): prefix %q, want %q", p.desc, p.pkt.record(t), p.pkt.ingress, ps[0], want)
		}
		if passed := strings.HasSuffix(ps[0], "/a"); passed != got {
			t.Errorf("%s: prefix %q but delivered=%v", p.desc, ps[0], got)
		}
		seen[ps[0]] = true
	}
	for _, want := range []string{"ef/1/b", "ef/3/a", "ef/0/a", "ef/4/a", "ef/4/b", "ef/5/b", "ef/6/b"} {
		if !seen[want] {
			t.Errorf("no packet logged with %s; seen %v", want, seen)
		}
	}
	if t.Failed() {
		return
	}

	// 1 in 4: about a quarter of 400 packets, each at most once.
	spec.Sampling.Rate = 4
	if err := n.r.Do(func() error { return n.tbl.Apply(Compile(spec)) }); err != nil {
		t.Fatal(err)
	}
	const total = 400
	for i := range total {
		p := pkt{src: netip.MustParseAddr("10.98.0.1"), dst: netip.MustParseAddr("10.99.0.1"), proto: unix.IPPROTO_UDP,
			sport: 1000, dport: 53, ttl: 64, marker: markerBase | 1<<16 | uint64(i)}
		if err := send["r0"].send(p.build()); err != nil {
			t.Fatal(err)
		}
	}
	delivered, err = recv.receive(300*time.Millisecond, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	logged = rd.wait(100 * time.Millisecond)
	got := 0
	for m := range delivered {
		if m&^0xffff == markerBase|1<<16 {
			got++
		}
	}
	if got != total {
		t.Errorf("%d of %d packets delivered, want all", got, total)
	}
	for m, ps := range logged {
		if len(ps) != 1 || ps[0] != "ef/0/a" {
			t.Errorf("packet %x logged as %v, want once as ef/0/a", m, ps)
		}
	}
	// Binomial(400, 1/4): mean 100, standard deviation 8.7.
	if len(logged) < 60 || len(logged) > 140 {
		t.Errorf("rate 4: %d of %d packets sampled, want about 100", len(logged), total)
	}
	t.Logf("rate 4: %d of %d packets sampled", len(logged), total)
}

// TestRulesetID checks that the ID depends on the rules, not on the
// lists or descriptions.
func TestRulesetID(t *testing.T) {
	compile := func(yml string) *Ruleset {
		t.Helper()
		var c Config
		if err := yaml.Unmarshal([]byte(yml), &c); err != nil {
			t.Fatal(err)
		}
		rs, err := CompileRules(&c)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	a := compile(samplingRules)
	if id := a.ID(); len(id) != 32 || id != compile(samplingRules).ID() {
		t.Errorf("ID %q: want 32 hex digits, the same for the same rules", id)
	}
	lists := strings.Replace(samplingRules, "10.98.0.66/32", "10.98.0.67/32", 1)
	if compile(lists).ID() != a.ID() {
		t.Error("ID changed with a list's contents")
	}
	for _, change := range [][2]string{
		{"tcp.dstport == 22", "tcp.dstport == 23"},
		{"action: allow", "action: block"},
		{"rate: 5/second", "rate: 6/second"},
		{"enabled: false", "enabled: true"},
		{"id: web", "id: www"},
	} {
		if b := compile(strings.Replace(samplingRules, change[0], change[1], 1)); b.ID() == a.ID() {
			t.Errorf("ID unchanged by %s → %s", change[0], change[1])
		}
	}
	if (*Ruleset)(nil).ID() != "" {
		t.Error("nil Ruleset has an ID")
	}
}
