//go:build linux

package ipsec

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// logBuffer collects the engine's log records as text for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		os.Stderr.Write(p)
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lab is office LAN ⇄ gw (edgegw's engine) ⇄ WAN ⇄ branch (a stock
// strongSwan configured by the test) ⇄ branch LAN:
//
//	lan 10.10.0.2 ─ 10.10.0.1 gw 203.0.113.10 ─ wan ─ 198.51.100.20 br 10.20.0.1 ─ 10.20.0.2 blan
//	tunnel addresses 10.200.3.0/31 (gw, on its device: xfrm interface branch1
//	or the TUN ipsec0) ⇄ 10.200.3.1 (branch, on lo)
type lab struct {
	l                          *netlab.Lab
	lan, gwNS, wan, brNS, blan *netlab.NS
	eng                        *Engine
	log                        *logBuffer
	dir                        string
	changes                    chan string
	branchCharon               *netlab.Proc
	branchDir                  string
}

// skipWithoutStrongSwan fails the test (skips it in -short mode) unless
// strongSwan's charon, swanctl and the plugins of the test's backend are
// installed.
func skipWithoutStrongSwan(t *testing.T) {
	t.Helper()
	testkit.NeedTool(t, DefaultCharon, "charon-systemd")
	testkit.NeedTool(t, "swanctl", "strongswan-swanctl")
	if err := checkPlugins(testBackend()); err != nil {
		testkit.Unavailable(t, fmt.Sprintf("%v (make deps installs them)", err))
	}
}

// testBackend is the backend the tests run: $EDGEGW_IPSEC_BACKEND (kernel
// or kernel-libipsec) or else what this kernel allows, the kernel in the
// appliance VM and kernel-libipsec on the CI machines.
func testBackend() string {
	if b := os.Getenv("EDGEGW_IPSEC_BACKEND"); b != "" {
		return b
	}
	return DefaultBackend()
}

func newLab(t *testing.T) *lab {
	skipWithoutStrongSwan(t)
	x := &lab{l: netlab.NewT(t), log: &logBuffer{}, dir: t.TempDir(), branchDir: t.TempDir(), changes: make(chan string, 64)}
	for _, n := range []struct {
		p    **netlab.NS
		name string
	}{{&x.lan, "lan"}, {&x.gwNS, "gw"}, {&x.wan, "wan"}, {&x.brNS, "br"}, {&x.blan, "blan"}} {
		ns, err := x.l.NS(n.name)
		if err != nil {
			t.Fatal(err)
		}
		*n.p = ns
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(x.l.Link(x.lan, "eth0", "10.10.0.2/24", x.gwNS, "eth1", "10.10.0.1/24"))
	must(x.l.Link(x.gwNS, "eth0", "203.0.113.10/24", x.wan, "togw", "203.0.113.1/24"))
	must(x.l.Link(x.brNS, "eth0", "198.51.100.20/24", x.wan, "tobr", "198.51.100.1/24"))
	must(x.l.Link(x.brNS, "eth1", "10.20.0.1/24", x.blan, "eth0", "10.20.0.2/24"))
	must(x.lan.Route("default", "10.10.0.1"))
	must(x.blan.Route("default", "10.20.0.1"))
	must(x.gwNS.Route("default", "203.0.113.1"))
	must(x.brNS.Route("default", "198.51.100.1"))
	for _, ns := range []*netlab.NS{x.gwNS, x.wan, x.brNS} {
		must(ns.Sysctl("net.ipv4.ip_forward", "1"))
		must(ns.Sysctl("net.ipv4.conf.all.rp_filter", "0"))
		must(ns.Sysctl("net.ipv4.conf.default.rp_filter", "0"))
	}
	if _, err := x.brNS.IP("addr", "add", "10.200.3.1/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	return x
}

// startEngine runs edgegw's engine in gw.
func (x *lab) startEngine(t *testing.T) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(x.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	err := x.gwNS.Do(func() error {
		var err error
		x.eng, err = New(context.Background(), Options{Logger: log, Dir: filepath.Join(x.dir, "ipsec"), Backend: testBackend(),
			OnChange: func(name string, up bool) {
				select {
				case x.changes <- fmt.Sprintf("%s %v", name, up):
				default:
				}
			}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.eng.Close() })
}

// gwTunnel is the gw's end, as edgegw's configuration would have it.
func (x *lab) gwTunnel(t *testing.T, psk, ike, esp string, initiator bool) Tunnel {
	c := Config{
		Name: "branch1", Local: netip.MustParseAddr("203.0.113.10"), Remote: netip.MustParseAddr("198.51.100.20"),
		LocalID: "lon.corp.example", RemoteID: "fra.corp.example", PSKFile: writePSK(t, x.dir, "gw.psk", psk),
		Address: netip.MustParsePrefix("10.200.3.0/31"), Initiator: initiator, DPD: 2 * time.Second,
	}
	if ike != "" {
		c.IKEProposals = []string{ike}
	}
	if esp != "" {
		c.ESPProposals = []string{esp}
	}
	c.SetDefaults()
	c.HealthCheck.SetDefaults()
	var errs []string
	c.Validate(func(f, m string) { errs = append(errs, f+": "+m) })
	if len(errs) > 0 {
		t.Fatalf("gw tunnel config: %v", errs)
	}
	return Tunnel{Config: c, Routed: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}}
}

func writePSK(t *testing.T, dir, name, psk string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(psk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// set applies tunnels in the gw and routes the branch LAN into the
// tunnel's device.
func (x *lab) set(t *testing.T, ts ...Tunnel) {
	t.Helper()
	if err := x.eng.Set(ts); err != nil {
		t.Fatal(err)
	}
	x.routeGW(t)
}

func (x *lab) routeGW(t *testing.T) {
	t.Helper()
	if out, err := x.gwNS.IP("route", "replace", "10.20.0.0/16", "dev", x.eng.Device("branch1")); err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// branchConf is the branch's own swanctl.conf: a stock strongSwan set up
// as a branch router's documentation would, independent of edgegw's code.
func branchConf(psk, ike, esp string, initiate bool) string {
	start := "none"
	if initiate {
		start = "start"
	}
	return fmt.Sprintf(`connections {
	gw {
		version = 2
		local_addrs = 198.51.100.20
		remote_addrs = 203.0.113.10
		proposals = %s
		dpd_delay = 2s
		local {
			auth = psk
			id = fra.corp.example
		}
		remote {
			auth = psk
			id = lon.corp.example
		}
		children {
			gw {
				local_ts = 10.20.0.0/16, 10.200.3.1/32
				remote_ts = 10.10.0.0/16, 10.200.3.0/32
				esp_proposals = %s
				start_action = %s
				dpd_action = restart
			}
		}
	}
}
secrets {
	ike-gw {
		id-1 = fra.corp.example
		id-2 = lon.corp.example
		secret = "%s"
	}
}
`, ike, esp, start, psk)
}

// branchStrongswanConf is the branch's strongswan.conf: policy-based, its
// routes in table 220 as strongSwan does by default, ESP where edgegw's
// is (the plugin list of the test's backend).
const branchStrongswanConf = `charon-systemd {
	load = %s
	install_routes = yes
	retransmit_tries = 2
	retransmit_timeout = 1
	plugins {
		vici {
			socket = unix://%s
		}
	}
	journal {
		default = -1
	}
	filelog {
		f {
			path = %s
			default = 1
		}
	}
}
`

// startBranch starts the branch's charon and loads its swanctl.conf.
func (x *lab) startBranch(t *testing.T, swanctl string) {
	t.Helper()
	x.branchCharon = startStrongSwan(t, x.brNS, x.branchDir, swanctl)
}

// startStrongSwan starts a stock charon in ns with its files in dir and
// loads swanctl into it.
func startStrongSwan(t *testing.T, ns *netlab.NS, dir, swanctl string) *netlab.Proc {
	t.Helper()
	sock := filepath.Join(dir, "charon.vici")
	conf := filepath.Join(dir, "strongswan.conf")
	os.Remove(sock)
	if err := os.WriteFile(conf, fmt.Appendf(nil, branchStrongswanConf, pluginList(testBackend()), sock, filepath.Join(dir, "charon.log")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "swanctl.conf"), []byte(swanctl), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(DefaultCharon)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+conf)
	p, err := ns.StartCmd(cmd)
	if err != nil {
		t.Fatal(err)
	}
	netlab.Eventually(t, 10*time.Second, "branch charon's VICI socket", func() error {
		_, err := os.Stat(sock)
		return err
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if out, err := ns.Exec(ctx, "swanctl", "--load-all", "--file", filepath.Join(dir, "swanctl.conf"), "--uri", "unix://"+sock); err != nil {
		t.Fatalf("swanctl --load-all: %v\n%s", err, out)
	}
	return p
}

func (x *lab) swanctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	args = append(args, "--uri", "unix://"+filepath.Join(x.branchDir, "charon.vici"))
	out, err := x.brNS.Exec(ctx, "swanctl", args...)
	if err != nil {
		t.Fatalf("swanctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (x *lab) status(name string) TunnelStatus {
	for _, s := range x.eng.Status() {
		if s.Name == name {
			return s
		}
	}
	return TunnelStatus{}
}

func (x *lab) waitUp(t *testing.T, name string, timeout time.Duration) {
	t.Helper()
	netlab.Eventually(t, timeout, name+" up", func() error {
		if s := x.status(name); !s.Up {
			b, _ := os.ReadFile(filepath.Join(x.branchDir, "charon.log"))
			out := ""
			if x.branchCharon != nil {
				out = x.branchCharon.Output()
			}
			return fmt.Errorf("down (last error %q); log:\n%s\nbranch:\n%s\n%s", s.LastError, tail(x.log.String(), 15), tail(string(b), 20), tail(out, 10))
		}
		return nil
	})
}

// diag is what explains an SA that changed: edgegw's log and the
// branch charon's, ends only.
func (x *lab) diag() string {
	b, _ := os.ReadFile(filepath.Join(x.branchDir, "charon.log"))
	return "edgegw:\n" + tail(x.log.String(), 40) + "\nbranch:\n" + tail(string(b), 40)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// startEcho serves back every byte it reads, in blan.
func (x *lab) startEcho(t *testing.T) {
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
				io.Copy(c, c)
			}()
		}
	}()
}

// tcpEcho sends n bytes from lan to blan's echo server and checks they
// come back.
func (x *lab) tcpEcho(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := x.lan.DialContext(ctx, "tcp4", "10.20.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go fmt.Fprint(c, strings.Repeat("x", n-1)+"\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || len(got) != n {
		t.Fatalf("TCP echo: %d of %d bytes: %v", len(got), n, err)
	}
}

// reloadBranch replaces the branch's configuration and restarts its SA.
func (x *lab) reloadBranch(t *testing.T, swanctl string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(x.branchDir, "swanctl.conf"), []byte(swanctl), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	uri := "unix://" + filepath.Join(x.branchDir, "charon.vici")
	x.brNS.Exec(ctx, "swanctl", "--terminate", "--ike", "gw", "--force", "--timeout", "2", "--uri", uri)
	x.swanctl(t, "--load-all", "--file", filepath.Join(x.branchDir, "swanctl.conf"))
	x.brNS.Exec(ctx, "swanctl", "--initiate", "--child", "gw", "--timeout", "10", "--uri", uri)
}
