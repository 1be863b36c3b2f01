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
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/swanbranch"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

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
	log                        *testkit.Buffer // the engine's log, for assertions
	dir                        string
	changes                    chan string
	branch                     *swanbranch.Branch // the branch's charon, once started
	branchDir                  string             // its files, for the whole test
}

// skipWithoutStrongSwan fails the test (skips it in -short mode) unless
// strongSwan's charon, swanctl and the plugins of the test's backend are
// installed.
func skipWithoutStrongSwan(t *testing.T) {
	t.Helper()
	swanbranch.Need(t, DefaultCharon, testBackend())
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
	x := &lab{l: netlab.NewT(t), log: &testkit.Buffer{}, dir: t.TempDir(), branchDir: t.TempDir(), changes: make(chan string, 64)}
	b, err := x.l.Branch()
	if err != nil {
		t.Fatal(err)
	}
	x.lan, x.gwNS, x.wan, x.brNS, x.blan = b.LAN, b.GW, b.WAN, b.BR, b.BLAN
	if _, err := x.brNS.IP("addr", "add", "10.200.3.1/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	return x
}

// startEngine runs edgegw's engine in gw.
func (x *lab) startEngine(t *testing.T) {
	t.Helper()
	var w io.Writer = x.log
	if testing.Verbose() {
		w = io.MultiWriter(x.log, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
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
	return swanbranch.Conn{
		Name: "gw", Local: "198.51.100.20", Remote: "203.0.113.10",
		LocalID: "fra.corp.example", RemoteID: "lon.corp.example",
		LocalTS:   []string{"10.20.0.0/16", "10.200.3.1/32"},
		RemoteTS:  []string{"10.10.0.0/16", "10.200.3.0/32"},
		Proposals: ike, ESPProposals: esp, PSK: psk, Initiate: initiate,
	}.Swanctl()
}

// startBranch starts the branch's charon and loads its swanctl.conf.
func (x *lab) startBranch(t *testing.T, swanctl string) {
	t.Helper()
	x.branch = startStrongSwan(t, x.brNS, x.branchDir, swanctl)
}

// startStrongSwan starts a stock charon in ns with its files in dir and
// loads swanctl into it; its ESP is where edgegw's is.
func startStrongSwan(t *testing.T, ns *netlab.NS, dir, swanctl string) *swanbranch.Branch {
	t.Helper()
	return swanbranch.Start(t, ns, DefaultCharon, testBackend(), dir, swanctl)
}

func (x *lab) swanctl(t *testing.T, args ...string) string {
	t.Helper()
	return x.branch.Swanctl(t, args...)
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
			branch, out := "", ""
			if x.branch != nil {
				branch, out = x.branch.Log(), x.branch.Proc.Output()
			}
			return fmt.Errorf("down (last error %q); log, SA lines:\n%s\nlog, last lines:\n%s\nbranch:\n%s\n%s",
				s.LastError, tail(saLines(x.log.String()), 30), tail(x.log.String(), 15), tail(branch, 20), tail(out, 10))
		}
		return nil
	})
}

// diag is what explains an SA that changed: edgegw's log and the
// branch charon's, ends only.
func (x *lab) diag() string {
	branch := ""
	if x.branch != nil {
		branch = x.branch.Log()
	}
	return "edgegw:\n" + tail(x.log.String(), 40) + "\nbranch:\n" + tail(branch, 40)
}

// saLines keeps the lines of a log that tell what became of SAs (not
// the DPD and packet chatter that fill its tail).
func saLines(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		l := strings.ToLower(line)
		if strings.Contains(l, "child") || strings.Contains(l, "established") || strings.Contains(l, "fail") ||
			strings.Contains(l, "error") || strings.Contains(l, "unable") || strings.Contains(l, "tunnel up") ||
			strings.Contains(l, "tunnel down") || strings.Contains(l, "initiat") {
			b.WriteString(line)
		}
	}
	return b.String()
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
	x.branch.Reload(t, swanctl, "gw")
}
