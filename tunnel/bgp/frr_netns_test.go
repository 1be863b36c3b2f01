//go:build linux

package bgp

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// frr runs FRR's bgpd in ns with conf (no zebra: routes stay in bgpd),
// its pid file and vty socket in a temporary directory; it returns a
// function running vtysh commands against it.
func frr(t testing.TB, ns *netlab.NS, conf string) func(cmd string) string {
	t.Helper()
	bgpd := testkit.NeedTool(t, "/usr/lib/frr/bgpd", "frr")
	vtysh := testkit.NeedTool(t, "vtysh", "frr")
	dir := t.TempDir()
	cf := filepath.Join(dir, "bgpd.conf")
	must(t, os.WriteFile(cf, []byte(conf), 0o600))
	p, err := ns.Start(bgpd, "-Z", "-S", "-u", "root", "-g", "root", "-f", cf, "-i", filepath.Join(dir, "bgpd.pid"),
		"--vty_socket", dir, "-P", "0", "--log", "stdout")
	must(t, err)
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("bgpd in %s:\n%s", ns, p.Output())
		}
	})
	testkit.Eventually(t, 10*time.Second, "bgpd's vty socket", func() error {
		_, err := os.Stat(filepath.Join(dir, "bgpd.vty"))
		return err
	})
	return func(cmd string) string {
		t.Helper()
		out, err := ns.Exec(t.Context(), vtysh, "--vty_socket", dir, "-d", "bgpd", "-c", cmd)
		if err != nil {
			t.Fatalf("vtysh -c %q: %v: %s", cmd, err, out)
		}
		return string(out)
	}
}

// TestFRRISPSeesCommunitiesAndPrepends: FRR plays an ISP on the WAN
// link, with a TCP MD5 password. edgegw announces two office prefixes
// with per-prefix export rules: one carries a local-preference action
// community (standard and large), the other is prepended twice. FRR's
// own `show bgp` output must show exactly that, and must not show a
// prefix edgegw does not announce to it.
func TestFRRISPSeesCommunitiesAndPrepends(t *testing.T) {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	gw, err := lab.NS("gw")
	must(t, err)
	isp, err := lab.NS("isp")
	must(t, err)
	must(t, lab.Link(gw, "eth0", "203.0.113.10/24", isp, "eth0", "203.0.113.1/24"))

	pw := filepath.Join(t.TempDir(), "isp.key")
	must(t, os.WriteFile(pw, []byte("s3cret-md5\n"), 0o600))
	vtysh := frr(t, isp, `
frr defaults traditional
hostname isp
log stdout
router bgp 64500
 bgp router-id 203.0.113.1
 no bgp ebgp-requires-policy
 neighbor 203.0.113.10 remote-as 65000
 neighbor 203.0.113.10 password s3cret-md5
 neighbor 203.0.113.10 timers connect 1
`)
	m := newSpeaker(t, gw, nil, Config{
		ASN: 65000, RouterID: netip.MustParseAddr("203.0.113.10"),
		Announce: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.11.0.0/16"),
			netip.MustParsePrefix("10.12.0.0/16")},
		Neighbors: []Neighbor{{
			Name: "isp1", Address: netip.MustParseAddr("203.0.113.1"), RemoteAS: 64500, Passive: true, PasswordFile: pw,
			Export: []ExportRule{
				{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")},
					Communities: []string{"64500:80", "no-export"}, LargeCommunities: []string{"64500:1:80"}},
				{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.11.0.0/16")}, Prepend: 2},
			},
		}},
	})

	testkit.Eventually(t, 30*time.Second, "FRR learns both exported prefixes", func() error {
		out := vtysh("show bgp ipv4 unicast")
		if !strings.Contains(out, "10.10.0.0/16") || !strings.Contains(out, "10.11.0.0/16") {
			return fmt.Errorf("show bgp ipv4 unicast:\n%s\nedgegw: %+v", out, neighbor(m, "isp1"))
		}
		return nil
	})
	p1 := vtysh("show bgp ipv4 unicast 10.10.0.0/16")
	for _, want := range []string{"Community: 64500:80 no-export", "Large Community: 64500:1:80"} {
		if !strings.Contains(p1, want) {
			t.Errorf("10.10.0.0/16 at the ISP lacks %q:\n%s", want, p1)
		}
	}
	p2 := vtysh("show bgp ipv4 unicast 10.11.0.0/16")
	if !strings.Contains(p2, "65000 65000 65000") || strings.Contains(p2, "Community") {
		t.Errorf("10.11.0.0/16 at the ISP: want AS path 65000 65000 65000 and no communities:\n%s", p2)
	}
	if out := vtysh("show bgp ipv4 unicast"); strings.Contains(out, "10.12.0.0/16") {
		t.Errorf("10.12.0.0/16 matches no export rule of isp1 but the ISP has it:\n%s", out)
	}
	if n := neighbor(m, "isp1"); n.State != "established" || n.Advertised != 2 {
		t.Errorf("edgegw's view: %+v, want established with 2 advertised", n)
	}

	// A reload that changes only the export (inbound traffic should now
	// prefer this ISP) reaches FRR by a soft reset: the session stays.
	cfg := m.cfg
	cfg.Neighbors = slices.Clone(cfg.Neighbors)
	cfg.Neighbors[0].Export = []ExportRule{{Communities: []string{"64500:120"}}}
	must(t, gw.Do(func() error { return m.Set(cfg) }))
	testkit.Eventually(t, 30*time.Second, "FRR sees the new community on every announced prefix", func() error {
		for _, p := range []string{"10.10.0.0/16", "10.11.0.0/16", "10.12.0.0/16"} {
			out := vtysh("show bgp ipv4 unicast " + p)
			if !strings.Contains(out, "Community: 64500:120") || strings.Contains(out, "64500:80") || strings.Contains(out, "65000 65000") {
				return fmt.Errorf("%s at the ISP:\n%s", p, out)
			}
		}
		return nil
	})
	if n := neighbor(m, "isp1"); n.State != "established" || n.Flaps != 0 {
		t.Errorf("after an export change: %+v, want the session kept", n)
	}
}

// TestFRRBranchOverGRE: FRR's bgpd as the branch router over the GRE
// tunnel. Its LAN becomes a route through gre1 that the office LAN
// reaches, it learns the office prefix, and a network the branch adds
// later (configured in FRR only) is reachable from the office without
// touching edgegw. edgegw's own prefix, sent back by FRR, is refused.
func TestFRRBranchOverGRE(t *testing.T) {
	x := newTopology(t, true) // the branch routes back statically
	vtysh := frr(t, x.br, `
frr defaults traditional
hostname branch
log stdout
router bgp 65020
 bgp router-id 198.51.100.20
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.200.1.0 remote-as 65000
 neighbor 10.200.1.0 timers connect 1
 address-family ipv4 unicast
  network 10.20.0.0/24
 exit-address-family
`)
	cfg := branchSpeakerConfig()
	cfg.Neighbors[0].Import.Prefixes = nil // anything but the default route
	m := newSpeaker(t, x.gw, x.gwSite, cfg)

	testkit.Eventually(t, 30*time.Second, "office LAN reaches the FRR branch's LAN", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24"); !strings.Contains(got, "dev gre1") {
			return fmt.Errorf("route 10.20.0.0/24: %q; bgp %+v", got, neighbor(m, "branch1"))
		}
		return x.lan.Ping("10.20.0.2")
	})
	if out := vtysh("show bgp ipv4 unicast 10.10.0.0/16"); !strings.Contains(out, "65000") || !strings.Contains(out, "10.200.1.0 from 10.200.1.0") {
		t.Errorf("FRR did not learn the office prefix from edgegw:\n%s", out)
	}

	must(t, x.br.AddAddr("eth1", "10.20.9.1/24"))
	vtysh("configure terminal\nrouter bgp 65020\naddress-family ipv4 unicast\nnetwork 10.20.9.0/24\nend")
	testkit.Eventually(t, 30*time.Second, "the branch's new network reachable from the office LAN", func() error {
		if got := routeIn(t, x.gw, "10.20.9.0/24"); !strings.Contains(got, "dev gre1") {
			return fmt.Errorf("route 10.20.9.0/24: %q; FRR: %s", got, vtysh("show bgp ipv4 unicast"))
		}
		return x.lan.Ping("10.20.9.1")
	})
	// FRR sends the office prefix back (its AS path holds 65000): that
	// is received, never accepted, even with no import prefix list.
	if n := neighbor(m, "branch1"); n.Accepted != 2 || n.Received != 3 {
		t.Errorf("neighbor %+v: want 3 received, 2 accepted", n)
	}
}
