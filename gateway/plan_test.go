package gateway

import (
	"context"
	"log/slog"

	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/ipsec"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestTunnelSources checks what the firewall's anti-spoofing stage is told
// each tunnel owns, and where identities and strict reverse-path filtering
// apply.
func TestTunnelSources(t *testing.T) {
	pfx := netip.MustParsePrefix
	ipsecIf := "ipsec*"
	if ipsec.DefaultBackend() == ipsec.BackendKernel {
		ipsecIf = "branch-x"
	}
	wg := &config.WireGuard{Config: wireguard.Config{Interface: "wg0", Address: pfx("100.96.0.1/12"),
		Peers: []wireguard.Peer{{Name: "alice", AllowedIPs: []netip.Prefix{pfx("100.96.0.10/32")}},
			{Name: "router", AllowedIPs: []netip.Prefix{pfx("10.50.0.0/24"), pfx("0.0.0.0/0")}}}}}
	site := config.Tunnels{
		GRE:   []gre.Config{{Name: "branch-a", Address: pfx("10.200.1.0/31")}},
		IPsec: []ipsec.Config{{Name: "branch-x", Address: pfx("10.200.2.0/31")}},
	}
	routes := []tunnel.Route{{Prefix: pfx("10.20.0.0/16"), Via: "branch-a"},
		{Prefix: pfx("10.30.0.0/16"), Via: "branch-x"}, {Prefix: pfx("10.20.0.0/16"), Via: "branch-x"}}
	for _, tc := range []struct {
		name              string
		cfg               config.Config
		sources, identity string
		strict            string
	}{
		{"nothing", config.Config{Interfaces: config.Interfaces{LAN: []string{"eth1"}}}, "", "-", "eth1 eth0"},
		{"wireguard", config.Config{Tunnels: config.Tunnels{WireGuard: wg}, Interfaces: config.Interfaces{LAN: []string{"eth1", "eth2"}}},
			// The WireGuard prefix is given masked; 0.0.0.0/0 is passed on
			// (the firewall ignores it: no one owns every address).
			"wg0=[100.96.0.0/12 100.96.0.10/32 10.50.0.0/24 0.0.0.0/0]", "wg0", "wg0 eth1 eth2 eth0"},
		{"site to site", config.Config{Tunnels: site, Routes: routes},
			fmt.Sprintf("branch-a=[10.200.1.0/31 10.20.0.0/16] %s=[10.200.2.0/31 10.30.0.0/16 10.20.0.0/16]", ipsecIf), "-", "eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range tunnelSources(&tc.cfg) {
				got = append(got, fmt.Sprintf("%s=%v", s.Interface, s.Prefixes))
			}
			if g := strings.Join(got, " "); g != tc.sources {
				t.Errorf("tunnel sources:\n got  %s\n want %s", g, tc.sources)
			}
			if g := identityInterface(&tc.cfg); g != tc.identity {
				t.Errorf("identity interface %q, want %q", g, tc.identity)
			}
			if g := strings.Join(strictRPInterfaces(&tc.cfg, "eth0"), " "); g != tc.strict {
				t.Errorf("strict rp_filter on %q, want %q", g, tc.strict)
			}
		})
	}
}

// fakePart records the plans committed to it and fails as told.
type fakePart struct {
	label   string
	failOn  *config.Config // commit to a plan of this config fails
	commits []*config.Config
}

func (p *fakePart) name() string { return p.label }
func (p *fakePart) commit(_ context.Context, _, next *Plan) error {
	p.commits = append(p.commits, next.Config)
	if next.Config == p.failOn {
		return fmt.Errorf("%s refused", p.label)
	}
	return nil
}
func (p *fakePart) close()           {}
func (p *fakePart) ready() error     { return nil }
func (p *fakePart) status(s *Status) {}

// TestReloadPutBack: a part that refuses a new plan makes the parts
// already moved get the running plan back, in reverse order; a part that
// cannot be put back is named in the error and counted, never ignored.
func TestReloadPutBack(t *testing.T) {
	running, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	next, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	next.Appliance.Name = "renamed"
	pl, err := Prepare(running, PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := &fakePart{label: "a"}
	b := &fakePart{label: "b", failOn: running} // moves, then cannot go back
	c := &fakePart{label: "c", failOn: next}    // refuses the new plan
	d := &fakePart{label: "d"}
	g := &Gateway{log: slog.New(slog.DiscardHandler), metrics: newMetrics("test"), plan: pl,
		parts: []part{a, b, c, d}}
	err = g.apply(t.Context(), next)
	if err == nil {
		t.Fatal("reload with a refusing part succeeded")
	}
	for _, want := range []string{"c: c refused", "b could not be put back", "b refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if g.plan != pl {
		t.Error("the running plan was replaced after a failed reload")
	}
	for _, tc := range []struct {
		p    *fakePart
		want []*config.Config
	}{
		{a, []*config.Config{next, running}},
		{b, []*config.Config{next, running}},
		{c, []*config.Config{next}},
		{d, nil},
	} {
		if fmt.Sprint(tc.p.commits) != fmt.Sprint(tc.want) {
			t.Errorf("part %s got commits %v, want %v", tc.p.label, tc.p.commits, tc.want)
		}
	}
	if got := testutil.ToFloat64(g.metrics.revertFailures); got != 1 {
		t.Errorf("edgegw_config_revert_failures_total = %v, want 1", got)
	}
}

// TestPrepareCompiles: the plan carries the compiled rules with their
// lists (what an in-place list update applies) and the flow naming.
func TestPrepareCompiles(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`
firewall:
  lists:
    admins: [10.1.0.0/24]
  rules:
    - id: ssh
      expression: ip.src in $admins and tcp.dstport == 22
      action: allow
netflow:
  sample_rate: 100
`), config.Options{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := Prepare(cfg, PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if items, ok := pl.Firewall.Rules.List("admins"); !ok || len(items) != 1 || items[0].String() != "10.1.0.0/24" {
		t.Errorf("list admins = %v %v", items, ok)
	}
	if pl.Firewall.Sampling.Rate != 100 || len(pl.flowRules.RuleIDs) != 1 || pl.flowRules.RuleIDs[0] != "ssh" {
		t.Errorf("sampling %+v, flow rules %+v", pl.Firewall.Sampling, pl.flowRules)
	}
}
