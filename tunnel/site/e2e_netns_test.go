//go:build linux

package site

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/health"
)

// end is one side running the site-to-site manager in a namespace.
type end struct {
	ns *netlab.NS
	m  *Manager
}

func newEnd(t testing.TB, ns *netlab.NS, opts Options) *end {
	e := &end{ns: ns}
	opts.Logger = testLogger(t)
	err := ns.Do(func() error {
		var err error
		e.m, err = New(context.Background(), opts)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.m.Close(); err != nil {
			t.Errorf("close %s: %v", ns, err)
		}
	})
	return e
}

// set applies cfg in the namespace (tunnels are created there).
func (e *end) set(t testing.TB, cfg Config) {
	t.Helper()
	for i := range cfg.GRE {
		cfg.GRE[i].SetDefaults()
		cfg.GRE[i].HealthCheck.SetDefaults()
	}
	for i := range cfg.Routes {
		cfg.Routes[i].SetDefaults()
	}
	if err := e.ns.Do(func() error { return e.m.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
}

func (e *end) tunnel(name string) gre.Status {
	for _, ts := range e.m.Status().Tunnels {
		if ts.Name == name {
			return ts.Status
		}
	}
	return gre.Status{}
}

func (e *end) health(name string) *health.Status {
	for _, ts := range e.m.Status().Tunnels {
		if ts.Name == name {
			return ts.Health
		}
	}
	return nil
}

// routeDev returns the interface the end's kernel routes dst through.
func (e *end) routeDev(dst string) string {
	out, err := e.ns.IP("route", "get", dst)
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

// siteToSite is office LAN ⇄ gw ⇄ WAN ⇄ branch ⇄ branch LAN with two GRE
// tunnels between gw (one public address, one shared socket) and branch
// (two public addresses):
//
//	lan 10.10.0.2 ─ 10.10.0.1 gw 203.0.113.10 ─ wan ─ 198.51.100.20/.21 branch 10.20.0.1 ─ 10.20.0.2 blan
//	gre1: 10.200.1.0/31 ⇄ 10.200.1.1 (to .20)    gre2: 10.200.2.0/31 ⇄ 10.200.2.1 (to .21)
type siteToSite struct {
	lan, gwNS, wan, branchNS, blan *netlab.NS
	gw, branch                     *end
	gwCfg, branchCfg               Config
}

func newSiteToSite(t testing.TB, prios [2]int) *siteToSite {
	return newSiteToSiteWith(t, prios, Options{})
}

// newSiteToSiteWith is newSiteToSite with the managers' options.
func newSiteToSiteWith(t testing.TB, prios [2]int, opts Options) *siteToSite {
	lab := netlab.NewT(t)
	x := &siteToSite{}
	must := branchTopology(t, lab, x)
	must(x.branchNS.AddAddr("eth0", "198.51.100.21/24"))

	x.gw, x.branch = newEnd(t, x.gwNS, opts), newEnd(t, x.branchNS, opts)
	r := func(p, via string, prio int) tunnel.Route {
		return tunnel.Route{Prefix: netip.MustParsePrefix(p), Via: via, Priority: prio}
	}
	hc := tunnel.HealthCheck{Rate: "high"}
	with := func(c gre.Config, hc tunnel.HealthCheck) gre.Config { c.HealthCheck = hc; return c }
	x.gwCfg = Config{
		GRE: []gre.Config{
			with(cfg("gre1", "203.0.113.10", "198.51.100.20", "10.200.1.0/31"), hc),
			with(cfg("gre2", "203.0.113.10", "198.51.100.21", "10.200.2.0/31"), hc),
		},
		Routes: []tunnel.Route{r("10.20.0.0/16", "gre1", prios[0]), r("10.20.0.0/16", "gre2", prios[1])},
	}
	hc.Type = "request"
	x.branchCfg = Config{
		GRE: []gre.Config{
			with(cfg("bgre1", "198.51.100.20", "203.0.113.10", "10.200.1.1/31"), hc),
			with(cfg("bgre2", "198.51.100.21", "203.0.113.10", "10.200.2.1/31"), hc),
		},
		Routes: []tunnel.Route{r("10.10.0.0/16", "bgre1", prios[0]), r("10.10.0.0/16", "bgre2", prios[1])},
	}
	x.gw.set(t, x.gwCfg)
	x.branch.set(t, x.branchCfg)
	return x
}

// branchTopology builds netlab's [netlab.Branch] topology in lab and
// puts its namespaces into x (the branch has one public address,
// 198.51.100.20); must fails t on an error.
func branchTopology(t testing.TB, lab *netlab.Lab, x *siteToSite) (must func(error)) {
	b, err := lab.Branch()
	if err != nil {
		t.Fatal(err)
	}
	x.lan, x.gwNS, x.wan, x.branchNS, x.blan = b.LAN, b.GW, b.WAN, b.BR, b.BLAN
	return func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// cutPrimary drops (or stops dropping) all packets to and from the
// branch's primary public address in the WAN namespace.
func (x *siteToSite) cutPrimary(t testing.TB, cut bool) {
	t.Helper()
	cmd := "delete table ip cut"
	if cut {
		cmd = "add table ip cut; add chain ip cut forward_cut { type filter hook forward priority 0; };" +
			"add rule ip cut forward_cut ip saddr 198.51.100.20 drop; add rule ip cut forward_cut ip daddr 198.51.100.20 drop"
	}
	if out, err := x.wan.Exec(t.Context(), "nft", cmd); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// startEcho serves one line per connection back, in blan.
func startEcho(t *testing.T, x *siteToSite) {
	l, err := x.blan.Listen("tcp4", "10.20.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprint(c, line)
			}()
		}
	}()
}

// tcpEcho checks a TCP round trip from lan to blan.
func tcpEcho(t *testing.T, x *siteToSite) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := x.lan.DialContext(ctx, "tcp4", "10.20.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := strings.Repeat("x", 4000) + "\n" // several segments
	fmt.Fprint(c, msg)
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != msg {
		t.Fatalf("TCP echo: %d bytes, %v", len(got), err)
	}
}

func TestSiteToSiteFailover(t *testing.T) {
	x := newSiteToSite(t, [2]int{100, 200})
	netlab.Eventually(t, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	startEcho(t, x)
	tcpEcho(t, x)
	if dev := x.gw.routeDev("10.20.0.2"); dev != "gre1" {
		t.Fatalf("gw routes the branch LAN through %s, want gre1", dev)
	}

	// Cut the primary path in the WAN.
	cut := time.Now()
	x.cutPrimary(t, true)
	detection := health.Rates["high"].DetectionTime(health.DefaultThresholds)
	netlab.Eventually(t, 3*detection, "gw moves to the backup tunnel", func() error {
		if dev := x.gw.routeDev("10.20.0.2"); dev != "gre2" {
			return fmt.Errorf("route through %s", dev)
		}
		return nil
	})
	moved := time.Since(cut)
	t.Logf("failover after %v (documented worst case %v)", moved, detection)
	if moved > detection+500*time.Millisecond {
		t.Errorf("failover took %v, documented %v", moved, detection)
	}
	netlab.Eventually(t, 3*detection, "branch moves to the backup tunnel", func() error {
		if dev := x.branch.routeDev("10.10.0.2"); dev != "bgre2" {
			return fmt.Errorf("route through %s", dev)
		}
		return nil
	})
	if err := x.lan.Ping("10.20.0.2"); err != nil {
		t.Errorf("ping over the backup: %v", err)
	}
	tcpEcho(t, x)
	before := x.gw.tunnel("gre2").TxPackets
	if err := x.lan.Ping("10.20.0.2"); err != nil || x.gw.tunnel("gre2").TxPackets == before {
		t.Errorf("backup tunnel does not carry the ping: %v", err)
	}

	// Restore: down → degraded after 3 good probes, healthy after 30.
	x.cutPrimary(t, false)
	restore := time.Now()
	back := time.Duration(health.DefaultThresholds.HealthyAfter+health.DefaultThresholds.RecoverAfter) * health.Rates["high"].Interval
	netlab.Eventually(t, 3*back, "gw moves back to the primary", func() error {
		if dev := x.gw.routeDev("10.20.0.2"); dev != "gre1" {
			return fmt.Errorf("route through %s", dev)
		}
		return nil
	})
	t.Logf("back on the primary after %v (about %v of good probes expected)", time.Since(restore), back)
	if err := x.lan.Ping("10.20.0.2"); err != nil {
		t.Errorf("ping after restore: %v", err)
	}
	if st := x.gw.health("gre1"); st == nil || st.State != tunnel.Healthy || st.Failed < 3 {
		t.Errorf("gre1 health %+v", st)
	}
}

// TestSiteToSiteECMP gives both tunnels priority 100: the kernel spreads
// flows over them by 5-tuple hash, and each flow stays on its tunnel.
func TestSiteToSiteECMP(t *testing.T) {
	x := newSiteToSite(t, [2]int{100, 100})
	netlab.Eventually(t, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	startEcho(t, x)
	out, _ := x.gwNS.IP("route", "show", "10.20.0.0/16")
	if !strings.Contains(string(out), "nexthop dev gre1") || !strings.Contains(string(out), "nexthop dev gre2") {
		t.Fatalf("no multipath route: %s", out)
	}
	const flows, chunk = 16, 64 << 10
	tx := func(name string) uint64 { return x.gw.tunnel(name).TxBytes }
	used := map[string]int{}
	for i := range flows {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		c, err := x.lan.DialContext(ctx, "tcp4", "10.20.0.2:7000")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var onto string
		for round := range 2 {
			b1, b2 := tx("gre1"), tx("gre2")
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprint(c, strings.Repeat("y", chunk))
			if round == 1 {
				fmt.Fprint(c, "\n")
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					t.Fatal(err)
				}
			} else {
				// Wait until the chunk has left through a tunnel.
				netlab.Eventually(t, 5*time.Second, "chunk sent", func() error {
					if tx("gre1")+tx("gre2")-b1-b2 < chunk {
						return fmt.Errorf("%d bytes", tx("gre1")+tx("gre2")-b1-b2)
					}
					return nil
				})
			}
			d1, d2 := tx("gre1")-b1, tx("gre2")-b2
			var this string
			switch {
			case d1 >= chunk && d2 < chunk/8:
				this = "gre1"
			case d2 >= chunk && d1 < chunk/8:
				this = "gre2"
			default:
				t.Fatalf("flow %d round %d split over tunnels: %d and %d bytes", i, round, d1, d2)
			}
			if onto != "" && this != onto {
				t.Errorf("flow %d moved from %s to %s", i, onto, this)
			}
			onto = this
		}
		used[onto]++
		c.Close()
	}
	t.Logf("flows per tunnel: %v", used)
	if used["gre1"] == 0 || used["gre2"] == 0 {
		t.Errorf("%d flows all on one tunnel: %v", flows, used)
	}
}

// TestReload checks that Set diffs: the same config changes nothing, a
// changed tunnel is reopened while the other keeps running, a removed
// tunnel and its routes go; and that the metrics pass promlint.
func TestReload(t *testing.T) {
	x := newSiteToSite(t, [2]int{100, 200})
	netlab.Eventually(t, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	routes := func() string { out, _ := x.gwNS.IP("route", "show", "proto", "237"); return string(out) }
	before := routes()
	sent1 := x.gw.health("gre1").Sent

	x.gw.set(t, x.gwCfg)
	if got := routes(); got != before {
		t.Errorf("same config changed routes:\n%s\nto\n%s", before, got)
	}
	if x.gw.health("gre1").Sent < sent1 {
		t.Error("same config restarted gre1's check")
	}

	changed := x.gwCfg
	changed.GRE = append([]gre.Config(nil), x.gwCfg.GRE...)
	changed.GRE[1].TTL = 30
	x.gw.set(t, changed)
	if s := x.gw.health("gre1").Sent; s < sent1 {
		t.Errorf("changing gre2 restarted gre1 (probes %d < %d)", s, sent1)
	}
	if x.gw.tunnel("gre2").TxPackets > 10 {
		t.Errorf("gre2 was not reopened: %+v", x.gw.tunnel("gre2"))
	}
	if got := routes(); got != before {
		t.Errorf("routes after reopening gre2:\n%s\nwant\n%s", got, before)
	}

	removed := Config{GRE: changed.GRE[:1], Routes: changed.Routes[:1]}
	x.gw.set(t, removed)
	if out, err := x.gwNS.IP("link", "show", "gre2"); err == nil {
		t.Errorf("gre2 still there: %s", out)
	}
	if got := routes(); strings.Contains(got, "gre2") || !strings.Contains(got, "dev gre1") {
		t.Errorf("routes after removing gre2: %s", got)
	}
	if err := x.lan.Ping("10.20.0.2"); err != nil {
		t.Errorf("ping after reloads: %v", err)
	}
	problems, err := testutil.CollectAndLint(x.gw.m)
	if err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %+v", err, problems)
	}
	if n, err := testutil.GatherAndCount(registry(t, x.gw.m), "edgegw_tunnel_health_state"); err != nil || n != 3 {
		t.Errorf("health state series: %d %v", n, err)
	}
	// The route manager's metrics come with the site's: gre1 carries the
	// branch LAN, the unreachable fallback waits behind it.
	want := `
# HELP edgegw_routes_installed 1 for each path of a routed prefix in the kernel after the last route update: via is the tunnel ("unreachable" for the fallback that refuses the prefix's traffic), role is active for the lowest metric, which carries the traffic, and backup for the others.
# TYPE edgegw_routes_installed gauge
edgegw_routes_installed{prefix="10.20.0.0/16",role="active",via="gre1"} 1
edgegw_routes_installed{prefix="10.20.0.0/16",role="backup",via="unreachable"} 1
`
	if err := testutil.CollectAndCompare(x.gw.m, strings.NewReader(want), "edgegw_routes_installed"); err != nil {
		t.Errorf("route metrics: %v", err)
	}
}

func registry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewRegistry()
	if err := r.Register(c); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCloseLeavesNothing checks that Close removes the interfaces and
// routes, restores the hash policy and stops every goroutine.
func TestCloseLeavesNothing(t *testing.T) {
	lab := netlab.NewT(t)
	ns, err := lab.NS("c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.IP("link", "add", "eth0", "type", "veth", "peer", "name", "eth1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{{"addr", "add", "192.0.2.1/24", "dev", "eth0"}, {"link", "set", "eth0", "up"}, {"link", "set", "eth1", "up"}} {
		if out, err := ns.IP(c...); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	var m *Manager
	if err := ns.Do(func() error { var err error; m, err = New(t.Context(), Options{}); return err }); err != nil {
		t.Fatal(err)
	}
	c := Config{
		GRE:    []gre.Config{cfg("leak1", "192.0.2.1", "192.0.2.9", "10.200.9.0/31")},
		Routes: []tunnel.Route{{Prefix: netip.MustParsePrefix("10.99.0.0/16"), Via: "leak1"}},
	}
	c.GRE[0].SetDefaults()
	c.GRE[0].HealthCheck.SetDefaults()
	c.Routes[0].SetDefaults()
	if err := ns.Do(func() error { return m.Set(c) }); err != nil {
		t.Fatal(err)
	}
	if out, _ := ns.IP("route", "show", "proto", "237"); !strings.Contains(string(out), "10.99.0.0/16 dev leak1") {
		t.Fatalf("route missing: %s", out)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if out, _ := ns.IP("route", "show", "proto", "237"); len(out) != 0 {
		t.Errorf("routes left: %s", out)
	}
	if out, err := ns.IP("link", "show", "leak1"); err == nil {
		t.Errorf("interface left: %s", out)
	}
	if out, err := ns.Exec(t.Context(), "cat", "/proc/sys/net/ipv4/fib_multipath_hash_policy"); err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Errorf("hash policy not restored: %s %v", out, err)
	}
	netlab.Eventually(t, 5*time.Second, "goroutines stopped", func() error {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "edgegw/tunnel/") && !strings.Contains(g, "TestCloseLeavesNothing") || strings.Contains(g, "wireguard/tun.") {
				return fmt.Errorf("still running:\n%s", g)
			}
		}
		return nil
	})
}
