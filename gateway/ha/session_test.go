package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// pairLab is a routed pair: a LAN host whose gateway is the LAN virtual
// address 10.1.0.1, a WAN server at 203.0.113.100 on the WAN side where
// the pair answers at 203.0.113.10, and a sync link between the nodes.
// Each side's legs meet on a bridge in the host's (or server's) namespace,
// as on a switch. Both nodes forward and masquerade to the WAN virtual
// address, as edgegw's ruleset does on a pair.
type pairLab struct {
	lab        *netlab.Lab
	lan, srv   *netlab.NS
	nodes      [2]*netlab.NS
	dirs       [2]string
	syncAddrs  [2]string
	priorities [2]int
	logLevel   slog.Level // of the nodes' loggers (debug unless a benchmark quiets them)
}

const (
	lanVIP  = "10.1.0.1/24"
	wanVIP  = "203.0.113.10/24"
	wanAddr = "203.0.113.10"
	srvAddr = "203.0.113.100"
)

func newPairLab(t testing.TB) *pairLab {
	t.Helper()
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "keepalived", "keepalived")
	testkit.NeedTool(t, "conntrackd", "conntrackd")
	testkit.NeedTool(t, "nft", "nftables")
	p := &pairLab{lab: netlab.NewT(t), syncAddrs: [2]string{"10.255.0.1", "10.255.0.2"}, priorities: [2]int{200, 100}}
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p.lan, err = p.lab.NS("lan")
	must(err)
	p.srv, err = p.lab.NS("srv")
	must(err)
	for i := range p.nodes {
		p.nodes[i], err = p.lab.NS(fmt.Sprintf("n%d", i+1))
		must(err)
		p.dirs[i] = t.TempDir()
		must(p.lab.Link(p.nodes[i], "lan0", fmt.Sprintf("10.1.0.%d/24", 11+i), p.lan, fmt.Sprintf("p%d", i+1), ""))
		must(p.lab.Link(p.nodes[i], "wan0", fmt.Sprintf("203.0.113.%d/24", 1+i), p.srv, fmt.Sprintf("p%d", i+1), ""))
		must(p.nodes[i].Sysctl("net.ipv4.ip_forward", "1"))
		must(nft(p.nodes[i], `table ip hatest {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" snat ip to `+wanAddr+`
	}
}`))
	}
	must(p.lab.Link(p.nodes[0], "sync0", p.syncAddrs[0]+"/30", p.nodes[1], "sync0", p.syncAddrs[1]+"/30"))
	for _, sw := range []struct {
		ns   *netlab.NS
		addr string
	}{{p.lan, "10.1.0.2/24"}, {p.srv, srvAddr + "/24"}} {
		for _, args := range [][]string{{"link", "add", "br0", "type", "bridge"}, {"link", "set", "p1", "master", "br0"},
			{"link", "set", "p2", "master", "br0"}, {"link", "set", "br0", "up"}, {"addr", "add", sw.addr, "dev", "br0"}} {
			_, err := sw.ns.IP(args...)
			must(err)
		}
	}
	_, err = p.lan.IP("route", "add", "default", "via", strings.TrimSuffix(lanVIP, "/24"))
	must(err)
	return p
}

// nft loads a ruleset into ns.
func nft(ns *netlab.NS, rules string) error {
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, out)
	}
	return nil
}

// start runs node i's half of the pair.
func (p *pairLab) start(t testing.TB, i int) *Node {
	t.Helper()
	return p.startWith(t, i, 0)
}

// startProbe runs node i with a split-brain probe every 200 ms.
func (p *pairLab) startProbe(t testing.TB, i int) *Node {
	t.Helper()
	return p.startWith(t, i, 200*time.Millisecond)
}

func (p *pairLab) startWith(t testing.TB, i int, probe time.Duration) *Node {
	t.Helper()
	return p.startConfig(t, i, probe, func(*Config) {})
}

// startConfig runs node i with the pair's section changed by edit.
func (p *pairLab) startConfig(t testing.TB, i int, probe time.Duration, edit func(*Config)) *Node {
	t.Helper()
	c := Config{Priority: p.priorities[i], Peer: netip.MustParseAddr(p.syncAddrs[1-i]), Interface: "sync0",
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix(wanVIP)},
			LAN: []netip.Prefix{netip.MustParsePrefix(lanVIP)}}}
	edit(&c)
	c.SetDefaults()
	var bad []string
	c.Validate(func(f, m string) { bad = append(bad, f+": "+m) })
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	n, err := New(c, Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: p.logLevel})).With("node", i+1),
		StateDir: p.dirs[i], Links: Links{WAN: "wan0", LAN: "lan0"}, Enter: p.nodes[i].Do, Backoff: 200 * time.Millisecond, ProbeInterval: probe})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// download is a TCP stream from the WAN server to the LAN host through
// the pair's masquerade: the server writes steadily, the host counts what
// arrives. Any error on either end is kept.
type download struct {
	received atomic.Int64
	mu       sync.Mutex
	err      error
	wg       sync.WaitGroup
	stop     chan struct{}
	conns    []net.Conn
	ln       net.Listener
}

func startDownload(t *testing.T, p *pairLab) *download {
	t.Helper()
	d := &download{stop: make(chan struct{})}
	ln, err := p.srv.Listen("tcp", net.JoinHostPort(srvAddr, "5001"))
	if err != nil {
		t.Fatal(err)
	}
	d.ln = ln
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.lan.DialContext(ctx, "tcp", net.JoinHostPort(srvAddr, "5001"))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		ln.Close()
		c.Close()
		t.Fatal(err)
	}
	if ra := s.RemoteAddr().(*net.TCPAddr).IP.String(); ra != wanAddr {
		t.Fatalf("the server sees %s, want the WAN virtual address %s (masquerade)", ra, wanAddr)
	}
	d.conns = []net.Conn{c, s}
	d.wg.Add(2)
	go func() { // the server: 1 KiB every 5 ms until stop
		defer d.wg.Done()
		buf := make([]byte, 1024)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-tick.C:
			}
			if _, err := s.Write(buf); err != nil {
				d.fail(fmt.Errorf("server write: %w", err))
				return
			}
		}
	}()
	go func() { // the LAN host
		defer d.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			d.received.Add(int64(n))
			if err != nil {
				select {
				case <-d.stop:
				default:
					d.fail(fmt.Errorf("host read: %w", err))
				}
				return
			}
		}
	}()
	t.Cleanup(d.close)
	return d
}

func (d *download) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		d.err = err
	}
}

func (d *download) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *download) close() {
	select {
	case <-d.stop:
		return
	default:
	}
	close(d.stop)
	for _, c := range d.conns {
		c.Close()
	}
	d.ln.Close()
	d.wg.Wait()
}

// grows waits for another n bytes past now, failing on a stream error.
func (d *download) grows(n int64) func() error {
	target := d.received.Load() + n
	return func() error {
		if err := d.Err(); err != nil {
			return errors.Join(errStop, err)
		}
		if got := d.received.Load(); got < target {
			return fmt.Errorf("received %d of %d bytes", got, target)
		}
		return nil
	}
}

var errStop = errors.New("stream broken")

// eventually is testkit.Eventually that gives up at once on errStop.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	testkit.Eventually(t, timeout, what, func() error {
		err := f()
		if errors.Is(err, errStop) {
			t.Fatalf("%s: %v", what, err)
		}
		return err
	})
}

// TestSessionSurvivesFailover streams a download from a WAN server to a
// LAN host through the active node's masquerade, makes the active node
// fail, and checks that the same TCP connection keeps delivering through
// the other node with no error on either end: conntrackd synced the
// session into the standby's kernel, so the server's next segment to the
// WAN virtual address is translated back to the LAN host instead of being
// answered with a reset by the new node's own stack.
func TestSessionSurvivesFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(t *testing.T, p *pairLab, active *Node)
	}{
		{"active stops", func(t *testing.T, _ *pairLab, active *Node) {
			// keepalived and conntrackd leave as at a clean exit.
			if err := active.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"active loses its WAN link", func(t *testing.T, p *pairLab, active *Node) {
			if _, err := p.nodes[0].IP("link", "set", "wan0", "down"); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 30*time.Second, "n1 in fault", wantRole(active, RoleFault))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { sessionSurvives(t, tc.fail) })
	}
}

func sessionSurvives(t *testing.T, fail func(t *testing.T, p *pairLab, active *Node)) {
	ctTool := testkit.NeedTool(t, "conntrack", "conntrack")
	p := newPairLab(t)
	na := p.start(t, 0)
	defer func() { na.Close() }()
	nb := p.start(t, 1)
	defer nb.Close()
	const deadline = 30 * time.Second // VRRP needs ~3-4 s; CI load adds more
	testkit.Eventually(t, deadline, "n1 master", wantRole(na, RoleMaster))
	testkit.Eventually(t, deadline, "n2 backup", wantRole(nb, RoleBackup))
	testkit.Eventually(t, deadline, "the LAN host reaches the server", func() error { return p.lan.Ping(srvAddr) })

	d := startDownload(t, p)
	eventually(t, deadline, "download through n1", d.grows(64<<10))
	// The session reaches the standby's kernel over the sync link, with
	// its translation to the WAN virtual address.
	testkit.Eventually(t, deadline, "session in n2's kernel", wantSession(p.nodes[1], ctTool))
	if s := nb.Status(); s.ConntrackSync == nil || s.ConntrackSync.PacketsReceived == 0 || s.ConntrackSync.Injected == 0 {
		t.Fatalf("n2's sync counters: %+v", s.ConntrackSync)
	}

	fail(t, p, na)
	testkit.Eventually(t, deadline, "n2 master", wantRole(nb, RoleMaster))
	// The same connection keeps going: the server's writes and the host's
	// reads never fail, and another 256 KiB arrive.
	eventually(t, deadline, "download through n2", d.grows(256<<10))
	if err := wantSession(p.nodes[1], ctTool)(); err != nil {
		t.Fatal(err)
	}
	if s := nb.Status(); s.ConntrackSyncFailures != 0 {
		t.Fatalf("conntrackd sync failures: %+v", s)
	}
	m := gatherMetrics(t, nb)
	for k, want := range map[string]float64{`edgegw_ha_role{role="master"}`: 1,
		"edgegw_ha_conntrack_role_sync_failures_total": 0, "edgegw_ha_split_brain": 0} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	// n2 became master at least once (under load, delayed adverts can
	// make it master for a moment before the failover too), and each time
	// conntrackd followed.
	if tr, syncs := m[`edgegw_ha_transitions_total{role="master"}`], m[`edgegw_ha_conntrack_role_syncs_total{role="master"}`]; tr < 1 || syncs != tr {
		t.Errorf("master transitions %v, conntrackd master syncs %v: want at least one, and one sync each", tr, syncs)
	}
	for _, k := range []string{`edgegw_ha_conntrack_sync_packets_total{direction="sent"}`, `edgegw_ha_conntrack_sync_packets_total{direction="received"}`} {
		if m[k] == 0 {
			t.Errorf("%s = 0", k)
		}
	}
}

// wantSession looks for the download's masqueraded session in ns's
// kernel conntrack table.
func wantSession(ns *netlab.NS, conntrack string) func() error {
	return func() error {
		out, err := ns.Exec(context.Background(), conntrack, "-L", "-p", "tcp", "--dport", "5001")
		if err != nil {
			return fmt.Errorf("conntrack -L in %s: %w: %s", ns, err, out)
		}
		if !strings.Contains(string(out), "ESTABLISHED") || !strings.Contains(string(out), "dst="+wanAddr) {
			return fmt.Errorf("%s's kernel has no masqueraded session to the WAN virtual address:\n%s", ns, out)
		}
		return nil
	}
}

// wantWANVIP checks whether ns holds the pair's WAN virtual address.
func wantWANVIP(ns *netlab.NS, want bool) func() error {
	return func() error {
		out, err := ns.IP("-4", "addr", "show", "dev", "wan0")
		if err != nil {
			return err
		}
		if has := strings.Contains(string(out), wanVIP); has != want {
			return fmt.Errorf("%s has %s: %v, want %v", ns, wanVIP, has, want)
		}
		return nil
	}
}

// gatherMetrics registers n, lints its metrics with promlint and returns
// the value of each sample as "name{labels}" → value.
func gatherMetrics(t *testing.T, n *Node) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(n); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := promlint.NewWithMetricFamilies(mfs).Lint(); err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}
