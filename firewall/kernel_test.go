package firewall

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.yaml.in/yaml/v3"
)

// testNet is a router namespace r between a client a (two links, so that
// packets can arrive on r0 or r2) and a server b:
//
//	a:a0 10.1.0.2 fd01::2 — r0 r r1 — b:b0 10.2.0.2 fd02::2
//	a:a1 10.3.0.2 fd03::2 — r2
//
// r routes 10.99.0.0/16 and fd99::/64 to b, so tests can send packets with
// made-up addresses through it.
type testNet struct {
	lab     *netlab.Lab
	a, r, b *netlab.NS
	rMAC    map[string]net.HardwareAddr // r's interfaces
	tbl     *Table
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	lab := netlab.NewT(t)
	n := &testNet{lab: lab, rMAC: map[string]net.HardwareAddr{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	n.a, err = lab.NS("a")
	must(err)
	n.r, err = lab.NS("r")
	must(err)
	n.b, err = lab.NS("b")
	must(err)
	must(lab.Link(n.a, "a0", "10.1.0.2/24", n.r, "r0", "10.1.0.1/24"))
	must(lab.Link(n.a, "a1", "10.3.0.2/24", n.r, "r2", "10.3.0.1/24"))
	must(lab.Link(n.r, "r1", "10.2.0.1/24", n.b, "b0", "10.2.0.2/24"))
	for _, x := range []struct {
		ns        *netlab.NS
		ifc, addr string
	}{{n.a, "a0", "fd01::2/64"}, {n.r, "r0", "fd01::1/64"}, {n.a, "a1", "fd03::2/64"},
		{n.r, "r2", "fd03::1/64"}, {n.r, "r1", "fd02::1/64"}, {n.b, "b0", "fd02::2/64"}} {
		must(x.ns.AddAddr(x.ifc, x.addr))
	}
	must(n.a.Route("default", "10.1.0.1"))
	must(n.a.Route("default", "fd01::1"))
	must(n.b.Route("default", "10.2.0.1"))
	must(n.b.Route("default", "fd02::1"))
	must(n.r.Route("10.99.0.0/16", "10.2.0.2"))
	must(n.r.Route("fd99::/64", "fd02::2"))
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.r0.rp_filter", "0"}, {"net.ipv4.conf.r2.rp_filter", "0"}} {
		must(n.r.Sysctl(kv[0], kv[1]))
	}
	// Permanent neighbours: rules under test may drop b's ARP/ND replies.
	bMAC := ifMAC(t, n.b, "b0")
	for _, ip := range []string{"10.2.0.2", "fd02::2"} {
		_, err := n.r.IP("neigh", "replace", ip, "lladdr", bMAC.String(), "dev", "r1", "nud", "permanent")
		must(err)
	}
	for _, ifc := range []string{"r0", "r1", "r2"} {
		n.rMAC[ifc] = ifMAC(t, n.r, ifc)
	}
	n.tbl = New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { _ = n.r.Do(n.tbl.Close) })
	return n
}

func ifMAC(t *testing.T, ns *netlab.NS, ifc string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := ns.Do(func() error {
		i, err := net.InterfaceByName(ifc)
		if err == nil {
			mac = i.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// apply compiles the YAML firewall section and applies it in r, with
// masquerade on wan if given (which turns conntrack on in r).
func (n *testNet) apply(t *testing.T, yml string, wan ...string) *Program {
	t.Helper()
	var c Config
	if err := yaml.Unmarshal([]byte(yml), &c); err != nil {
		t.Fatal(err)
	}
	rs, err := CompileRules(&c)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Rules: rs}
	if len(wan) > 0 {
		spec.WAN = wan[0]
	}
	p := Compile(spec)
	if err := n.r.Do(func() error { return n.tbl.Apply(p) }); err != nil {
		t.Fatal(err)
	}
	return p
}

func (n *testNet) counters(t *testing.T) map[string]Counter {
	t.Helper()
	var cs map[string]Counter
	if err := n.r.Do(func() (err error) { cs, err = n.tbl.Counters(); return err }); err != nil {
		t.Fatal(err)
	}
	return cs
}

// nftList returns `nft list table inet edgegw` in r and checks that nft
// can read its own listing back.
func (n *testNet) nftList(t *testing.T) string {
	t.Helper()
	out, err := n.r.Exec(context.Background(), "nft", "list", "table", "inet", TableName)
	if err != nil {
		t.Fatal(err)
	}
	f := t.TempDir() + "/list.nft"
	if err := os.WriteFile(f, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if chk, err := n.r.Exec(context.Background(), "nft", "-c", "-f", f); err != nil {
		t.Errorf("nft cannot parse its listing: %v\n%s\n%s", err, chk, out)
	}
	return string(out)
}

func TestKernelApplyGolden(t *testing.T) {
	n := newTestNet(t)
	files, err := filepath.Glob("testdata/compile/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		in, _, _ := strings.Cut(string(b), "-- want --\n")
		var spec specInput
		if err := yaml.Unmarshal([]byte(in), &spec); err != nil {
			t.Fatal(err)
		}
		rs, err := CompileRules(&spec.Firewall)
		if err != nil {
			t.Fatal(err)
		}
		p := Compile(spec.spec(t, rs))
		if err := n.r.Do(func() error { return n.tbl.Apply(p) }); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		list := n.nftList(t)
		if !strings.Contains(list, "hook prerouting priority raw") {
			t.Errorf("%s: no raw prerouting chain in\n%s", file, list)
		}
	}
	// The table went into r's namespace, not the test process's.
	if out, err := n.a.Exec(context.Background(), "nft", "list", "table", "inet", TableName); err == nil {
		t.Errorf("table visible outside r:\n%s", out)
	}
}

const trafficRules = `
lists:
  blocked: []
rules:
  - id: blocked-sources
    expression: ip.src in $blocked
    action: block
  - id: no-ssh
    expression: tcp.dstport == 22
    action: block
  - id: no-mdns
    expression: udp.dstport == 5353
    action: block
  - id: ping-limit
    expression: icmp.type == 8 or icmp.type == 128
    action: rate_limit
    rate: 5/second
  - id: web
    expression: tcp.dstport in {80 8080} and not ip.src == 10.3.0.0/24
    action: allow
`

// dialOK reports whether a TCP connection from a to addr succeeds.
func dialOK(n *testNet, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	c, err := n.a.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// udpOK reports whether a datagram from a reaches b's socket.
func udpOK(t *testing.T, n *testNet, pc net.PacketConn, addr string) bool {
	t.Helper()
	c, err := n.a.DialContext(context.Background(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 16)
	_, _, err = pc.ReadFrom(buf)
	return err == nil
}

func TestKernelTraffic(t *testing.T) {
	n := newTestNet(t)
	n.apply(t, trafficRules)
	n.nftList(t)
	for _, port := range []string{"22", "80"} {
		for _, host := range []string{"10.2.0.2", "[fd02::2]"} {
			l, err := n.b.Listen("tcp", host+":"+port)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	for _, host := range []string{"10.2.0.2", "[fd02::2]"} {
		if !dialOK(n, host+":80") {
			t.Errorf("tcp to %s:80 blocked, want allowed", host)
		}
		if dialOK(n, host+":22") {
			t.Errorf("tcp to %s:22 allowed, want blocked", host)
		}
		for port, want := range map[string]bool{"5353": false, "5354": true} {
			pc, err := n.b.ListenPacket("udp", host+":"+port)
			if err != nil {
				t.Fatal(err)
			}
			if got := udpOK(t, n, pc, host+":"+port); got != want {
				t.Errorf("udp to %s:%s delivered %v, want %v", host, port, got, want)
			}
			pc.Close()
		}
	}
	// 30 pings in a burst: the meter passes the first 5 (the bucket holds
	// one second's worth) and drops most of the rest.
	for _, dst := range []string{"10.2.0.2", "fd02::2"} {
		out, _ := n.a.Exec(context.Background(), "ping", "-n", "-q", "-c", "30", "-i", "0.002", "-W", "1", dst)
		m := pingReceived(string(out))
		if m < 5 || m > 10 {
			t.Errorf("ping %s: %d of 30 replies, want 5..10 with rate 5/second\n%s", dst, m, out)
		}
	}
	cs := n.counters(t)
	if c := cs["no-ssh"]; c.Packets == 0 || c.Bytes == 0 {
		t.Errorf("counter no-ssh = %+v, want > 0", c)
	}
	if c := cs["ping-limit"]; c.Packets < 60 {
		t.Errorf("counter ping-limit = %+v, want >= 60 packets", c)
	}
	if c := cs["web"]; c.Packets == 0 {
		t.Errorf("counter web = %+v, want > 0", c)
	}
	if _, ok := cs["blocked-sources"]; !ok {
		t.Errorf("no counter for blocked-sources in %v", cs)
	}
}

// pingReceived parses "N received" from ping's summary.
func pingReceived(out string) int {
	for _, f := range strings.Split(out, ",") {
		if f = strings.TrimSpace(f); strings.HasSuffix(f, " received") {
			n, _ := strconv.Atoi(strings.TrimSuffix(f, " received"))
			return n
		}
	}
	return -1
}

// ruleHandles lists the handles of every rule of the table in r.
func ruleHandles(t *testing.T, n *testNet, p *Program) []uint64 {
	t.Helper()
	var hs []uint64
	err := n.r.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		for _, ch := range p.Chains {
			rs, err := c.GetRules(table(), &nftables.Chain{Name: ch.Name, Table: table()})
			if err != nil {
				return err
			}
			for _, r := range rs {
				hs = append(hs, r.Handle)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func TestKernelUpdateListAndIdentities(t *testing.T) {
	n := newTestNet(t)
	p := n.apply(t, trafficRules+`
  - id: no-interns
    expression: tcp.dstport == 443 and identity.groups contains "interns"
    action: block
`)
	for _, host := range []string{"10.2.0.2:80", "[fd02::2]:80", "10.2.0.2:443", "[fd02::2]:443"} {
		l, err := n.b.Listen("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
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
	check := func(what string, want bool, addrs ...string) {
		t.Helper()
		for _, a := range addrs {
			if got := dialOK(n, a); got != want {
				t.Errorf("%s: tcp to %s allowed=%v, want %v", what, a, got, want)
			}
		}
	}
	check("empty list", true, "10.2.0.2:80", "[fd02::2]:80")
	update := func(items ...string) {
		t.Helper()
		var ps []netip.Prefix
		for _, s := range items {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		if err := n.r.Do(func() error { return n.tbl.UpdateList("blocked", ps) }); err != nil {
			t.Fatal(err)
		}
	}
	update("10.1.0.0/24", "192.0.2.0/24", "fd01::/64")
	check("client listed", false, "10.2.0.2:80", "[fd02::2]:80")
	update("10.1.0.2/32", "10.1.0.3/32", "192.0.2.0/25", "fd01::2/128") // merge, split and shrink
	check("client host listed", false, "10.2.0.2:80", "[fd02::2]:80")
	update("10.1.0.3/32", "fd01::3/128")
	check("client unlisted", true, "10.2.0.2:80", "[fd02::2]:80")
	if err := n.r.Do(func() error { return n.tbl.UpdateList("nosuch", nil) }); err == nil {
		t.Error("UpdateList of an unknown list succeeded")
	}

	check("no identities", true, "10.2.0.2:443", "[fd02::2]:443")
	ids := []Identity{{Email: "intern@corp.example", Groups: []string{"interns"},
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.2/32"), netip.MustParsePrefix("fd01::2/128")}}}
	if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
		t.Fatal(err)
	}
	check("intern", false, "10.2.0.2:443", "[fd02::2]:443")
	check("intern, other port", true, "10.2.0.2:80")
	ids[0].Groups = []string{"staff"}
	if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
		t.Fatal(err)
	}
	check("staff", true, "10.2.0.2:443", "[fd02::2]:443")

	if after := ruleHandles(t, n, p); !slices.Equal(before, after) {
		t.Errorf("rule handles changed by list updates: %v → %v", before, after)
	}
	n.nftList(t)
}

// TestKernelApplyFailureKeepsOld checks atomicity: a batch the kernel
// rejects leaves the previous table as it was.
func TestKernelApplyFailureKeepsOld(t *testing.T) {
	n := newTestNet(t)
	p := n.apply(t, trafficRules)
	old := n.nftList(t)
	bad := *p
	bad.Chains = append([]Chain(nil), p.Chains...)
	bad.Chains[0].Rules = append(slices.Clone(bad.Chains[0].Rules),
		[]expr.Any{verdict(expr.VerdictGoto, "nosuchchain")})
	err := n.r.Do(func() error { return n.tbl.Apply(&bad) })
	if err == nil {
		t.Fatal("Apply of a program with a goto to a missing chain succeeded")
	}
	if now := n.nftList(t); now != old {
		t.Errorf("table changed by a failed Apply:\n%s\nwas\n%s", now, old)
	}
}
