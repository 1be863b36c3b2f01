//go:build linux

package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/swanbranch"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/ipsec"
	"github.com/edgegw/edgegw/tunnel/site"
)

// ipsecTopology is office LAN ⇄ gw ⇄ WAN ⇄ branch router ⇄ branch LAN
// with one IPsec tunnel, ipsec1 (10.200.3.0/31 on the gw, 10.200.3.1/31
// on the branch), and no GRE tunnel: the gw runs edgegw's site manager
// (charon with this machine's ESP backend, kernel-libipsec on kernels
// without ESP), the branch a stock strongSwan, configured route-based as
// a branch router's documentation for BGP over IPsec has it: selectors
// 0.0.0.0/0 both ways, the tunnel address on the IPsec device, routes
// from BGP, not from the IKE daemon.
//
//	lan 10.10.0.2 ─ 10.10.0.1 gw 203.0.113.10 ─ wan ─ 198.51.100.20 br 10.20.0.1 ─ 10.20.0.2 blan
type ipsecTopology struct {
	lan, gw, wan, br, blan *netlab.NS
	gwSite                 *site.Manager
	branch                 *swanbranch.Branch
	// With a second branch (newIPsecTopology's narrow): br2 and its LAN
	// blan2, behind a policy-based strongSwan on ipsec2.
	br2, blan2 *netlab.NS
}

// narrowBranchSwanctl is the second branch's swanctl.conf: policy-based,
// its LAN and tunnel address to the office's, as in tunnel/site's tests.
var narrowBranchSwanctl = swanbranch.Conn{
	Name: "gw", Local: "192.0.2.30", Remote: "203.0.113.10",
	LocalID: "ams.corp.example", RemoteID: "lon.corp.example",
	LocalTS:  []string{"10.30.0.0/16", "10.200.4.1/32"},
	RemoteTS: []string{"10.10.0.0/16", "10.200.4.0/32"},
	PSK:      "bgp-ipsec-test-psk-of-20-chars", Initiate: true,
}.Swanctl()

// wideBranchSwanctl is the branch's swanctl.conf: one child SA with
// any-to-any selectors, the route-based profile (Magic WAN's, and every
// BGP-over-IPsec guide's).
var wideBranchSwanctl = swanbranch.Conn{
	Name: "gw", Local: "198.51.100.20", Remote: "203.0.113.10",
	LocalID: "fra.corp.example", RemoteID: "lon.corp.example",
	LocalTS: []string{"0.0.0.0/0"}, RemoteTS: []string{"0.0.0.0/0"},
	PSK: "bgp-ipsec-test-psk-of-20-chars", Initiate: true,
}.Swanctl()

// newIPsecTopology builds the topology; with narrow, a second branch
// (192.0.2.30, LAN 10.30.0.0/24) on a second IPsec tunnel, ipsec2
// (10.200.4.0/31), which carries no BGP: its selectors are its routed
// prefix, 10.30.0.0/16, on the gw's same userspace-ESP device.
func newIPsecTopology(t testing.TB, narrow bool) *ipsecTopology {
	testkit.NeedRoot(t)
	swanbranch.Need(t, ipsec.DefaultCharon, swanbranch.BackendLibipsec)
	lab := netlab.NewT(t)
	x := &ipsecTopology{}
	for _, n := range []struct {
		p    **netlab.NS
		name string
	}{{&x.lan, "lan"}, {&x.gw, "gw"}, {&x.wan, "wan"}, {&x.br, "br"}, {&x.blan, "blan"}} {
		ns, err := lab.NS(n.name)
		must(t, err)
		*n.p = ns
	}
	must(t, lab.Link(x.lan, "eth0", "10.10.0.2/24", x.gw, "eth1", "10.10.0.1/24"))
	must(t, lab.Link(x.gw, "eth0", "203.0.113.10/24", x.wan, "togw", "203.0.113.1/24"))
	must(t, lab.Link(x.br, "eth0", "198.51.100.20/24", x.wan, "tobr", "198.51.100.1/24"))
	must(t, lab.Link(x.br, "eth1", "10.20.0.1/24", x.blan, "eth0", "10.20.0.2/24"))
	must(t, x.lan.Route("default", "10.10.0.1"))
	must(t, x.blan.Route("default", "10.20.0.1"))
	must(t, x.gw.Route("default", "203.0.113.1"))
	must(t, x.br.Route("default", "198.51.100.1"))
	routers := []*netlab.NS{x.gw, x.wan, x.br}
	if narrow {
		var err error
		x.br2, err = lab.NS("br2")
		must(t, err)
		x.blan2, err = lab.NS("blan2")
		must(t, err)
		must(t, lab.Link(x.br2, "eth0", "192.0.2.30/24", x.wan, "tobr2", "192.0.2.1/24"))
		must(t, lab.Link(x.br2, "eth1", "10.30.0.1/24", x.blan2, "eth0", "10.30.0.2/24"))
		must(t, x.blan2.Route("default", "10.30.0.1"))
		must(t, x.br2.Route("default", "192.0.2.1"))
		must(t, x.br2.AddAddr("lo", "10.200.4.1/32"))
		routers = append(routers, x.br2)
	}
	for _, ns := range routers {
		must(t, ns.Sysctl("net.ipv4.ip_forward", "1"))
		must(t, ns.Sysctl("net.ipv4.conf.all.rp_filter", "0"))
		must(t, ns.Sysctl("net.ipv4.conf.default.rp_filter", "0"))
	}

	// The gw: no route configured; BGP brings them. ipsec1 carries BGP,
	// so it is wide (route-based).
	state := t.TempDir()
	psk := filepath.Join(state, "fra.psk")
	must(t, os.WriteFile(psk, []byte("bgp-ipsec-test-psk-of-20-chars\n"), 0o600))
	sec := ipsec.Config{Name: "ipsec1", Local: netip.MustParseAddr("203.0.113.10"), Remote: netip.MustParseAddr("198.51.100.20"),
		LocalID: "lon.corp.example", RemoteID: "fra.corp.example", PSKFile: psk, Address: netip.MustParsePrefix("10.200.3.0/31"),
		DPD: 2 * time.Second, HealthCheck: tunnel.HealthCheck{Rate: "high"}}
	sec.SetDefaults()
	sec.HealthCheck.SetDefaults()
	cfg := site.Config{IPsec: []ipsec.Config{sec}, Wide: []string{"ipsec1"}}
	if narrow {
		sec2 := sec
		sec2.Name, sec2.Remote, sec2.RemoteID, sec2.Address = "ipsec2", netip.MustParseAddr("192.0.2.30"), "ams.corp.example",
			netip.MustParsePrefix("10.200.4.0/31")
		cfg.IPsec = append(cfg.IPsec, sec2)
		r := tunnel.Route{Prefix: netip.MustParsePrefix("10.30.0.0/16"), Via: "ipsec2"}
		r.SetDefaults()
		cfg.Routes = []tunnel.Route{r}
		// What edgegw check would say of it: nothing.
		site.CheckWideIPsec(func(f, m string) { t.Errorf("config check: %s: %s", f, m) }, cfg,
			map[string][]site.WideRange{"ipsec1": {{Prefix: netip.MustParsePrefix("10.20.0.0/16"), MaxLength: 24}}})
	}
	must(t, x.gw.Do(func() error {
		var err error
		if x.gwSite, err = site.New(context.Background(), site.Options{Logger: testLogger(t), StateDir: state}); err != nil {
			return err
		}
		return x.gwSite.Set(cfg)
	}))
	t.Cleanup(func() {
		if err := x.gwSite.Close(); err != nil {
			t.Errorf("close the gw's site manager: %v", err)
		}
	})

	// The branch: strongSwan with userspace ESP (the only choice on a
	// kernel without ESP), route-based: its own table-220 routes would
	// send every packet, the branch LAN's included, into the tunnel, so
	// its policy rule goes, as install_routes = no would have it; the
	// tunnel address goes on charon's TUN and BGP brings the routes.
	x.branch = swanbranch.Start(t, x.br, ipsec.DefaultCharon, swanbranch.BackendLibipsec, t.TempDir(), wideBranchSwanctl)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("branch charon:\n%s", x.branch.Log())
		}
	})
	if out, err := x.br.IP("rule", "del", "table", "220"); err != nil {
		t.Fatalf("ip rule del table 220: %v: %s", err, out)
	}
	testkit.Eventually(t, 10*time.Second, "the branch's IPsec device", func() error {
		if out, err := x.br.IP("link", "show", "ipsec0"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := x.br.IP("addr", "add", "10.200.3.1/31", "dev", "ipsec0"); err != nil {
		t.Fatalf("address on the branch's ipsec0: %v: %s", err, out)
	}
	if out, err := x.br.IP("link", "set", "ipsec0", "up"); err != nil {
		t.Fatalf("ipsec0 up: %v: %s", err, out)
	}
	want := []string{"ipsec1"}
	if narrow {
		b2 := swanbranch.Start(t, x.br2, ipsec.DefaultCharon, swanbranch.BackendLibipsec, t.TempDir(), narrowBranchSwanctl)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("second branch charon:\n%s", b2.Log())
			}
		})
		want = append(want, "ipsec2")
	}
	for _, name := range want {
		testkit.Eventually(t, 60*time.Second, name+" up", func() error {
			if ts := ipsecStatus(x.gwSite, name); ts.IPsec != nil && ts.IPsec.Up {
				return nil
			}
			return fmt.Errorf("%s not up: %+v", name, x.gwSite.Status().Tunnels)
		})
	}
	return x
}

// ipsecStatus is the named tunnel's status on m.
func ipsecStatus(m *site.Manager, name string) site.TunnelStatus {
	for _, ts := range m.Status().Tunnels {
		if ts.Name == name {
			return ts
		}
	}
	return site.TunnelStatus{}
}

// ipsecSpeakerConfig is the gw's BGP: the branch's router on the far end
// of ipsec1, its LAN range accepted.
func ipsecSpeakerConfig() Config {
	cfg := branchSpeakerConfig()
	cfg.Neighbors[0].Address = netip.MustParseAddr("10.200.3.1")
	cfg.Neighbors[0].Tunnel = "ipsec1"
	return cfg
}

// TestBIRDBranchOverIPsec: a BIRD branch router behind a stock
// strongSwan (wide selectors, as route-based branches have them) peers
// with edgegw over the IPsec tunnel, on this machine with userspace ESP
// on both ends. The branch LAN becomes a route through the tunnel that
// the office LAN reaches, the branch learns the office prefix the same
// way, and a subnet the branch adds is reachable without touching
// edgegw's configuration: wide selectors carry prefixes nobody
// configured.
func TestBIRDBranchOverIPsec(t *testing.T) {
	x := newIPsecTopology(t, false)
	sock := bird(t, x.br, strings.ReplaceAll(branchBird, "10.200.1.", "10.200.3."))
	m := newSpeaker(t, x.gw, x.gwSite, ipsecSpeakerConfig())

	testkit.Eventually(t, 60*time.Second, "branch LAN routed through ipsec1", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24"); !strings.Contains(got, "dev ipsec") {
			return fmt.Errorf("route 10.20.0.0/24: %q; bgp: %+v", got, neighbor(m, "branch1"))
		}
		return nil
	})
	testkit.Eventually(t, 30*time.Second, "office LAN reaches branch LAN over IPsec", func() error { return x.lan.Ping("10.20.0.2") })
	n := neighbor(m, "branch1")
	if n.State != "established" || n.Accepted != 1 || n.Advertised != 1 {
		t.Errorf("neighbor status %+v: want established, accepted 1 (the LAN), advertised 1", n)
	}
	if got := birdc(t, x.br, sock, "show", "route", "for", "10.10.0.1"); !strings.Contains(got, "10.10.0.0/16") || !strings.Contains(got, "AS65000") {
		t.Errorf("bird did not learn the office prefix from edgegw:\n%s", got)
	}
	// The traffic went through the SA, not around it (the counters are
	// read from charon every 2 s).
	testkit.Eventually(t, 10*time.Second, "ipsec1's SA counts the traffic", func() error {
		if ts := ipsecStatus(x.gwSite, "ipsec1"); ts.TxPackets == 0 || ts.RxPackets == 0 {
			return fmt.Errorf("no packets counted through ipsec1: %+v", ts)
		}
		return nil
	})

	// The branch adds a subnet; edgegw's configuration stays as it is,
	// and so do the SAs: their selectors already hold it.
	must(t, x.br.AddAddr("eth1", "10.20.7.1/24"))
	testkit.Eventually(t, 30*time.Second, "the branch's new subnet reachable from the office LAN", func() error {
		if got := routeIn(t, x.gw, "10.20.7.0/24"); !strings.Contains(got, "dev ipsec") {
			return fmt.Errorf("route 10.20.7.0/24: %q", got)
		}
		return x.lan.Ping("10.20.7.1")
	})
}

// TestFRRBranchOverIPsec: FRR's bgpd as the branch router behind the
// same strongSwan branch. It announces the branch LAN (a network
// statement; no zebra, so the way back to the office is the branch's
// static route through its IPsec device), which the office LAN then
// reaches through edgegw's route over the IPsec tunnel; FRR's own
// `show bgp` has the office prefix from edgegw's AS.
func TestFRRBranchOverIPsec(t *testing.T) {
	x := newIPsecTopology(t, false)
	vtysh := frr(t, x.br, `
frr defaults traditional
hostname branch
log stdout
router bgp 65020
 bgp router-id 198.51.100.20
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.200.3.0 remote-as 65000
 neighbor 10.200.3.0 update-source 10.200.3.1
 neighbor 10.200.3.0 timers 1 3
 neighbor 10.200.3.0 timers connect 1
 address-family ipv4 unicast
  network 10.20.0.0/24
 exit-address-family
`)
	if out, err := x.br.IP("route", "add", "10.10.0.0/16", "via", "10.200.3.0", "dev", "ipsec0"); err != nil {
		t.Fatalf("the branch's way back: %v: %s", err, out)
	}
	m := newSpeaker(t, x.gw, x.gwSite, ipsecSpeakerConfig())

	testkit.Eventually(t, 60*time.Second, "branch LAN routed through ipsec1", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24"); !strings.Contains(got, "dev ipsec") {
			return fmt.Errorf("route 10.20.0.0/24: %q; bgp: %+v", got, neighbor(m, "branch1"))
		}
		return nil
	})
	testkit.Eventually(t, 30*time.Second, "office LAN reaches branch LAN over IPsec", func() error { return x.lan.Ping("10.20.0.2") })
	testkit.Eventually(t, 10*time.Second, "FRR has the office prefix from edgegw", func() error {
		out := vtysh("show bgp ipv4 unicast 10.10.0.0/16")
		if !strings.Contains(out, "65000") || !strings.Contains(out, "10.200.3.0") {
			return fmt.Errorf("show bgp ipv4 unicast 10.10.0.0/16:\n%s", out)
		}
		return nil
	})
	if n := neighbor(m, "branch1"); n.State != "established" || n.Accepted != 1 {
		t.Errorf("neighbor status %+v: want established, accepted 1", n)
	}
}

// TestWideAndNarrowIPsecShareDevice: with userspace ESP every IPsec
// tunnel shares charon's one device, and the child SA whose selector is
// the most specific for a packet's destination takes it. A wide
// (BGP-carrying) tunnel beside a policy-based one, as edgegw check
// allows them (the learned range outside the other's selectors), each
// carry their own branch's traffic: the learned prefix leaves through
// the wide SA, the configured one through the narrow SA, and neither
// through the other's (each SA's packet counters say so).
func TestWideAndNarrowIPsecShareDevice(t *testing.T) {
	x := newIPsecTopology(t, true)
	bird(t, x.br, strings.ReplaceAll(branchBird, "10.200.1.", "10.200.3."))
	newSpeaker(t, x.gw, x.gwSite, ipsecSpeakerConfig())
	testkit.Eventually(t, 60*time.Second, "office LAN reaches both branches", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24"); !strings.Contains(got, "dev ipsec") {
			return fmt.Errorf("route 10.20.0.0/24: %q", got)
		}
		if err := x.lan.Ping("10.20.0.2"); err != nil {
			return err
		}
		return x.lan.Ping("10.30.0.2")
	})

	// Each branch's traffic through its own SA: send a burst to one
	// branch and see only that tunnel's counters move (the health
	// probes, 4 a second, and BGP's keepalives move both a little).
	// Charon's counters are listed every 2 s: the counts before the
	// burst are a fresh listing (the probes change both counters in
	// each), those after the first listing that holds the whole burst.
	const burst = 200
	for _, c := range []struct{ dst, via, other string }{{"10.20.0.2", "ipsec1", "ipsec2"}, {"10.30.0.2", "ipsec2", "ipsec1"}} {
		tx := func() (via, other uint64) {
			return ipsecStatus(x.gwSite, c.via).TxPackets, ipsecStatus(x.gwSite, c.other).TxPackets
		}
		stale0, stale1 := tx()
		var via0, other0 uint64
		testkit.Eventually(t, 20*time.Second, "a fresh listing of the SAs' counters", func() error {
			via0, other0 = tx()
			if via0 == stale0 || other0 == stale1 {
				return fmt.Errorf("counters unchanged since %d, %d", stale0, stale1)
			}
			return nil
		})
		if out, err := x.lan.Exec(t.Context(), "ping", "-q", "-c", fmt.Sprint(burst), "-i", "0.005", "-W", "2", c.dst); err != nil {
			t.Fatalf("ping %s: %v: %s", c.dst, err, out)
		}
		var via1, other1 uint64
		testkit.Eventually(t, 20*time.Second, c.via+" counts the burst", func() error {
			via1, other1 = tx()
			if via1-via0 < burst {
				return fmt.Errorf("%s sent %d since the burst began", c.via, via1-via0)
			}
			return nil
		})
		t.Logf("burst of %d to %s: %s sent %d, %s sent %d", burst, c.dst, c.via, via1-via0, c.other, other1-other0)
		if other1-other0 >= burst/2 {
			t.Errorf("a burst of %d to %s: %s sent %d, %s sent %d; want it all through %s", burst, c.dst, c.via, via1-via0, c.other, other1-other0, c.via)
		}
	}
}
