package ha

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

const (
	wanVIP6 = "2001:db8:1::10/64"
	lanVIP6 = "fd00:1::1/64"
	srv6    = "2001:db8:1::100"
)

// wantAddr checks whether ns holds prefix on dev.
func wantAddr(ns *netlab.NS, dev, prefix string, want bool) func() error {
	return func() error {
		out, err := ns.IP("addr", "show", "dev", dev)
		if err != nil {
			return err
		}
		if has := strings.Contains(string(out), prefix); has != want {
			return fmt.Errorf("%s has %s on %s: %v, want %v", ns, prefix, dev, has, want)
		}
		return nil
	}
}

// TestVRRPv3IPv6 runs the pair on VRRPv3 with 0.3 s adverts and IPv6
// virtual addresses on both sides beside the IPv4 ones: the active node
// holds all four and routes the LAN host's IPv6 traffic to the WAN
// server; when it stops, the other takes all four (its time to do so is
// logged: a test does not assert timing) and the LAN host reaches the
// server over IPv6 and IPv4 again.
func TestVRRPv3IPv6(t *testing.T) {
	p := newPairLab(t)
	for _, step := range []struct {
		ns   *netlab.NS
		args []string
	}{
		{p.srv, []string{"-6", "addr", "add", srv6 + "/64", "dev", "br0", "nodad"}},
		{p.srv, []string{"-6", "route", "add", "fd00:1::/64", "via", strings.TrimSuffix(wanVIP6, "/64")}},
		{p.lan, []string{"-6", "addr", "add", "fd00:1::2/64", "dev", "br0", "nodad"}},
		{p.lan, []string{"-6", "route", "add", "default", "via", strings.TrimSuffix(lanVIP6, "/64")}},
	} {
		if out, err := step.ns.IP(step.args...); err != nil {
			t.Fatalf("%s: ip %v: %v: %s", step.ns, step.args, err, out)
		}
	}
	for _, n := range p.nodes {
		if err := n.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
			t.Fatal(err)
		}
	}
	v3 := func(c *Config) {
		c.VRRPVersion, c.AdvertInterval = 3, 300*time.Millisecond
		c.VirtualAddresses.WAN = append(c.VirtualAddresses.WAN, netip.MustParsePrefix(wanVIP6))
		c.VirtualAddresses.LAN = append(c.VirtualAddresses.LAN, netip.MustParsePrefix(lanVIP6))
	}
	na := p.startConfig(t, 0, 0, v3)
	defer func() { na.Close() }()
	nb := p.startConfig(t, 1, 0, v3)
	defer nb.Close()
	const deadline = 30 * time.Second
	testkit.Eventually(t, deadline, "n1 master", wantRole(na, RoleMaster))
	testkit.Eventually(t, deadline, "n2 backup", wantRole(nb, RoleBackup))
	for _, a := range []struct{ dev, prefix string }{{"wan0", wanVIP}, {"wan0", wanVIP6}, {"lan0", lanVIP}, {"lan0", lanVIP6}} {
		testkit.Eventually(t, deadline, "n1 holds "+a.prefix, wantAddr(p.nodes[0], a.dev, a.prefix, true))
		if err := wantAddr(p.nodes[1], a.dev, a.prefix, false)(); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, deadline, "LAN host reaches the server over IPv6 through n1", func() error { return p.lan.Ping(srv6) })

	start := time.Now()
	if err := na.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, deadline, "n2 master", wantRole(nb, RoleMaster))
	for _, a := range []struct{ dev, prefix string }{{"wan0", wanVIP}, {"wan0", wanVIP6}, {"lan0", lanVIP}, {"lan0", lanVIP6}} {
		testkit.Eventually(t, deadline, "n2 holds "+a.prefix, wantAddr(p.nodes[1], a.dev, a.prefix, true))
	}
	t.Logf("VRRPv3 at 0.3 s: the addresses were on n2 %v after n1 stopped", time.Since(start))
	// Usable at once: keepalived adds IPv6 virtual addresses without
	// duplicate address detection (its default; "-nodad" in the config
	// would turn DAD on), so none is tentative, unusable as a source for
	// WireGuard's handshakes, for a second after the takeover.
	for _, a := range []struct{ dev, prefix string }{{"wan0", wanVIP6}, {"lan0", lanVIP6}} {
		out, err := p.nodes[1].IP("-6", "addr", "show", "dev", a.dev)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(out), "\n") {
			if strings.Contains(line, a.prefix) && (strings.Contains(line, "tentative") || !strings.Contains(line, "nodad")) {
				t.Errorf("n2's %s after the takeover: %s", a.prefix, strings.TrimSpace(line))
			}
		}
	}
	testkit.Eventually(t, deadline, "LAN host reaches the server over IPv6 through n2", func() error { return p.lan.Ping(srv6) })
	testkit.Eventually(t, deadline, "LAN host reaches the server over IPv4 through n2", func() error { return p.lan.Ping(srvAddr) })
}
