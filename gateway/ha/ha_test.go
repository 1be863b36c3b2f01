package ha

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

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

func TestValidate(t *testing.T) {
	ok := Config{Priority: 100, Peer: netip.MustParseAddr("10.9.0.2"), Interface: "sync0",
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}}}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"priority 0", func(c *Config) { c.Priority = 0 }, "priority"},
		{"priority 255", func(c *Config) { c.Priority = 255 }, "priority"},
		{"no peer", func(c *Config) { c.Peer = netip.Addr{} }, "peer"},
		{"v6 peer", func(c *Config) { c.Peer = netip.MustParseAddr("fd00::2") }, "peer"},
		{"no interface", func(c *Config) { c.Interface = "" }, "interface"},
		{"bad interface", func(c *Config) { c.Interface = "a b{" }, "interface"},
		{"vrid 256", func(c *Config) { c.VRID = 256 }, "vrid"},
		{"no vips", func(c *Config) { c.VirtualAddresses = VirtualAddresses{} }, "virtual_addresses"},
		{"v6 vip beside a v4 one", func(c *Config) {
			c.VirtualAddresses.LAN = []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}
		}, ""},
		{"link-local v6 vip", func(c *Config) {
			c.VirtualAddresses.LAN = []netip.Prefix{netip.MustParsePrefix("fe80::1/64")}
		}, "virtual_addresses.lan[0]"},
		{"only v6 vips", func(c *Config) {
			c.VirtualAddresses = VirtualAddresses{LAN: []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}}
		}, "virtual_addresses"},
		{"vrrp 4", func(c *Config) { c.VRRPVersion = 4 }, "vrrp_version"},
		{"v2 sub-second", func(c *Config) { c.AdvertInterval = 300 * time.Millisecond }, "advert_interval"},
		{"v2 1.5s", func(c *Config) { c.AdvertInterval = 1500 * time.Millisecond }, "advert_interval"},
		{"v3 300ms", func(c *Config) { c.VRRPVersion, c.AdvertInterval = 3, 300*time.Millisecond }, ""},
		{"v3 5ms", func(c *Config) { c.VRRPVersion, c.AdvertInterval = 3, 5*time.Millisecond }, "advert_interval"},
		{"v3 with a key", func(c *Config) { c.VRRPVersion, c.AuthKeyFile = 3, "/etc/edgegw/ha-key" }, "auth_key_file"},
		{"vip is peer", func(c *Config) {
			c.VirtualAddresses.WAN = []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}
		}, "virtual_addresses.wan[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.VirtualAddresses.WAN = append([]netip.Prefix(nil), ok.VirtualAddresses.WAN...)
			tc.edit(&c)
			c.SetDefaults()
			var got []string
			c.Validate(func(f, msg string) { got = append(got, f+": "+msg) })
			if tc.field == "" {
				if len(got) != 0 {
					t.Fatalf("valid config reported %v", got)
				}
				if c.VRID != DefaultVRID || c.VRRPVersion == 0 || c.AdvertInterval == 0 {
					t.Fatalf("defaults: vrid %d, version %d, advert %v", c.VRID, c.VRRPVersion, c.AdvertInterval)
				}
				return
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], tc.field+": ") {
				t.Fatalf("reports %v, want one on %s", got, tc.field)
			}
		})
	}
}

func TestRender(t *testing.T) {
	c := Config{Priority: 150, Peer: netip.MustParseAddr("10.9.0.2"), Interface: "sync0", VRID: 7,
		VirtualAddresses: VirtualAddresses{
			WAN: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")},
			LAN: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")},
		}}
	c.SetDefaults()
	for _, tc := range []struct {
		name    string
		preempt bool
		v3      bool
		key     string
		want    []string
		notWant []string
		wantErr bool
	}{
		{name: "nopreempt, no auth", want: []string{"nopreempt", "unicast_peer {\n\t\t10.9.0.2", "virtual_router_id 7",
			"priority 150", "192.0.2.10/24 dev wan0", "10.1.0.1/24 dev lan0", "track_interface {\n\t\twan0\n\t\tlan0",
			"notify_fifo /run/x.fifo", "interface sync0", "track_file edgegw_yield {\n\tfile \"/run/yield\"\n\tweight 0",
			"track_file {\n\t\tedgegw_yield"}, notWant: []string{"authentication"}},
		{name: "preempt", preempt: true, notWant: []string{"nopreempt"}},
		{name: "v2 defaults", want: []string{"version 2\n", "advert_int 1\n"}},
		{name: "v3, 300ms, v6", v3: true, want: []string{"version 3\n", "advert_int 0.3\n",
			"virtual_ipaddress_excluded {\n\t\tfd00::1/64 dev lan0\n\t}", "10.1.0.1/24 dev lan0"}},
		{name: "v3 with a key", v3: true, key: "k", wantErr: true},
		{name: "key cut to 8", key: "0123456789abc\n", want: []string{"auth_type PASS", "auth_pass 01234567\n"}},
		{name: "key with brace", key: "ab}cdef", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := c
			c.Preempt = tc.preempt
			if tc.v3 {
				c.VRRPVersion, c.AdvertInterval = 3, 300*time.Millisecond
				c.VirtualAddresses.LAN = []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24"), netip.MustParsePrefix("fd00::1/64")}
			}
			got, err := Render(c, Links{WAN: "wan0", LAN: "lan0"}, tc.key, "/run/x.fifo", "/run/yield")
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("unwanted %q in\n%s", w, got)
				}
			}
		})
	}
	if _, err := Render(c, Links{WAN: "", LAN: "lan0"}, "", "/f", ""); err == nil {
		t.Fatal("wan VIPs without a WAN interface rendered")
	}
}

// TestRenderAccepted has keepalived itself check the rendered file.
func TestRenderAccepted(t *testing.T) {
	testkit.NeedRoot(t)
	bin := testkit.NeedTool(t, "keepalived", "keepalived")
	lab := netlab.NewT(t)
	ns, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(ns, "sync0", "10.9.0.1/24", ns, "wan0", ""); err != nil {
		t.Fatal(err)
	}
	c := Config{Priority: 150, Peer: netip.MustParseAddr("10.9.0.2"), Interface: "sync0", VRID: 7,
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}}}
	text, err := Render(c, Links{WAN: "wan0"}, "secret12", filepath.Join(t.TempDir(), "f"), filepath.Join(t.TempDir(), "yield"))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "keepalived.conf")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := ns.Exec(context.Background(), bin, "--config-test", "--use-file", f)
	if err != nil {
		t.Fatalf("keepalived --config-test: %v\n%s\n%s", err, out, text)
	}
	// VRRPv3, sub-second adverts, IPv6 addresses beside the IPv4 one.
	c.VRRPVersion, c.AdvertInterval = 3, 300*time.Millisecond
	c.VirtualAddresses.WAN = append(c.VirtualAddresses.WAN, netip.MustParsePrefix("2001:db8::10/64"))
	if text, err = Render(c, Links{WAN: "wan0"}, "", filepath.Join(t.TempDir(), "f"), filepath.Join(t.TempDir(), "yield")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.Exec(context.Background(), bin, "--config-test", "--use-file", f); err != nil {
		t.Fatalf("keepalived --config-test (v3): %v\n%s\n%s", err, out, text)
	}
}

func TestParseNotify(t *testing.T) {
	for _, tc := range []struct{ line, kind, name, state string }{
		{`INSTANCE "edgegw" MASTER 100`, "INSTANCE", "edgegw", "MASTER"},
		{`GROUP "g" BACKUP 0`, "GROUP", "g", "BACKUP"},
		{`INSTANCE "edgegw" FAULT 0` + "\n", "INSTANCE", "edgegw", "FAULT"},
		{`INSTANCE edgegw MASTER`, "", "", ""},
		{`INSTANCE "edgegw MASTER`, "", "", ""},
		{`INSTANCE "edgegw" WHATEVER 1`, "", "", ""},
		{``, "", "", ""},
	} {
		k, n, s, ok := parseNotify(tc.line)
		if ok != (tc.kind != "") || k != tc.kind || n != tc.name || s != tc.state {
			t.Errorf("parseNotify(%q) = %q %q %q %v", tc.line, k, n, s, ok)
		}
	}
}

func FuzzParseNotify(f *testing.F) {
	for _, s := range []string{`INSTANCE "edgegw" MASTER 100`, `GROUP "g" STOP 0`, `"`, `X ""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		k, _, s, ok := parseNotify(line)
		if ok && (k == "" || s == "") {
			t.Fatalf("ok with empty kind or state: %q", line)
		}
	})
}

func startNode(t *testing.T, ns *netlab.NS, prio int, peer string, dir string) *Node {
	t.Helper()
	return startNodeOn(t, ns, prio, peer, dir, "sync0")
}

// startNodeOn starts a Node whose WAN virtual address goes on wan.
func startNodeOn(t *testing.T, ns *netlab.NS, prio int, peer, dir, wan string) *Node {
	t.Helper()
	c := Config{Priority: prio, Peer: netip.MustParseAddr(peer), Interface: "sync0",
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}}}
	c.SetDefaults()
	var bad []string
	c.Validate(func(f, m string) { bad = append(bad, f+": "+m) })
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	n, err := New(c, Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		StateDir: dir, Links: Links{WAN: wan}, Enter: ns.Do, Backoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func hasVIP(ns *netlab.NS) (bool, error) { return hasVIPOn(ns, "sync0") }

func hasVIPOn(ns *netlab.NS, dev string) (bool, error) {
	out, err := ns.IP("-4", "addr", "show", "dev", dev)
	if err != nil {
		return false, err
	}
	return strings.Contains(string(out), "10.9.0.100/24"), nil
}

func wantRole(n *Node, role string) func() error {
	return func() error {
		if r, _ := n.Role(); r != role {
			return fmt.Errorf("role %s, want %s", r, role)
		}
		return nil
	}
}

func wantVIP(ns *netlab.NS, want bool) func() error { return wantVIPOn(ns, "sync0", want) }

func wantVIPOn(ns *netlab.NS, dev string, want bool) func() error {
	return func() error {
		has, err := hasVIPOn(ns, dev)
		if err != nil {
			return err
		}
		if has != want {
			return fmt.Errorf("%s has the VIP: %v, want %v", ns, has, want)
		}
		return nil
	}
}

// TestFailover runs real keepalived under two Nodes in two namespaces on a
// shared link: the higher priority takes the virtual address, loses it to
// the peer when it stops, and does not take it back when it returns
// (preemption off).
func TestFailover(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "keepalived", "keepalived")
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "sync0", "10.9.0.1/24", b, "sync0", "10.9.0.2/24"); err != nil {
		t.Fatal(err)
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	na := startNode(t, a, 200, "10.9.0.2", dirA)
	defer func() { na.Close() }()
	nb := startNode(t, b, 100, "10.9.0.1", dirB)
	defer nb.Close()

	const deadline = 30 * time.Second // VRRP needs ~3-4 s; CI load adds more
	testkit.Eventually(t, deadline, "a is master", wantRole(na, RoleMaster))
	testkit.Eventually(t, deadline, "b is backup", wantRole(nb, RoleBackup))
	testkit.Eventually(t, deadline, "VIP on a", wantVIP(a, true))
	testkit.Eventually(t, deadline, "VIP not on b", wantVIP(b, false))
	if s := na.Status(); s.Role != RoleMaster || s.Peer != "10.9.0.2" || s.Last == nil {
		t.Fatalf("status %+v", s)
	}

	// a leaves: keepalived drops the address, b takes it.
	if err := na.Close(); err != nil {
		t.Fatal(err)
	}
	if r, _ := na.Role(); r != RoleDown {
		t.Fatalf("closed node's role %s", r)
	}
	testkit.Eventually(t, deadline, "VIP moved to b", wantVIP(b, true))
	testkit.Eventually(t, deadline, "b is master", wantRole(nb, RoleMaster))
	if has, _ := hasVIP(a); has {
		t.Fatal("stopped node kept the VIP")
	}
	for _, f := range []string{"notify.fifo", "keepalived.pid", "vrrp.pid"} {
		if _, err := os.Stat(filepath.Join(dirA, "ha", f)); err == nil {
			t.Errorf("Close left %s", f)
		}
	}

	// a returns with the higher priority: with preemption off it stays
	// backup and b keeps the address.
	na = startNode(t, a, 200, "10.9.0.2", dirA)
	testkit.Eventually(t, deadline, "returning a is backup", wantRole(na, RoleBackup))
	// Three advert intervals and more: time enough for a preemption that
	// should not happen; b must still be master.
	time.Sleep(4 * time.Second)
	if r, _ := nb.Role(); r != RoleMaster {
		t.Fatalf("b is %s after a returned, want master (nopreempt)", r)
	}
	if err := wantVIP(a, false)(); err != nil {
		t.Fatal(err)
	}
}

// TestRestart kills keepalived behind the Node's back: the supervisor
// starts it again and the node becomes master again.
func TestRestart(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "keepalived", "keepalived")
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "sync0", "10.9.0.1/24", b, "sync0", "10.9.0.2/24"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := startNode(t, a, 200, "10.9.0.2", dir) // alone: the peer never answers
	defer n.Close()
	testkit.Eventually(t, 30*time.Second, "master", wantRole(n, RoleMaster))
	pid, err := os.ReadFile(filepath.Join(dir, "ha", "keepalived.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testExec("kill", "-9", strings.TrimSpace(string(pid))); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "restarted", func() error {
		if s := n.Status(); s.Restarts == 0 {
			return fmt.Errorf("no restart yet")
		}
		return nil
	})
	testkit.Eventually(t, 30*time.Second, "master again", wantRole(n, RoleMaster))
	testkit.Eventually(t, 30*time.Second, "VIP back", wantVIP(a, true))
}

// TestWANLinkLoss pulls the active node's WAN link: keepalived tracks it,
// the node goes to FAULT and gives the address up, and the peer takes it.
func TestWANLinkLoss(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "keepalived", "keepalived")
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "sync0", "10.9.0.1/24", b, "sync0", "10.9.0.2/24"); err != nil {
		t.Fatal(err)
	}
	// Each node's WAN is a veth whose other end (the "uplink") stays in
	// the same namespace.
	for _, ns := range []*netlab.NS{a, b} {
		if err := lab.Link(ns, "wan0", "", ns, "uplink0", ""); err != nil {
			t.Fatal(err)
		}
	}
	na := startNodeOn(t, a, 200, "10.9.0.2", t.TempDir(), "wan0")
	defer na.Close()
	nb := startNodeOn(t, b, 100, "10.9.0.1", t.TempDir(), "wan0")
	defer nb.Close()
	const deadline = 30 * time.Second
	testkit.Eventually(t, deadline, "a is master", wantRole(na, RoleMaster))
	testkit.Eventually(t, deadline, "b is backup", wantRole(nb, RoleBackup))
	testkit.Eventually(t, deadline, "VIP on a", wantVIPOn(a, "wan0", true))

	if _, err := a.IP("link", "set", "wan0", "down"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, deadline, "a in fault", wantRole(na, RoleFault))
	testkit.Eventually(t, deadline, "b is master", wantRole(nb, RoleMaster))
	testkit.Eventually(t, deadline, "VIP moved to b", wantVIPOn(b, "wan0", true))
	testkit.Eventually(t, deadline, "VIP gone from a", wantVIPOn(a, "wan0", false))
	if s := na.Status(); !strings.Contains(s.Reason, "FAULT") {
		t.Fatalf("fault reason %q", s.Reason)
	}
}

// TestLeftoverKilled starts a keepalived the way a crashed edgegw would
// have left it (its pid file in the state directory): New kills it before
// starting its own.
func TestLeftoverKilled(t *testing.T) {
	testkit.NeedRoot(t)
	bin := testkit.NeedTool(t, "keepalived", "keepalived")
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "sync0", "10.9.0.1/24", b, "sync0", "10.9.0.2/24"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hd := filepath.Join(dir, "ha")
	if err := os.MkdirAll(hd, 0o700); err != nil {
		t.Fatal(err)
	}
	c := Config{Priority: 200, Peer: netip.MustParseAddr("10.9.0.2"), Interface: "sync0", VRID: DefaultVRID,
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}}}
	text, err := Render(c, Links{WAN: "sync0"}, "", filepath.Join(hd, "old.fifo"), "")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(hd, "old.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := a.Start(bin, "--dont-fork", "--vrrp", "--log-console", "--no-syslog", "--use-file", conf,
		"--pid", filepath.Join(hd, "keepalived.pid"), "--vrrp_pid", filepath.Join(hd, "vrrp.pid"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Kill()
	testkit.Eventually(t, 30*time.Second, "leftover's pid file", func() error {
		_, err := os.Stat(filepath.Join(hd, "keepalived.pid"))
		return err
	})
	n := startNode(t, a, 200, "10.9.0.2", dir)
	defer n.Close()
	select {
	case <-old.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the leftover keepalived still runs")
	}
	testkit.Eventually(t, 30*time.Second, "new keepalived master", wantRole(n, RoleMaster))
	testkit.Eventually(t, 30*time.Second, "VIP", wantVIP(a, true))
}

func TestRenderConntrackd(t *testing.T) {
	c := Config{Priority: 150, Peer: netip.MustParseAddr("10.9.0.2"), Interface: "sync0", VRID: 7,
		VirtualAddresses: VirtualAddresses{
			WAN: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")},
			LAN: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")},
		}}
	paths := ctPaths{Lock: "/s/ha/conntrackd.lock", Ctl: "/s/ha/conntrackd.ctl"}
	local := netip.MustParseAddr("10.9.0.1")
	// 192.0.2.10, the WAN virtual address, is among the node's addresses
	// when it holds it: sessions to it are synced all the same.
	got, err := RenderConntrackd(c, paths, local, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fe80::1"), local, netip.MustParseAddr("192.0.2.10")})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"LockFile /s/ha/conntrackd.lock", "Path /s/ha/conntrackd.ctl", "Mode FTFW",
		"DisableExternalCache On", "IPv4_address 10.9.0.1\n", "IPv4_Destination_Address 10.9.0.2", "Port 3780",
		"Interface sync0", "IPv4_address 10.1.0.1\n", "IPv4_address 192.0.2.1\n",
		"IPv6_address fe80::1", "IPv4_address 127.0.0.1", "IPv6_address ::1"} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in\n%s", w, got)
		}
	}
	if strings.Contains(got, "192.0.2.10") {
		t.Errorf("the WAN virtual address is ignored: sessions to it (WireGuard) would not be synced\n%s", got)
	}
	if n := strings.Count(got, "IPv4_address 10.9.0.1\n"); n != 2 { // the UDP source and one filter entry
		t.Errorf("local address %d times, want 2 (duplicates compacted)\n%s", n, got)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config, *ctPaths, *netip.Addr)
	}{
		{"v6 local", func(_ *Config, _ *ctPaths, l *netip.Addr) { *l = netip.MustParseAddr("fd00::1") }},
		{"no local", func(_ *Config, _ *ctPaths, l *netip.Addr) { *l = netip.Addr{} }},
		{"path with space", func(_ *Config, p *ctPaths, _ *netip.Addr) { p.Ctl = "/a b" }},
		{"empty lock", func(_ *Config, p *ctPaths, _ *netip.Addr) { p.Lock = "" }},
		{"bad interface", func(c *Config, _ *ctPaths, _ *netip.Addr) { c.Interface = "x}" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p, l := c, paths, local
			tc.edit(&c, &p, &l)
			if _, err := RenderConntrackd(c, p, l, nil); err == nil {
				t.Fatal("rendered")
			}
		})
	}
}

// TestConntrackdAccepted starts conntrackd on a rendered file in a
// namespace and asks it for its statistics over the private socket.
func TestConntrackdAccepted(t *testing.T) {
	testkit.NeedRoot(t)
	bin := testkit.NeedTool(t, "conntrackd", "conntrackd")
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "sync0", "10.9.0.1/24", a, "peer0", ""); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := Config{Priority: 150, Peer: netip.MustParseAddr("10.9.0.2"), Interface: "sync0", VRID: 7,
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}}}
	var local netip.Addr
	var own []netip.Addr
	if err := a.Do(func() (err error) { local, own, err = syncAddrs("sync0", c.Peer); return err }); err != nil {
		t.Fatal(err)
	}
	if local != netip.MustParseAddr("10.9.0.1") {
		t.Fatalf("sync address %v", local)
	}
	text, err := RenderConntrackd(c, ctPaths{Lock: filepath.Join(dir, "lock"), Ctl: filepath.Join(dir, "ctl")}, local, own)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conntrackd.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := a.Start(bin, "-C", conf)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	testkit.Eventually(t, 30*time.Second, "conntrackd answers", func() error {
		out, err := a.Exec(context.Background(), bin, "-C", conf, "-s")
		if err != nil {
			return fmt.Errorf("%w: %s\n%s", err, out, p.Output())
		}
		return nil
	})
	if err := a.Do(func() error { _, _, err := syncAddrs("sync0", netip.MustParseAddr("10.8.0.2")); return err }); err == nil {
		t.Fatal("a peer outside the sync link's subnet was accepted")
	}
}

// ctStatsOut is `conntrackd -s` as conntrackd 1.4.7 prints it.
const ctStatsOut = `cache internal:
current active connections:	           0
connections created:		           0	failed:	           0
connections updated:		           0	failed:	           0
connections destroyed:		           0	failed:	           0

external inject:
connections created:		           3	failed:	           0
connections updated:		          17	failed:	           0
connections destroyed:		           1	failed:	           0

traffic processed:
                   0 Bytes                         0 Pckts

UDP traffic (active device=sync0):
                  96 Bytes sent                   96 Bytes recv
                   6 Pckts sent                    7 Pckts recv
                   0 Error send                    0 Error recv

message tracking:
                   0 Malformed msgs                    0 Lost msgs
`

func TestParseCtStats(t *testing.T) {
	s, ok := parseCtStats(ctStatsOut)
	if !ok || s != (SyncStats{PacketsSent: 6, PacketsReceived: 7, Injected: 20}) {
		t.Fatalf("parseCtStats = %+v %v", s, ok)
	}
	for name, out := range map[string]string{
		"empty":        "",
		"no udp":       strings.Replace(ctStatsOut, "Pckts sent", "Packets sent", 1),
		"no inject":    strings.Replace(ctStatsOut, "external inject:", "external cache:", 1),
		"bad number":   strings.Replace(ctStatsOut, "6 Pckts sent", "x Pckts sent", 1),
		"error output": "[ERROR] can't connect: is conntrackd running? appropriate permissions?",
	} {
		if _, ok := parseCtStats(out); ok {
			t.Errorf("%s parsed", name)
		}
	}
}

func FuzzParseCtStats(f *testing.F) {
	f.Add(ctStatsOut)
	f.Add("")
	f.Fuzz(func(t *testing.T, out string) { parseCtStats(out) })
}
