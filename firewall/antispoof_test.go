package firewall

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestOwnedSegments(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []TunnelSources
		v6   bool
		want string
	}{
		{"none", nil, false, ""},
		{"one", []TunnelSources{{"wg0", pp("100.96.0.0/12")}}, false, "100.96.0.0-100.111.255.255=wg0"},
		{"nested same owner merges", []TunnelSources{{"wg0", pp("100.96.0.0/12", "100.96.5.0/24")}}, false,
			"100.96.0.0-100.111.255.255=wg0"},
		{"adjacent same owner merges", []TunnelSources{{"gre-a", pp("10.20.0.0/16", "10.21.0.0/16")}}, false,
			"10.20.0.0-10.21.255.255=gre-a"},
		{"shared prefix", []TunnelSources{{"gre-b", pp("10.20.0.0/16")}, {"gre-a", pp("10.20.0.0/16", "10.21.0.0/16")}}, false,
			"10.20.0.0-10.20.255.255=gre-a,gre-b 10.21.0.0-10.21.255.255=gre-a"},
		{"hole punched by another owner", []TunnelSources{{"wg0", pp("10.0.0.0/8")}, {"gre-a", pp("10.20.0.0/16")}}, false,
			"10.0.0.0-10.19.255.255=wg0 10.20.0.0-10.20.255.255=gre-a,wg0 10.21.0.0-10.255.255.255=wg0"},
		{"default route ignored", []TunnelSources{{"wg0", pp("0.0.0.0/0", "::/0")}}, false, ""},
		{"top of the space", []TunnelSources{{"x", pp("255.255.255.0/24")}}, false, "255.255.255.0-255.255.255.255=x"},
		{"family filter", []TunnelSources{{"wg0", pp("100.96.0.0/12", "fd00::/64")}}, true,
			"fd00::-fd00::ffff:ffff:ffff:ffff=wg0"},
		{"no interface", []TunnelSources{{"", pp("10.0.0.0/8")}}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range ownedSegments(tc.in, tc.v6) {
				got = append(got, fmt.Sprintf("%s-%s=%s", s.lo, s.hi, s.owners))
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("got  %s\nwant %s", g, tc.want)
			}
		})
	}
}

// dialFrom reports whether a TCP connection from a, bound to the local
// address src, to addr succeeds.
func dialFrom(n *testNet, src, addr string) bool {
	ok := false
	_ = n.a.Do(func() error {
		d := net.Dialer{Timeout: 700 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}

// TestKernelAntiSpoof: r2 is a "tunnel" that owns 10.3.0.0/24 and
// fd03::/64. The same client address reaches b through r2 but not when
// it arrives on r0, whatever the rules say, and the drop is counted.
func TestKernelAntiSpoof(t *testing.T) {
	n := newTestNet(t)
	rs, err := CompileRules(&Config{Rules: []Rule{{ID: "web", Expression: "tcp.dstport == 80", Action: "allow"}}})
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Rules: rs, Tunnels: []TunnelSources{{Interface: "r2",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24"), netip.MustParsePrefix("fd03::/64")}}}}
	if err := n.r.Do(func() error { return n.tbl.Apply(Compile(spec)) }); err != nil {
		t.Fatal(err)
	}
	n.nftList(t)
	for _, host := range []string{"10.2.0.2:80", "[fd02::2]:80"} {
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
	// a routes b through a0 → r0: the tunnel's addresses arrive forged.
	for _, c := range []struct {
		src, dst string
		want     bool
	}{
		{"10.1.0.2", "10.2.0.2:80", true},
		{"fd01::2", "[fd02::2]:80", true},
		{"10.3.0.2", "10.2.0.2:80", false},
		{"fd03::2", "[fd02::2]:80", false},
	} {
		if got := dialFrom(n, c.src, c.dst); got != c.want {
			t.Errorf("from %s through r0 to %s: connected %v, want %v", c.src, c.dst, got, c.want)
		}
	}
	spoofed := func() uint64 {
		var cs Counts
		if err := n.r.Do(func() (err error) { cs, err = n.tbl.ReadCounts(); return err }); err != nil {
			t.Fatal(err)
		}
		return cs.Spoofed["r2"].Packets
	}
	if got := spoofed(); got < 2 {
		t.Errorf("spoofed packets counted for r2: %d, want at least the 2 SYNs", got)
	}
	// Through the tunnel that owns them, the same addresses pass.
	for _, r := range [][]string{{"10.2.0.2/32", "10.3.0.1"}, {"fd02::2/128", "fd03::1"}} {
		if err := n.a.Route(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	before := spoofed()
	for _, c := range [][2]string{{"10.3.0.2", "10.2.0.2:80"}, {"fd03::2", "[fd02::2]:80"}} {
		if !dialFrom(n, c[0], c[1]) {
			t.Errorf("from %s through r2 to %s: blocked, want connected", c[0], c[1])
		}
	}
	if got := spoofed(); got != before {
		t.Errorf("spoof counter moved from %d to %d for traffic through its own tunnel", before, got)
	}
}

// TestKernelRateLimitFullMeter: with the meter full, a new source is
// dropped, never let through unmetered.
func TestKernelRateLimitFullMeter(t *testing.T) {
	n := newTestNet(t)
	rs, err := CompileRules(&Config{Rules: []Rule{{ID: "ping-limit", Expression: "icmp.type == 8",
		Action: "rate_limit", Rate: Rate{Packets: 100, Unit: "second"}}}})
	if err != nil {
		t.Fatal(err)
	}
	p := Compile(Spec{Rules: rs})
	for i := range p.Sets {
		if p.Sets[i].Dynamic {
			p.Sets[i].Size = 1 // one source fills it
		}
	}
	if err := n.r.Do(func() error { return n.tbl.Apply(p) }); err != nil {
		t.Fatal(err)
	}
	if err := n.a.AddAddr("a0", "10.1.0.3/24"); err != nil {
		t.Fatal(err)
	}
	ping := func(src string) int {
		out, _ := n.a.Exec(context.Background(), "ping", "-n", "-q", "-c", "5", "-i", "0.05", "-W", "1", "-I", src, "10.2.0.2")
		return pingReceived(string(out))
	}
	if got := ping("10.1.0.2"); got != 5 {
		t.Fatalf("first source: %d of 5 replies within the rate, want 5", got)
	}
	if got := ping("10.1.0.3"); got != 0 {
		t.Errorf("second source with the meter full: %d of 5 replies, want 0 (dropped, not accepted)", got)
	}
	var cs Counts
	if err := n.r.Do(func() (err error) { cs, err = n.tbl.ReadCounts(); return err }); err != nil {
		t.Fatal(err)
	}
	if got := cs.RateDropped["ping-limit"].Packets; got < 5 {
		t.Errorf("rate_limit drops counted: %d, want >= 5", got)
	}
}

func TestIntersectIntervals(t *testing.T) {
	iv := func(lo, hi string) interval {
		return interval{netip.MustParseAddr(lo).AsSlice(), netip.MustParseAddr(hi).AsSlice()}
	}
	for _, tc := range []struct {
		name string
		a, b []interval
		want string
	}{
		{"empty scope", []interval{iv("10.0.0.1", "10.0.0.1")}, nil, ""},
		{"inside", []interval{iv("100.96.0.10", "100.96.0.10")}, []interval{iv("100.96.0.0", "100.111.255.255")}, "100.96.0.10-100.96.0.10"},
		{"everything cut to the scope", []interval{iv("0.0.0.0", "255.255.255.255")},
			[]interval{iv("10.0.0.0", "10.0.0.255"), iv("100.96.0.0", "100.111.255.255")},
			"10.0.0.0-10.0.0.255 100.96.0.0-100.111.255.255"},
		{"straddling", []interval{iv("10.0.0.200", "10.0.1.5"), iv("10.0.2.0", "10.0.2.0")},
			[]interval{iv("10.0.0.0", "10.0.0.255"), iv("10.0.1.4", "10.0.2.0")},
			"10.0.0.200-10.0.0.255 10.0.1.4-10.0.1.5 10.0.2.0-10.0.2.0"},
		{"outside", []interval{iv("192.0.2.1", "192.0.2.1")}, []interval{iv("10.0.0.0", "10.0.0.255")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range intersectIntervals(tc.a, tc.b) {
				got = append(got, formatValue(r.lo, kindAddr)+"-"+formatValue(r.hi, kindAddr))
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("got  %s\nwant %s", g, tc.want)
			}
		})
	}
}

// TestKernelIdentityBoundToTunnel: with r2 the identity interface, owning
// 10.3.0.0/24, an identity holds for its address arriving on r2 only; its
// other address (10.1.0.2, which no tunnel owns, like a peer allowed
// 0.0.0.0/0) carries no identity.
func TestKernelIdentityBoundToTunnel(t *testing.T) {
	n := newTestNet(t)
	rs, err := CompileRules(&Config{Rules: []Rule{{ID: "no-interns",
		Expression: `tcp.dstport == 443 and identity.groups contains "interns"`, Action: "block"}}})
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Rules: rs, IdentityInterface: "r2", Tunnels: []TunnelSources{{Interface: "r2",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}}}}
	ids := []Identity{{Email: "intern@corp.example", Groups: []string{"interns"},
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.3.0.2/32"), netip.MustParsePrefix("10.1.0.2/32")}}}
	if err := n.r.Do(func() error {
		if err := n.tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return n.tbl.Apply(Compile(spec))
	}); err != nil {
		t.Fatal(err)
	}
	if list := n.nftList(t); strings.Contains(list, "10.1.0.2") {
		t.Errorf("an address outside the identity interface's range is in an identity set:\n%s", list)
	}
	l, err := n.b.Listen("tcp", "10.2.0.2:443")
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
	if !dialFrom(n, "10.1.0.2", "10.2.0.2:443") {
		t.Error("10.1.0.2 through r0 was taken for the intern (blocked), want no identity (allowed)")
	}
	if err := n.a.Route("10.2.0.2/32", "10.3.0.1"); err != nil {
		t.Fatal(err)
	}
	if dialFrom(n, "10.3.0.2", "10.2.0.2:443") {
		t.Error("the intern through r2 reached port 443, want blocked")
	}
	// The identity set follows UpdateIdentities within the same scope.
	ids[0].Addrs = append(ids[0].Addrs, netip.MustParsePrefix("0.0.0.0/0"))
	if err := n.r.Do(func() error { return n.tbl.UpdateIdentities(ids) }); err != nil {
		t.Fatal(err)
	}
	if _, err := n.a.IP("route", "del", "10.2.0.2/32"); err != nil {
		t.Fatal(err)
	}
	if !dialFrom(n, "10.1.0.2", "10.2.0.2:443") {
		t.Error("with an identity allowed 0.0.0.0/0, 10.1.0.2 through r0 got the identity, want none")
	}
}
