//go:build linux

package site

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
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/health"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// branchSwanctl is the branch's swanctl.conf, written as a branch
// router's documentation would, not by edgegw's code.
var branchSwanctl = swanbranch.Conn{
	Name: "gw", Local: "198.51.100.20", Remote: "203.0.113.10",
	LocalID: "fra.corp.example", RemoteID: "lon.corp.example",
	LocalTS:  []string{"10.20.0.0/16", "10.200.3.1/32"},
	RemoteTS: []string{"10.10.0.0/16", "10.200.3.0/32"},
	PSK:      "site-test-psk-of-20-characters", Initiate: true,
}.Swanctl()

// branchBackend is where the branch's ESP runs: always in its charon
// (kernel-libipsec), whatever the gw uses, as the tests were written.
const branchBackend = swanbranch.BackendLibipsec

// skipWithoutStrongSwan fails the test (skips it in -short mode) unless
// strongSwan's charon, swanctl and the plugins the tests use are
// installed.
func skipWithoutStrongSwan(t testing.TB) {
	t.Helper()
	swanbranch.Need(t, ipsec.DefaultCharon, branchBackend)
}

// TestIPsecFailoverToGRE runs an IPsec tunnel (priority 100) with a GRE
// backup (priority 200) to one branch. Killing the branch's charon is
// seen by the health check (and DPD): traffic moves to GRE, and back to
// IPsec once the branch's charon is up again.
// ipsecSite is the site-to-site topology with an IPsec tunnel ipsec1
// (priority 100, 10.200.3.0/31) and a GRE tunnel gre1 (priority 200,
// 10.200.1.0/31) from gw to one branch, which runs a stock strongSwan
// and a GRE end.
type ipsecSite struct {
	*siteToSite
	gw, br *end
	bc     *swanbranch.Branch
	state  string
}

func newIPsecSite(t testing.TB) *ipsecSite {
	skipWithoutStrongSwan(t)
	lab := netlab.NewT(t)
	x := &siteToSite{}
	must := branchTopology(t, lab, x)
	if _, err := x.branchNS.IP("addr", "add", "10.200.3.1/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}

	// The gw: edgegw's site manager with both tunnels.
	gw := &end{ns: x.gwNS}
	state := t.TempDir()
	must(x.gwNS.Do(func() error {
		var err error
		gw.m, err = New(context.Background(), Options{Logger: testLogger(t), StateDir: state})
		return err
	}))
	t.Cleanup(func() { gw.m.Close() })
	psk := filepath.Join(state, "branch.psk")
	must(os.WriteFile(psk, []byte("site-test-psk-of-20-characters\n"), 0o600))
	sec := ipsec.Config{Name: "ipsec1", Local: netip.MustParseAddr("203.0.113.10"), Remote: netip.MustParseAddr("198.51.100.20"),
		LocalID: "lon.corp.example", RemoteID: "fra.corp.example", PSKFile: psk, Address: netip.MustParsePrefix("10.200.3.0/31"),
		DPD: 2 * time.Second, HealthCheck: tunnel.HealthCheck{Rate: "high"}}
	sec.SetDefaults()
	sec.HealthCheck.SetDefaults()
	g := cfg("gre1", "203.0.113.10", "198.51.100.20", "10.200.1.0/31")
	g.HealthCheck = tunnel.HealthCheck{Rate: "high"}
	r := func(p, via string, prio int) tunnel.Route {
		return tunnel.Route{Prefix: netip.MustParsePrefix(p), Via: via, Priority: prio}
	}
	gw.set(t, Config{GRE: []gre.Config{g}, IPsec: []ipsec.Config{sec},
		Routes: []tunnel.Route{r("10.20.0.0/16", "ipsec1", 100), r("10.20.0.0/16", "gre1", 200)}})

	// The branch: a GRE end (edgegw's site manager) and a stock strongSwan.
	br := newEnd(t, x.branchNS, Options{})
	bg := cfg("bgre1", "198.51.100.20", "203.0.113.10", "10.200.1.1/31")
	bg.HealthCheck = tunnel.HealthCheck{Rate: "high", Type: "request"}
	br.set(t, Config{GRE: []gre.Config{bg}, Routes: []tunnel.Route{r("10.10.0.0/16", "bgre1", 200)}})
	bc := swanbranch.Start(t, x.branchNS, ipsec.DefaultCharon, branchBackend, t.TempDir(), branchSwanctl)
	return &ipsecSite{siteToSite: x, gw: gw, br: br, bc: bc, state: state}
}

func TestIPsecFailoverToGRE(t *testing.T) {
	s := newIPsecSite(t)
	x, gw, bc := s.siteToSite, s.gw, s.bc

	onIPsec := func() error {
		if dev := gw.routeDev("10.20.0.2"); !strings.HasPrefix(dev, "ipsec") {
			return fmt.Errorf("route through %s", dev)
		}
		return nil
	}
	netlab.Eventually(t, 20*time.Second, "traffic through IPsec", onIPsec)
	netlab.Eventually(t, 5*time.Second, "ping LAN to branch LAN", func() error { return x.lan.Ping("10.20.0.2") })
	startEcho(t, x)
	tcpEcho(t, x)
	ipsecTx := func() uint64 {
		for _, ts := range gw.m.Status().Tunnels {
			if ts.Name == "ipsec1" {
				return ts.TxPackets
			}
		}
		return 0
	}
	netlab.Eventually(t, 5*time.Second, "IPsec counters", func() error {
		if ipsecTx() == 0 {
			return fmt.Errorf("no packets counted through ipsec1")
		}
		return nil
	})

	// Kill the branch's charon: its SAs and TUN die with it.
	cut := time.Now()
	bc.Kill()
	detection := health.Rates["high"].DetectionTime(health.DefaultThresholds)
	netlab.Eventually(t, 3*detection, "gw fails over to GRE", func() error {
		if dev := gw.routeDev("10.20.0.2"); dev != "gre1" {
			out, _ := x.gwNS.IP("route", "show", "table", "all")
			rules, _ := x.gwNS.IP("rule")
			out = append(out, rules...)
			return fmt.Errorf("route through %s: %s %+v", dev, out, gw.m.Status())
		}
		return nil
	})
	t.Logf("failover to GRE after %v", time.Since(cut))
	netlab.Eventually(t, 5*time.Second, "ping over GRE", func() error { return x.lan.Ping("10.20.0.2") })
	tcpEcho(t, x)

	// DPD notices too: the SA goes down.
	netlab.Eventually(t, 30*time.Second, "DPD takes the SA down", func() error {
		for _, ts := range gw.m.Status().Tunnels {
			if ts.Name == "ipsec1" && ts.IPsec != nil && ts.IPsec.Up {
				return fmt.Errorf("ipsec1 SA still up")
			}
		}
		return nil
	})

	// The branch comes back.
	bc.Start(t)
	back := time.Duration(health.DefaultThresholds.HealthyAfter+health.DefaultThresholds.RecoverAfter) * health.Rates["high"].Interval
	netlab.Eventually(t, 20*time.Second+3*back, "traffic back on IPsec", onIPsec)
	netlab.Eventually(t, 5*time.Second, "ping over IPsec again", func() error { return x.lan.Ping("10.20.0.2") })
	tcpEcho(t, x)
}
