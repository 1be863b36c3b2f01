//go:build linux

package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/site"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newSite runs a site-to-site manager with cfg in ns.
func newSite(t testing.TB, ns *netlab.NS, cfg site.Config) *site.Manager {
	t.Helper()
	for i := range cfg.GRE {
		cfg.GRE[i].SetDefaults()
		cfg.GRE[i].HealthCheck.SetDefaults()
	}
	var m *site.Manager
	must(t, ns.Do(func() error {
		var err error
		if m, err = site.New(context.Background(), site.Options{Logger: testLogger(t)}); err != nil {
			return err
		}
		return m.Set(cfg)
	}))
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close site in %s: %v", ns, err)
		}
	})
	return m
}

// newSpeaker runs edgegw's BGP speaker with cfg in ns.
func newSpeaker(t testing.TB, ns *netlab.NS, sink Sink, cfg Config) *Manager {
	t.Helper()
	return newSpeakerOpts(t, ns, Options{Logger: testLogger(t), Sink: sink}, cfg)
}

func newSpeakerOpts(t testing.TB, ns *netlab.NS, opts Options, cfg Config) *Manager {
	t.Helper()
	cfg.SetDefaults()
	var errs []string
	cfg.Validate(func(f, msg string) { errs = append(errs, f+": "+msg) })
	if len(errs) > 0 {
		t.Fatalf("config: %s", strings.Join(errs, "; "))
	}
	var m *Manager
	must(t, ns.Do(func() error {
		var err error
		if m, err = New(context.Background(), opts); err != nil {
			return err
		}
		return m.Set(cfg)
	}))
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close bgp: %v", err)
		}
	})
	return m
}

// neighbor returns the named neighbor's status.
func neighbor(m *Manager, name string) NeighborStatus {
	for _, n := range m.Status().Neighbors {
		if n.Name == name {
			return n
		}
	}
	return NeighborStatus{}
}

// bird runs BIRD 2 in ns with conf, its socket, pid file and log in a
// temporary directory; it returns the control socket for birdc.
func bird(t testing.TB, ns *netlab.NS, conf string) string {
	t.Helper()
	bin := testkit.NeedTool(t, "bird", "bird2")
	testkit.NeedTool(t, "birdc", "bird2")
	dir := t.TempDir()
	cf := filepath.Join(dir, "bird.conf")
	must(t, os.WriteFile(cf, []byte(conf), 0o600))
	sock := filepath.Join(dir, "bird.ctl")
	p, err := ns.Start(bin, "-f", "-c", cf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	must(t, err)
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("bird in %s:\n%s", ns, p.Output())
		}
	})
	testkit.Eventually(t, 10*time.Second, "bird's control socket", func() error {
		_, err := os.Stat(sock)
		return err
	})
	return sock
}

func birdc(t testing.TB, ns *netlab.NS, sock string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(t.Context(), "birdc", append([]string{"-s", sock}, args...)...)
	if err != nil {
		t.Fatalf("birdc %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// routeIn returns `ip route show <prefix> proto 237` in ns.
func routeIn(t testing.TB, ns *netlab.NS, prefix string) string {
	t.Helper()
	out, err := ns.IP("-4", "route", "show", prefix, "proto", "237")
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// branchTopology is office LAN ⇄ gw ⇄ WAN ⇄ branch router (BIRD) ⇄
// branch LAN, with one GRE tunnel, gre1, between gw and the branch:
//
//	lan 10.10.0.2 ─ 10.10.0.1 gw 203.0.113.10 ─ wan ─ 198.51.100.20 br 10.20.0.1 ─ 10.20.0.2 blan
//	gre1: 10.200.1.0/31 (gw) ⇄ 10.200.1.1/31 (br)
type branchTopology struct {
	lan, gw, wan, br, blan *netlab.NS
	gwSite                 *site.Manager
}

func newBranchTopology(t testing.TB) *branchTopology { return newTopology(t, false) }

// newTopology builds the branch topology; with two, the branch has a
// second public address, 198.51.100.21, and a second tunnel, gre2
// (10.200.2.0/31 ⇄ 10.200.2.1/31), and routes the office prefix back
// through its tunnels statically (bgre1 first), as in tunnel/site's tests.
func newTopology(t testing.TB, two bool) *branchTopology {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	x := &branchTopology{}
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
	for _, ns := range []*netlab.NS{x.gw, x.wan, x.br} {
		must(t, ns.Sysctl("net.ipv4.ip_forward", "1"))
		must(t, ns.Sysctl("net.ipv4.conf.all.rp_filter", "0"))
		must(t, ns.Sysctl("net.ipv4.conf.default.rp_filter", "0"))
	}
	tun := func(name, local, remote, addr, hcType string) gre.Config {
		return gre.Config{Name: name, Local: netip.MustParseAddr(local), Remote: netip.MustParseAddr(remote),
			Address: netip.MustParsePrefix(addr), HealthCheck: tunnel.HealthCheck{Rate: "high", Type: hcType}}
	}
	// No routes configured on the office side: BGP brings them.
	gwCfg := site.Config{GRE: []gre.Config{tun("gre1", "203.0.113.10", "198.51.100.20", "10.200.1.0/31", "reply")}}
	brCfg := site.Config{GRE: []gre.Config{tun("bgre1", "198.51.100.20", "203.0.113.10", "10.200.1.1/31", "request")}}
	if two {
		must(t, x.br.AddAddr("eth0", "198.51.100.21/24"))
		gwCfg.GRE = append(gwCfg.GRE, tun("gre2", "203.0.113.10", "198.51.100.21", "10.200.2.0/31", "reply"))
		brCfg.GRE = append(brCfg.GRE, tun("bgre2", "198.51.100.21", "203.0.113.10", "10.200.2.1/31", "request"))
		back := func(via string, prio int) tunnel.Route {
			r := tunnel.Route{Prefix: netip.MustParsePrefix("10.10.0.0/16"), Via: via, Priority: prio}
			r.SetDefaults()
			return r
		}
		brCfg.Routes = []tunnel.Route{back("bgre1", 100), back("bgre2", 200)}
	}
	x.gwSite = newSite(t, x.gw, gwCfg)
	newSite(t, x.br, brCfg)
	return x
}

// branchBird is the branch router's configuration: it announces its
// connected LAN networks (eth1's) and, to test the
// import policy, a default route and a prefix outside the branch's range;
// it installs what edgegw announces into its kernel.
const branchBird = `
router id 198.51.100.20;
protocol device { scan time 1; }
protocol direct { ipv4; interface "eth1"; }
protocol static { ipv4; route 0.0.0.0/0 blackhole; route 10.99.0.0/16 blackhole; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; }
protocol bgp edgegw {
	local 10.200.1.1 as 65020;
	neighbor 10.200.1.0 as 65000;
	hold time 3;
	connect retry time 1;
	error wait time 1, 5;
	ipv4 { import all; export where source ~ [RTS_DEVICE, RTS_STATIC]; };
}
`

func branchSpeakerConfig() Config {
	return Config{
		ASN: 65000, RouterID: netip.MustParseAddr("203.0.113.10"),
		Announce: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")},
		Neighbors: []Neighbor{{
			Name: "branch1", Address: netip.MustParseAddr("10.200.1.1"), RemoteAS: 65020, Tunnel: "gre1",
			Passive: true, HoldTime: 3,
			Import: ImportPolicy{Prefixes: []PrefixRange{{Prefix: netip.MustParsePrefix("10.20.0.0/16"), MaxLength: 24}}},
		}},
	}
}

// TestBIRDBranchOverGRE: a BIRD branch router peers with edgegw over a
// GRE tunnel. Its LAN becomes a route through the tunnel that the office
// LAN reaches (and the branch learns the office prefix the same way);
// its default route and a prefix outside the import range are refused; a
// subnet the branch adds is reachable without touching edgegw; reloads
// keep an unchanged session and withdraw a removed neighbor's routes; a
// WAN cut ends the session and withdraws the branch's routes, and the
// import range's unreachable guard refuses the branch's traffic rather
// than leak it to the WAN.
func TestBIRDBranchOverGRE(t *testing.T) {
	x := newBranchTopology(t)
	sock := bird(t, x.br, branchBird)
	m := newSpeaker(t, x.gw, x.gwSite, branchSpeakerConfig())

	testkit.Eventually(t, 30*time.Second, "branch LAN routed through gre1", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24"); !strings.Contains(got, "dev gre1") {
			return fmt.Errorf("route 10.20.0.0/24: %q; bgp: %+v", got, neighbor(m, "branch1"))
		}
		return nil
	})
	testkit.Eventually(t, 30*time.Second, "office LAN reaches branch LAN", func() error { return x.lan.Ping("10.20.0.2") })

	n := neighbor(m, "branch1")
	if n.State != "established" || n.Received != 3 || n.Accepted != 1 || n.Advertised != 1 {
		t.Errorf("neighbor status %+v: want established, received 3 (LAN, default, 10.99/16), accepted 1, advertised 1", n)
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}
	if err := testutil.CollectAndCompare(m, strings.NewReader(`
# HELP edgegw_bgp_session_up 1 if the BGP session with the neighbor is established.
# TYPE edgegw_bgp_session_up gauge
edgegw_bgp_session_up{neighbor="branch1"} 1
`), "edgegw_bgp_session_up"); err != nil {
		t.Error(err)
	}
	for _, p := range []string{"0.0.0.0/0", "10.99.0.0/16"} {
		if got := routeIn(t, x.gw, p); got != "" {
			t.Errorf("%s was refused by the import policy but is routed: %q", p, got)
		}
	}
	if got := birdc(t, x.br, sock, "show", "route", "for", "10.10.0.1"); !strings.Contains(got, "10.10.0.0/16") || !strings.Contains(got, "AS65000") {
		t.Errorf("bird did not learn the office prefix from edgegw:\n%s", got)
	}

	// The branch adds a subnet; edgegw's configuration stays as it is.
	must(t, x.br.AddAddr("eth1", "10.20.7.1/24"))
	testkit.Eventually(t, 30*time.Second, "the branch's new subnet reachable from the office LAN", func() error {
		if got := routeIn(t, x.gw, "10.20.7.0/24"); !strings.Contains(got, "dev gre1") {
			return fmt.Errorf("route 10.20.7.0/24: %q", got)
		}
		return x.lan.Ping("10.20.7.1")
	})

	// Reloads: the same configuration changes nothing; a removed
	// neighbor's routes go at once; put back, they come back.
	cfg := branchSpeakerConfig()
	cfg.SetDefaults()
	set := func(c Config) { t.Helper(); must(t, x.gw.Do(func() error { return m.Set(c) })) }
	set(cfg)
	if n := neighbor(m, "branch1"); n.State != "established" || n.Flaps != 0 || routeIn(t, x.gw, "10.20.0.0/24") == "" {
		t.Errorf("the same configuration disturbed the session: %+v", n)
	}
	noNeighbor := cfg
	noNeighbor.Neighbors = nil
	set(noNeighbor)
	testkit.Eventually(t, 10*time.Second, "a removed neighbor's routes withdrawn", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24") + routeIn(t, x.gw, "10.20.7.0/24"); got != "" {
			return fmt.Errorf("still routed: %q", got)
		}
		return nil
	})
	set(cfg)
	testkit.Eventually(t, 30*time.Second, "the neighbor's routes back", func() error {
		if got := routeIn(t, x.gw, "10.20.7.0/24"); !strings.Contains(got, "dev gre1") {
			return fmt.Errorf("route 10.20.7.0/24: %q", got)
		}
		return nil
	})

	// Cut the WAN: the session's hold timer (3 s) ends it, and every
	// route it brought goes, unreachable fallback included.
	if out, err := x.wan.Exec(t.Context(), "nft", "add table ip cut; add chain ip cut f { type filter hook forward priority 0; policy drop; }"); err != nil {
		t.Fatalf("cut the WAN: %v: %s", err, out)
	}
	testkit.Eventually(t, 30*time.Second, "branch routes withdrawn after the cut", func() error {
		if got := routeIn(t, x.gw, "10.20.0.0/24") + routeIn(t, x.gw, "10.20.7.0/24"); got != "" {
			return fmt.Errorf("still routed: %q (bgp %+v)", got, neighbor(m, "branch1"))
		}
		return nil
	})
	if n := neighbor(m, "branch1"); n.State == "established" || n.Flaps < 1 {
		t.Errorf("after the cut: %+v, want the session down with one flap", n)
	}
	// Nothing leaks: the import range's guard refuses the branch's
	// traffic instead of the default route taking it out of the WAN.
	if got := routeIn(t, x.gw, "10.20.0.0/16"); got != fmt.Sprintf("unreachable 10.20.0.0/16 metric %d", GuardMetric) {
		t.Errorf("guard of the import range: %q", got)
	}
	if out, err := x.gw.IP("-4", "route", "get", "10.20.0.2"); err == nil || !strings.Contains(string(out), "No route to host") {
		t.Errorf("ip route get 10.20.0.2 after the cut: %v: %s, want it refused", err, out)
	}
	must(t, m.Close())
	if got := routeIn(t, x.gw, "10.20.0.0/16"); got != "" {
		t.Errorf("Close left the guard: %q", got)
	}
}

// TestMaxPrefixTearsDown: a branch that sends more prefixes than its
// import.max_prefixes gets a Cease NOTIFICATION (BIRD's own status says
// so), none of its routes is installed, the session stays down, and
// edgegw logs why.
func TestMaxPrefixTearsDown(t *testing.T) {
	x := newBranchTopology(t)
	sock := bird(t, x.br, branchBird) // announces 3 prefixes
	var logs testkit.Buffer
	cfg := branchSpeakerConfig()
	cfg.Neighbors[0].Import.MaxPrefixes = 2
	m := newSpeakerOpts(t, x.gw, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Sink: x.gwSite}, cfg)

	testkit.Eventually(t, 30*time.Second, "BIRD told of the prefix limit", func() error {
		out := birdc(t, x.br, sock, "show", "protocols", "all", "edgegw")
		if !strings.Contains(out, "Maximum number of prefixes reached") {
			return fmt.Errorf("bird's edgegw session:\n%s", out)
		}
		return nil
	})
	testkit.Eventually(t, 10*time.Second, "edgegw logs the teardown", func() error {
		if !strings.Contains(logs.String(), "more prefixes than import.max_prefixes") {
			return fmt.Errorf("log:\n%s", logs.String())
		}
		return nil
	})
	if n := neighbor(m, "branch1"); n.State == "established" || n.Shutdown != "max_prefixes" {
		t.Errorf("neighbor %+v: want down with shutdown max_prefixes", n)
	}
	if got := routeIn(t, x.gw, "10.20.0.0/24"); got != "" {
		t.Errorf("a torn-down session's prefix is routed: %q", got)
	}
}

// branchTwoTunnels is a branch router with a session over each tunnel,
// announcing its LAN over both; the way back is the branch's static
// routes, so its kernel table is left alone.
const branchTwoTunnels = `
router id 198.51.100.20;
protocol device { scan time 1; }
protocol direct { ipv4; interface "eth1"; }
template bgp office {
	local as 65020;
	neighbor as 65000;
	connect retry time 1;
	ipv4 { import all; export where source = RTS_DEVICE; };
}
protocol bgp via1 from office { local 10.200.1.1; neighbor 10.200.1.0; }
protocol bgp via2 from office { local 10.200.2.1; neighbor 10.200.2.0; }
`

// TestFailoverKeepsHealthPenalties: a branch announces its LAN over two
// tunnels, each session's routes at its own priority. The learned routes
// carry the health checks' penalties exactly as configured routes do:
// when the primary tunnel's path is cut, its check marks it down and
// traffic moves to the second tunnel within the checks' detection time,
// long before the primary session's hold timer (30 s) would notice.
func TestFailoverKeepsHealthPenalties(t *testing.T) {
	x := newTopology(t, true)
	bird(t, x.br, branchTwoTunnels)
	cfg := branchSpeakerConfig()
	cfg.Neighbors[0].HoldTime = 30
	second := cfg.Neighbors[0]
	second.Name, second.Address, second.Tunnel, second.Priority = "branch1b", netip.MustParseAddr("10.200.2.1"), "gre2", 200
	cfg.Neighbors = append(cfg.Neighbors, second)
	m := newSpeaker(t, x.gw, x.gwSite, cfg)

	routeDev := func() string {
		out, err := x.gw.IP("-4", "route", "get", "10.20.0.2")
		if err != nil {
			return err.Error()
		}
		f := strings.Fields(string(out))
		for i := range f[:len(f)-1] {
			if f[i] == "dev" {
				return f[i+1]
			}
		}
		return string(out)
	}
	testkit.Eventually(t, 30*time.Second, "both sessions' routes installed, gre1 preferred", func() error {
		got := routeIn(t, x.gw, "10.20.0.0/24")
		if !strings.Contains(got, "dev gre1 scope link metric 100") || !strings.Contains(got, "dev gre2 scope link metric 200") {
			return fmt.Errorf("routes: %q; bgp %+v", got, m.Status().Neighbors)
		}
		if dev := routeDev(); dev != "gre1" {
			return fmt.Errorf("10.20.0.2 goes through %s", dev)
		}
		return x.lan.Ping("10.20.0.2")
	})

	cut := time.Now()
	if out, err := x.wan.Exec(t.Context(), "nft", "add table ip cut; add chain ip cut f { type filter hook forward priority 0; };"+
		"add rule ip cut f ip saddr 198.51.100.20 drop; add rule ip cut f ip daddr 198.51.100.20 drop"); err != nil {
		t.Fatalf("cut the primary: %v: %s", err, out)
	}
	testkit.Eventually(t, 20*time.Second, "traffic moves to gre2", func() error {
		if dev := routeDev(); dev != "gre2" {
			return fmt.Errorf("10.20.0.2 goes through %s; routes %q", dev, routeIn(t, x.gw, "10.20.0.0/24"))
		}
		return x.lan.Ping("10.20.0.2")
	})
	t.Logf("failover after %v", time.Since(cut))
	// The move came from the health check: the primary session is still
	// up (30 s hold time) and its route is still there, penalised.
	got := routeIn(t, x.gw, "10.20.0.0/24")
	penalised := strings.Contains(got, fmt.Sprintf("dev gre1 scope link metric %d", 100+tunnel.DegradedPenalty)) ||
		strings.Contains(got, fmt.Sprintf("dev gre1 scope link metric %d", 100+tunnel.DownPenalty))
	if n := neighbor(m, "branch1"); n.State != "established" || !penalised {
		t.Errorf("after the cut: primary session %s, routes %q: want it established with its route penalised", n.State, got)
	}
	if got := routeIn(t, x.gw, "10.20.0.0/24"); !strings.Contains(got, "dev gre2 scope link metric 200") {
		t.Errorf("after the cut: %q", got)
	}
}

// TestGracefulRestart: with graceful restart on both sides, edgegw's
// speaker stops (as at a restart) without a NOTIFICATION; the BIRD branch
// keeps the office prefix in its kernel, so it keeps forwarding toward
// the office, until edgegw is back, and then the session and the routes
// both ways return.
func TestGracefulRestart(t *testing.T) {
	x := newBranchTopology(t)
	sock := bird(t, x.br, strings.Replace(branchBird, "hold time 3;", "hold time 3;\n\tgraceful restart on;", 1))
	cfg := branchSpeakerConfig()
	cfg.Neighbors[0].GracefulRestart = 120
	m := newSpeaker(t, x.gw, x.gwSite, cfg)
	officeRoute := func() string {
		out, err := x.br.IP("-4", "route", "show", "10.10.0.0/16")
		if err != nil {
			t.Fatalf("ip route: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	testkit.Eventually(t, 30*time.Second, "office and branch routes installed", func() error {
		if routeIn(t, x.gw, "10.20.0.0/24") == "" || !strings.Contains(officeRoute(), "bgre1") {
			return fmt.Errorf("gw %q, branch %q", routeIn(t, x.gw, "10.20.0.0/24"), officeRoute())
		}
		return x.lan.Ping("10.20.0.2")
	})
	caps := birdc(t, x.br, sock, "show", "protocols", "all", "edgegw")
	if _, neighborCaps, _ := strings.Cut(caps, "Neighbor capabilities"); !strings.Contains(neighborCaps, "Graceful restart\n        Restart time: 120") &&
		!strings.Contains(strings.Join(strings.Fields(neighborCaps), " "), "Graceful restart Restart time: 120") {
		t.Errorf("edgegw did not advertise graceful restart (120 s) to BIRD:\n%s", caps)
	}

	must(t, m.Close())
	testkit.Eventually(t, 15*time.Second, "BIRD sees the session gone", func() error {
		if out := birdc(t, x.br, sock, "show", "protocols", "edgegw"); strings.Contains(out, "Established") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	out := birdc(t, x.br, sock, "show", "route", "for", "10.10.0.1", "all")
	if !strings.Contains(out, "10.10.0.0/16") || !strings.Contains(officeRoute(), "bgre1") {
		t.Errorf("during the restart the branch dropped the office prefix: bird\n%s\nkernel %q", out, officeRoute())
	}

	// edgegw is back (a new speaker, as after a restart).
	m2 := newSpeaker(t, x.gw, x.gwSite, cfg)
	testkit.Eventually(t, 30*time.Second, "session and routes back after the restart", func() error {
		if n := neighbor(m2, "branch1"); n.State != "established" || routeIn(t, x.gw, "10.20.0.0/24") == "" {
			return fmt.Errorf("%+v", n)
		}
		return x.lan.Ping("10.20.0.2")
	})
}
