//go:build linux

package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// The egress topology, one namespace each:
//
//	client 10.1.0.10 (alice), .11 (bob), .12 (carol) ── 10.1.0.1 gw
//	gw eth1: 100.64.0.2/24 (the uplink, a NATed CGNAT address), and the
//	         egress addresses 198.51.100.10 (A) and 203.0.113.20 (B)
//	res eth0: 100.64.0.1/24, 192.0.2.1/24: Unbound
//
// alice's egress is A, bob's B (by identity, as egress policies give
// them); carol has none and uses the uplink's address, which is private,
// so no subnet is sent for her until the uplink is renumbered
// (DHCP-style) to 192.0.2.2, which the resolver picks up without a
// reload.
const (
	egAlice   = "10.1.0.10"
	egBob     = "10.1.0.11"
	egCarol   = "10.1.0.12"
	egGWIn    = "10.1.0.1"
	egWAN     = "100.64.0.2"
	egWAN2    = "192.0.2.2"
	egRes     = "100.64.0.1"
	egRes2    = "192.0.2.1"
	egA       = "198.51.100.10"
	egB       = "203.0.113.20"
	egAnswer  = "192.0.2.200"
	egressZon = "egress.test"
)

// emailEgress gives each user an egress address, and nobody else one.
type emailEgress map[string]netip.Addr

func (m emailEgress) Egress(_ netip.Addr, id Identity, hasID bool) (netip.Addr, bool) {
	if !hasID {
		return netip.Addr{}, false
	}
	a, ok := m[id.Email]
	return a, ok
}

// TestE2EDNSFromEgress: alice's and bob's queries reach a real Unbound
// from their own egress address with the ECS of their own egress; carol's
// come from the uplink's private address with no ECS at all; after the
// uplink is renumbered to a public address, without a reload, carol's
// come from it with its subnet. Checked on the wire with tshark, and in
// the gateway_dns records (EgressIP).
func TestE2EDNSFromEgress(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "unbound", "unbound")
	testkit.NeedTool(t, "dumpcap", "tshark")
	testkit.NeedTool(t, "tshark", "tshark")
	dir := t.TempDir()
	lab := netlab.NewT(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	client, err := lab.NS("client")
	must(err)
	gw, err := lab.NS("gw")
	must(err)
	res, err := lab.NS("res")
	must(err)
	must(lab.Link(client, "eth0", egAlice+"/24", gw, "eth0", egGWIn+"/24"))
	must(client.AddAddr("eth0", egBob+"/24"))
	must(client.AddAddr("eth0", egCarol+"/24"))
	must(lab.Link(gw, "eth1", egWAN+"/24", res, "eth0", egRes+"/24"))
	must(res.AddAddr("eth0", egRes2+"/24"))
	must(gw.AddAddr("eth1", egA+"/32"))
	must(gw.AddAddr("eth1", egB+"/32"))
	must(gw.Route("default", egRes))
	for _, p := range []string{"198.51.100.0/24", "203.0.113.0/24"} {
		must(res.Route(p, egWAN))
	}

	// Unbound answers every name under egress.test itself: what matters
	// is what reaches it.
	conf := filepath.Join(dir, "unbound.conf")
	write(t, conf, fmt.Sprintf(`server:
  interface: %[1]s@53
  interface: %[2]s@53
  num-threads: 1
  chroot: ""
  username: ""
  directory: %[3]q
  pidfile: "%[3]s/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  access-control: 0.0.0.0/0 allow
  module-config: "subnetcache iterator"
  local-zone: "%[4]s." redirect
  local-data: "%[4]s. 60 IN A %[5]s"
`, egRes, egRes2, dir, egressZon, egAnswer))
	ub, err := res.Start("unbound", "-d", "-c", conf)
	must(err)
	netlab.Eventually(t, 20*time.Second, "unbound answers", func() error {
		select {
		case <-ub.Done():
			t.Fatalf("unbound exited: %s", ub.Output())
		default:
		}
		m := new(mdns.Msg)
		m.SetQuestion("ready."+egressZon+".", mdns.TypeA)
		_, err := exchangeIn(res, "", egRes+":53", m)
		return err
	})
	pcap := filepath.Join(dir, "res.pcapng")
	capProc := startCapture(t, res, pcap, "udp port 53", egWAN)

	sink := &recSink{}
	s, err := New(Config{
		Listen:    []netip.AddrPort{netip.MustParseAddrPort(egGWIn + ":53")},
		Upstreams: []string{egRes + ":53"},
		ECS:       "egress",
	}, Options{
		EgressInterface: "eth1",
		Egress: emailEgress{"alice@corp.example": netip.MustParseAddr(egA),
			"bob@corp.example": netip.MustParseAddr(egB)},
		IdentitySource: staticIDs{
			netip.MustParseAddr(egAlice): {Email: "alice@corp.example", Interface: "eth0"},
			netip.MustParseAddr(egBob):   {Email: "bob@corp.example", Interface: "eth0"},
		},
		Sink: sink,
		// Upstream sockets in gw, from the query's egress.
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := gw.Do(func() (err error) {
				src, _ := EgressFrom(ctx)
				c, err = dialFrom(ctx, &net.Dialer{FallbackDelay: -1}, network, addr, src)
				return err
			})
			return c, err
		},
	})
	must(err)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Do(func() error { return s.Run(runCtx) }) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edgegw: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("edgegw did not stop")
		}
	})
	eventually(t, 10*time.Second, "edgegw listening", func() bool { return len(s.Status().Listening) > 0 })

	// query asks name from the client address src and returns the
	// record's EgressIP.
	query := func(src, name string) string {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(name+"."+egressZon+".", mdns.TypeA)
		m.SetEdns0(1232, false)
		n := sink.len()
		r, err := exchangeIn(client, src, egGWIn+":53", m)
		if err != nil {
			t.Fatalf("%s from %s: %v", name, src, err)
		}
		if len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), egAnswer) {
			t.Fatalf("%s from %s: answer %v", name, src, r.Answer)
		}
		eventually(t, 5*time.Second, "record of "+name, func() bool { return sink.len() > n })
		return field(sink.last(), "EgressIP")
	}
	if got := query(egAlice, "alice1"); got != egA {
		t.Errorf("alice's record: EgressIP %q, want %s", got, egA)
	}
	if got := query(egBob, "bob1"); got != egB {
		t.Errorf("bob's record: EgressIP %q, want %s", got, egB)
	}
	if got := query(egCarol, "carol1"); got != egWAN {
		t.Errorf("carol's record: EgressIP %q, want the uplink's %s", got, egWAN)
	}

	// The uplink is renumbered as a DHCP client would: new address, old
	// one gone, new default route. No reload.
	for _, args := range [][]string{
		{"addr", "add", egWAN2 + "/24", "dev", "eth1"},
		{"route", "replace", "default", "via", egRes2},
		{"addr", "del", egWAN + "/24", "dev", "eth1"},
	} {
		if out, err := gw.IP(args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	// A fresh name each time: the egress moves when the netlink events
	// arrive, not at a known moment.
	i := 0
	testkit.Eventually(t, 10*time.Second, "carol's egress follows the renumbered uplink", func() error {
		i++
		if got := query(egCarol, fmt.Sprintf("carol2-%d", i)); got != egWAN2 {
			return fmt.Errorf("EgressIP %q, want %s", got, egWAN2)
		}
		return nil
	})
	carol2 := fmt.Sprintf("carol2-%d", i)
	if got := query(egAlice, "alice2"); got != egA {
		t.Errorf("alice's record after the renumbering: EgressIP %q, want %s", got, egA)
	}

	// On the wire at Unbound: who asked, from where, with which subnet.
	type row struct{ src, ecs, mask string }
	want := map[string]row{
		"alice1": {egA, "198.51.100.0", "24"},
		"bob1":   {egB, "203.0.113.0", "24"},
		"carol1": {egWAN, "", ""}, // private: no ECS at all
		carol2:   {egWAN2, "192.0.2.0", "24"},
		"alice2": {egA, "198.51.100.0", "24"},
	}
	got := map[string]row{}
	read := func(live bool) {
		out, err := exec.Command("tshark", "-r", pcap, "-n", "-Y", "dns.flags.response == 0", "-T", "fields",
			"-E", "separator=|", "-e", "ip.src", "-e", "dns.qry.name", "-e", "dns.opt.client.addr4", "-e", "dns.opt.client.netmask").Output()
		if err != nil && !live {
			t.Fatalf("tshark: %v", err)
		}
		for line := range strings.Lines(string(out)) {
			f := strings.Split(strings.TrimRight(line, "\n"), "|")
			if len(f) < 4 {
				continue
			}
			name := strings.TrimSuffix(f[1], "."+egressZon)
			got[name] = row{f[0], f[2], f[3]}
		}
	}
	// dumpcap writes its file in blocks: read it live until the last
	// query is there, then stop it.
	testkit.Eventually(t, 20*time.Second, "the last query captured", func() error {
		read(true)
		if _, ok := got["alice2"]; !ok {
			return fmt.Errorf("captured %v", got)
		}
		return nil
	})
	capProc.Stop()
	read(false)
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s at Unbound: from %s ECS %s/%s, want from %s ECS %s/%s (captured: %v)",
				name, g.src, g.ecs, g.mask, w.src, w.ecs, w.mask, ok)
		}
	}
	for name, g := range got {
		if strings.HasPrefix(g.ecs, "10.") || strings.HasPrefix(g.ecs, "100.64.") {
			t.Errorf("%s: a private subnet %s went upstream", name, g.ecs)
		}
	}
	if n := testutil.ToFloat64(s.m.egressChanges); n < 1 {
		t.Errorf("edgegw_dns_egress_address_changes_total = %v after the renumbering", n)
	}
}

// exchangeIn sends m over UDP from ns (from the address src, if given).
func exchangeIn(ns *netlab.NS, src, addr string, m *mdns.Msg) (*mdns.Msg, error) {
	var r *mdns.Msg
	err := ns.Do(func() error {
		d := &net.Dialer{Timeout: 5 * time.Second}
		if src != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		c := &mdns.Client{Net: "udp", Dialer: d, Timeout: 5 * time.Second}
		var err error
		r, _, err = c.Exchange(m, addr)
		return err
	})
	return r, err
}
