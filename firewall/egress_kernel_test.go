package firewall

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/google/nftables"
)

// egressNet is testNet with two public egress addresses per family on
// r's uplink r1 and a TCP server on b that answers each connection with
// the address it came from. alice (10.1.0.10, fd01::10), bob (10.1.0.11,
// fd01::11) and carol (10.1.0.12, no identity) are addresses of a.
type egressNet struct {
	*testNet
	server string // b's listener
}

func newEgressNet(t *testing.T) *egressNet {
	t.Helper()
	n := newTestNet(t)
	for _, x := range []struct {
		ns        *netlab.NS
		ifc, addr string
	}{{n.r, "r1", "203.0.113.1/32"}, {n.r, "r1", "203.0.113.2/32"},
		{n.a, "a0", "10.1.0.10/24"}, {n.a, "a0", "10.1.0.11/24"}, {n.a, "a0", "10.1.0.12/24"}} {
		if err := x.ns.AddAddr(x.ifc, x.addr); err != nil {
			t.Fatal(err)
		}
	}
	// IPv6: two egress addresses, alice and bob on a0 (no DAD: usable at once).
	for _, x := range []struct {
		ns        *netlab.NS
		ifc, addr string
	}{{n.r, "r1", "2001:db8:e::1/128"}, {n.r, "r1", "2001:db8:e::2/128"},
		{n.a, "a0", "fd01::10/64"}, {n.a, "a0", "fd01::11/64"}} {
		if out, err := x.ns.IP("addr", "add", x.addr, "dev", x.ifc, "nodad"); err != nil {
			t.Fatalf("%s: %v %s", x.addr, err, out)
		}
	}
	if err := n.b.Route("203.0.113.0/24", "10.2.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := n.b.Route("2001:db8:e::/64", "fd02::1"); err != nil {
		t.Fatal(err)
	}
	ln, err := n.b.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// Accept loop owned by the test: it ends when the listener closes.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
				}
			}()
		}
	}()
	return &egressNet{testNet: n, server: "10.2.0.2:8080"}
}

// seenAs connects from src (an address of a) to b's address of src's
// family and returns the source address b saw, and the connection.
func (n *egressNet) seenAs(t *testing.T, src string) (string, net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c net.Conn
	err := n.a.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		dst := n.server
		if strings.Contains(src, ":") {
			dst = "[fd02::2]:8080"
		}
		c, err = d.DialContext(ctx, "tcp", dst)
		return err
	})
	if err != nil {
		t.Fatalf("connect from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return ask(t, c), c
}

func ask(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, "who"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

const egressKernelYAML = `
egress:
  addresses:
    - {name: a, address: 203.0.113.1, country: DE}
    - {name: b, address: 203.0.113.2, country: US}
    - {name: a6, address: 2001:db8:e::1, country: DE}
    - {name: b6, address: 2001:db8:e::2, country: US}
  policies:
    - id: eu
      expression: identity.groups contains "eu"
      egress: a
    - id: us
      expression: identity.groups contains "us"
      egress: b
    - id: eu6
      expression: identity.groups contains "eu"
      egress: a6
    - id: us6
      expression: identity.groups contains "us"
      egress: b6
`

// TestKernelEgressByIdentity: alice's connections leave from egress
// address A and bob's from B, over IPv4 and IPv6, carol's are masqueraded
// to the uplink's own address; moving alice to another group moves her new connections, in
// place, while the established one keeps its address; the gateway's own
// packets from an egress address keep it.
func TestKernelEgressByIdentity(t *testing.T) {
	testkit.NeedTool(t, "nft", "nftables")
	n := newEgressNet(t)
	c := egressConfig(t, egressKernelYAML)
	eg, err := CompileEgress(c)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := CompileRules(c)
	if err != nil {
		t.Fatal(err)
	}
	p := Compile(Spec{WAN: "r1", Rules: rs, Egress: eg})
	pfx := netip.MustParsePrefix
	ids := []Identity{
		{Email: "alice@example.com", Groups: []string{"eu"}, Addrs: []netip.Prefix{pfx("10.1.0.10/32"), pfx("fd01::10/128")}},
		{Email: "bob@example.com", Groups: []string{"us"}, Addrs: []netip.Prefix{pfx("10.1.0.11/32"), pfx("fd01::11/128")}},
	}
	if err := n.r.Do(func() error {
		if err := n.tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return n.tbl.Apply(p)
	}); err != nil {
		t.Fatal(err)
	}
	list := n.nftList(t)
	// One rule per family looks the client up in an identity map.
	for _, want := range []string{
		`oifname "r1" snat ip to ip saddr map @egm4_0_r1`,
		`oifname "r1" snat ip6 to ip6 saddr map @egm6_0_r1`,
		"10.1.0.10 counter packets 0 bytes 0 : 203.0.113.1",
		"10.1.0.11 counter packets 0 bytes 0 : 203.0.113.2",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("the kernel's listing lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "set eid") {
		t.Errorf("identity sets no rule looks up are in the kernel:\n%s", list)
	}
	alice, aliceConn := n.seenAs(t, "10.1.0.10")
	bob, _ := n.seenAs(t, "10.1.0.11")
	carol, _ := n.seenAs(t, "10.1.0.12")
	if alice != "203.0.113.1" || bob != "203.0.113.2" || carol != "10.2.0.1" {
		t.Fatalf("b saw alice as %s (want 203.0.113.1), bob as %s (want 203.0.113.2), carol as %s (want 10.2.0.1)", alice, bob, carol)
	}
	alice6, _ := n.seenAs(t, "fd01::10")
	bob6, _ := n.seenAs(t, "fd01::11")
	if alice6 != "2001:db8:e::1" || bob6 != "2001:db8:e::2" {
		t.Fatalf("over IPv6 b saw alice as %s (want 2001:db8:e::1), bob as %s (want 2001:db8:e::2)", alice6, bob6)
	}

	// alice moves to "us": sets change in place, no Apply.
	ids[0].Groups = []string{"us"}
	if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
		t.Fatal(err)
	}
	if again, _ := n.seenAs(t, "10.1.0.10"); again != "203.0.113.2" {
		t.Errorf("alice's new connection after the move came from %s, want 203.0.113.2", again)
	}
	if old := ask(t, aliceConn); old != "203.0.113.1" {
		t.Errorf("alice's established connection now comes from %s, want 203.0.113.1 (conntrack keeps it)", old)
	}

	// The gateway's own connection from egress B leaves from B, not
	// masqueraded to r1's primary address.
	var own net.Conn
	if err := n.r.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("203.0.113.2")}, Timeout: 10 * time.Second}
		own, err = d.Dial("tcp", n.server)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if got := ask(t, own); got != "203.0.113.2" {
		t.Errorf("r's own connection from 203.0.113.2 reached b from %s", got)
	}

	var cs map[string]Counter
	if err := n.r.Do(func() (err error) { cs, err = n.tbl.EgressCounts(); return err }); err != nil {
		t.Fatal(err)
	}
	if cs["eu"].Packets != 1 || cs["us"].Packets != 2 || cs["eu6"].Packets != 1 || cs["us6"].Packets != 1 {
		t.Errorf("egress counters = %v, want eu: 1 connection, us: 2, eu6: 1, us6: 1", cs)
	}
}

const egressOrderYAML = `
egress:
  addresses:
    - {name: a, address: 203.0.113.1, country: DE}
    - {name: b, address: 203.0.113.2, country: US}
    - {name: c, address: 203.0.113.3, country: FR}
  policies:
    - {id: eu, expression: 'identity.groups contains "eu"', egress: a}
    - {id: bob-by-source, expression: 'ip.src == 10.1.0.11', egress: b}
    - {id: us, expression: 'identity.groups contains "us"', egress: c}
`

// TestKernelEgressRunsKeepOrder: a policy on the source between two runs
// of identity-only policies splits them into two maps, and the kernel
// keeps the configuration's order: bob (in "us") misses the first map,
// meets his source rule before the second map would send him to c;
// moving bob to "eu" sends his new connections through the first map,
// and carol, out of every group, misses both and is masqueraded. The
// policies' counters count the connections each gave its address,
// those of map elements an update removed included.
func TestKernelEgressRunsKeepOrder(t *testing.T) {
	testkit.NeedTool(t, "nft", "nftables")
	n := newEgressNet(t)
	if err := n.r.AddAddr("r1", "203.0.113.3/32"); err != nil {
		t.Fatal(err)
	}
	eg, err := CompileEgress(egressConfig(t, egressOrderYAML))
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	ids := []Identity{
		{Email: "alice@example.com", Groups: []string{"eu"}, Addrs: []netip.Prefix{pfx("10.1.0.10/32")}},
		{Email: "bob@example.com", Groups: []string{"us"}, Addrs: []netip.Prefix{pfx("10.1.0.11/32")}},
		{Email: "carol@example.com", Groups: []string{"us"}, Addrs: []netip.Prefix{pfx("10.1.0.12/32")}},
	}
	if err := n.r.Do(func() error {
		if err := n.tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return n.tbl.Apply(Compile(Spec{WAN: "r1", Egress: eg}))
	}); err != nil {
		t.Fatal(err)
	}
	list := n.nftList(t)
	first, rule, second := strings.Index(list, "map @egm4_0_r1"), strings.Index(list, `counter name "eg2"`), strings.Index(list, "map @egm4_1_r1")
	if first < 0 || rule < first || second < rule {
		t.Errorf("want the first run's map, the source rule, then the second run's map, in that order:\n%s", list)
	}
	check := func(when string, want map[string]string) {
		t.Helper()
		for src, w := range want {
			if got, _ := n.seenAs(t, src); got != w {
				t.Errorf("%s: b saw %s as %s, want %s", when, src, got, w)
			}
		}
	}
	check("at first", map[string]string{"10.1.0.10": "203.0.113.1", "10.1.0.11": "203.0.113.2", "10.1.0.12": "203.0.113.3"})

	// The move changes map elements, not rules: the chain, with its
	// rules' handles, is the same before and after.
	chain := func() string {
		t.Helper()
		out, err := n.r.Exec(context.Background(), "nft", "-a", "list", "chain", "inet", TableName, "postrouting")
		if err != nil {
			t.Fatalf("nft list chain: %v: %s", err, out)
		}
		return string(out)
	}
	before := chain()
	ids[1].Groups = []string{"eu"}
	ids[2].Groups = nil
	if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
		t.Fatal(err)
	}
	if after := chain(); after != before {
		t.Errorf("an identity update changed the rules:\n%s\nthen\n%s", before, after)
	}
	list = n.nftList(t)
	// alice and bob, both in "eu" now, are one interval, added afresh:
	// its counter starts at zero, and alice's connection is carried over
	// to eu's count (checked below).
	for _, want := range []string{"elements = { 10.1.0.10/31 counter packets 0 "} {
		if !strings.Contains(list, want) {
			t.Errorf("after the move, the maps lack %q:\n%s", want, list)
		}
	}
	check("after the move", map[string]string{"10.1.0.11": "203.0.113.1", "10.1.0.12": "10.2.0.1"})

	var cs map[string]Counter
	if err := n.r.Do(func() (err error) { cs, err = n.tbl.EgressCounts(); return err }); err != nil {
		t.Fatal(err)
	}
	if cs["eu"].Packets != 2 || cs["bob-by-source"].Packets != 1 || cs["us"].Packets != 1 {
		t.Errorf("egress counters = %v, want eu: 2 connections, bob-by-source: 1, us: 1 (carol's, her element removed since)", cs)
	}
}

// TestKernelEgressMapUpdates moves identities between groups at random,
// one or several at a time, with neighbouring addresses so that
// intervals merge and split, and checks after every UpdateIdentities
// that the kernel took the batch and its maps hold exactly the elements
// the identities call for.
func TestKernelEgressMapUpdates(t *testing.T) {
	testkit.NeedTool(t, "nft", "nftables")
	lab := netlab.NewT(t)
	r, err := lab.NS("r")
	if err != nil {
		t.Fatal(err)
	}
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { _ = r.Do(tbl.Close) })
	eg, err := CompileEgress(egressConfig(t, `
egress:
  addresses:
    - {name: a, address: 203.0.113.1, country: DE}
    - {name: b, address: 203.0.113.2, country: US}
    - {name: b6, address: "2001:db8:e::2", country: US}
  policies:
    - {id: g0, expression: 'identity.groups contains "g0"', egress: a}
    - {id: g1, expression: 'identity.groups contains "g1" or identity.email == "u5@example.com"', egress: b}
    - {id: g2, expression: 'identity.groups contains "g2"', egress: a}
    - {id: g1-6, expression: 'identity.groups contains "g1"', egress: b6}
`))
	if err != nil {
		t.Fatal(err)
	}
	var ids []Identity
	for i := range 48 {
		ids = append(ids, Identity{Email: fmt.Sprintf("u%d@example.com", i), Groups: []string{fmt.Sprintf("g%d", i%4)},
			Addrs: []netip.Prefix{
				netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 96, 0, byte(i)}), 32),
				netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 15: byte(i)}), 128),
			}})
	}
	// The last identity's address runs to the end of the IPv4 space: an
	// interval without an end element.
	ids[47].Addrs = append(ids[47].Addrs, netip.MustParsePrefix("255.255.255.0/24"))
	p := Compile(Spec{WAN: "r1", Egress: eg})
	if err := r.Do(func() error {
		if err := tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return tbl.Apply(p)
	}); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(19, 9))
	for step := range 40 {
		for range 1 + rnd.IntN(4) {
			id := &ids[rnd.IntN(len(ids))]
			id.Groups = []string{fmt.Sprintf("g%d", rnd.IntN(5))} // g4: no policy
		}
		if err := r.Do(func() error { return tbl.UpdateIdentities(ids) }); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		for i := range p.Sets {
			s := &p.Sets[i]
			want := map[string]bool{}
			for _, e := range p.egressMapElements(s, ids) {
				want[fmt.Sprintf("%x %v %x", e.key, e.end, e.val)] = true
			}
			var kern []nftables.SetElement
			if err := r.Do(func() error {
				c, err := nftables.New()
				if err != nil {
					return err
				}
				kern, err = c.GetSetElements(nftSet(s))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, e := range kern {
				got[fmt.Sprintf("%x %v %x", e.Key, e.IntervalEnd, e.Val)] = true
			}
			if !maps.Equal(got, want) {
				t.Fatalf("step %d: map %s in the kernel:\n%v\nwant\n%v", step, s.Name, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
			}
		}
	}
}
