package wireguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// lab is two network namespaces joined by a veth pair: the gateway side
// (A, 192.0.2.1) and the client side (B, 192.0.2.2). Everything has a
// random suffix, so tests can run side by side, and is removed at cleanup.
type lab struct {
	t      testing.TB
	suffix string
	a, b   string // namespace names
}

func newLab(t testing.TB) *lab {
	t.Helper()
	testkit.NeedRoot(t)
	for _, tool := range [][2]string{{"ip", "iproute2"}, {"wireguard-go", "wireguard-go"}, {"wg", "wireguard-tools"},
		{"wg-quick", "wireguard-tools"}, {"ping", "iputils-ping"}, {"ss", "iproute2"}} {
		testkit.NeedTool(t, tool[0], tool[1])
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testkit.Unavailable(t, fmt.Sprintf("no /dev/net/tun (modprobe tun): %v", err))
	}
	var r [3]byte
	rand.Read(r[:])
	l := &lab{t: t, suffix: hex.EncodeToString(r[:])}
	l.a, l.b = "ewga"+l.suffix, "ewgb"+l.suffix
	for _, ns := range []string{l.a, l.b} {
		l.ip("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	va, vb := "va"+l.suffix, "vb"+l.suffix
	l.ip("link", "add", va, "netns", l.a, "type", "veth", "peer", "name", vb, "netns", l.b)
	l.ip("-n", l.a, "addr", "add", "192.0.2.1/24", "dev", va)
	l.ip("-n", l.b, "addr", "add", "192.0.2.2/24", "dev", vb)
	for ns, dev := range map[string]string{l.a: va, l.b: vb} {
		l.ip("-n", ns, "link", "set", "lo", "up")
		l.ip("-n", ns, "link", "set", dev, "up")
	}
	return l
}

func (l *lab) ip(args ...string) string {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exec runs a command in namespace ns and returns its combined output.
func (l *lab) exec(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(l.t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func (l *lab) mustExec(ns string, args ...string) string {
	l.t.Helper()
	out, err := l.exec(ns, args...)
	if err != nil {
		l.t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return out
}

// inNetns runs fn on an OS thread inside namespace ns. The thread stays
// locked, so the runtime throws it away afterwards.
func (l *lab) inNetns(ns string, fn func()) {
	l.t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		l.t.Fatalf("enter namespace %s: %v", ns, err)
	}
}

// noLeak waits for the number of goroutines to fall back to baseline.
func noLeak(t *testing.T, baseline int) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "goroutines stop", func() error {
		if n := runtime.NumGoroutine(); n > baseline {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("%d goroutines, %d before:\n%s", n, baseline, buf)
		}
		return nil
	})
}

func (l *lab) ping(ns, addr string) error {
	out, err := l.exec(ns, "ping", "-c1", "-W1", addr)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", addr, err, strings.TrimSpace(out))
	}
	return nil
}

// startStockClient runs Debian's wireguard-go as interface ifname in ns,
// the way wg-quick does: without -f it daemonizes only after the TUN device
// and the UAPI socket exist, so its exit status and output say whether it
// came up, with nothing to poll.
func (l *lab) startStockClient(ns, ifname string) {
	l.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "wireguard-go", ifname)
	// No LOG_LEVEL: with one set, the daemon keeps our stdout and stderr
	// open and CombinedOutput would never return.
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("stock wireguard-go %s in %s: %v\n%s", ifname, ns, err, out)
	}
	// Deleting the interface stops the daemon, as in wg-quick down.
	l.t.Cleanup(func() {
		exec.Command("ip", "-n", ns, "link", "del", ifname).Run()
		os.Remove("/var/run/wireguard/" + ifname + ".sock")
	})
	if out, err := l.exec(ns, "wg", "show", ifname); err != nil {
		l.t.Fatalf("wg show %s after wireguard-go started: %v\n%s", ifname, err, out)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func dropped(t *testing.T, d *Device, reason string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(d.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgegw_wireguard_dropped_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no dropped packets metric with reason %q", reason)
	return 0
}

func peerState(t *testing.T, d *Device, k Key) wgPeer {
	t.Helper()
	text, err := d.wg.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseIpcGet(text)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := st.peers[k]
	if !ok {
		t.Fatalf("peer %s is not configured", k)
	}
	return *p
}

// TestStockClient runs the device in one namespace and Debian's stock
// wireguard-go, configured from WriteClientConfig, in another, and checks
// traffic, reloads, drop counters and cleanup.
func TestStockClient(t *testing.T) {
	l := newLab(t)
	gwIf, clIf := "ewg"+l.suffix, "ecl"+l.suffix
	port := 20000 + int(l.suffix[0])*100 + int(l.suffix[1])
	clientPriv, _ := GeneratePrivateKey()
	cfg := Config{
		Interface:  gwIf,
		ListenPort: port,
		Address:    netip.MustParsePrefix("100.96.0.1/12"),
		Peers: []Peer{{
			Name: "laptop", PublicKey: clientPriv.PublicKey(),
			AllowedIPs: pfx("100.96.0.10/32", "10.99.0.0/24"), Email: "ops@corp.example",
		}},
	}
	stateDir := t.TempDir()
	dir := t.TempDir() // the client's files
	// What the steps share: the gateway's device, closed when the test
	// ends however far it got (Close is idempotent), and the goroutines
	// that ran before it.
	var (
		d        *Device
		baseline int
	)
	defer func() {
		if d != nil {
			d.Close()
		}
	}()

	if !t.Run("failed New leaves nothing", func(t *testing.T) {
		defer noLeak(t, runtime.NumGoroutine())
		var err error
		l.inNetns(l.a, func() {
			busy, lerr := net.ListenUDP("udp", &net.UDPAddr{Port: port + 7})
			if lerr != nil {
				err = lerr
				return
			}
			defer busy.Close()
			bad := cfg
			bad.ListenPort = port + 7
			_, err = New(bad, Options{StateDir: stateDir, Logger: testLogger(t)})
		})
		if err == nil || !strings.Contains(err.Error(), gwIf) {
			host, _ := exec.Command("ss", "-unlp").CombinedOutput()
			ns, _ := l.exec(l.a, "ss", "-unlp")
			t.Fatalf("New with a busy port: err = %v\nhost:\n%s\nns:\n%s", err, host, ns)
		}
		if out, err := l.exec(l.a, "ip", "link", "show", gwIf); err == nil {
			t.Fatalf("interface left behind:\n%s", out)
		}
	}) {
		return
	}

	if !t.Run("New makes the key, the routes and the UAPI socket", func(t *testing.T) {
		baseline = runtime.NumGoroutine()
		var err error
		l.inNetns(l.a, func() {
			d, err = New(cfg, Options{StateDir: stateDir, UAPI: true, Logger: testLogger(t)})
		})
		if err != nil {
			t.Fatal(err)
		}

		if _, err := os.Stat(filepath.Join(stateDir, "wireguard", gwIf+".key")); err != nil {
			t.Errorf("private key not generated: %v", err)
		}
		// Through the shared route manager: the route, and under it the
		// prefix's unreachable fallback (never to the WAN).
		if out := l.mustExec(l.a, "ip", "route", "show", "proto", "237"); !strings.Contains(out, "10.99.0.0/24 dev "+gwIf) ||
			!strings.Contains(out, "unreachable 10.99.0.0/24") {
			t.Errorf("no route and unreachable fallback for the peer's prefix outside the interface prefix:\n%s", out)
		}
		if out := l.mustExec(l.a, "wg", "show", gwIf); !strings.Contains(out, d.PublicKey().String()) {
			t.Errorf("wg show through the UAPI socket:\n%s", out)
		}
	}) {
		return
	}

	// The client, configured the way a user would be.
	if !t.Run("a stock client connects with the config edgegw wrote", func(t *testing.T) {
		l.startStockClient(l.b, clIf)
		cc, err := cfg.ClientConfigFor("laptop")
		if err != nil {
			t.Fatal(err)
		}
		cc.GatewayPublicKey = d.PublicKey()
		cc.Endpoint = fmt.Sprintf("192.0.2.1:%d", port)
		stripped := func(cc ClientConfig) string {
			conf := filepath.Join(dir, clIf+".conf")
			f, _ := os.OpenFile(conf, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err := WriteClientConfig(f, cc); err != nil {
				t.Fatal(err)
			}
			f.Close()
			out, err := exec.Command("wg-quick", "strip", conf).Output()
			if err != nil {
				t.Fatalf("wg-quick strip: %v", err)
			}
			path := filepath.Join(dir, "stripped")
			os.WriteFile(path, out, 0o600)
			return path
		}
		if out, err := l.exec(l.b, "wg", "setconf", clIf, stripped(cc)); err == nil {
			t.Errorf("wg setconf accepted the placeholder private key:\n%s", out)
		}
		cc.PrivateKey = clientPriv
		l.mustExec(l.b, "wg", "setconf", clIf, stripped(cc))
		l.mustExec(l.b, "ip", "addr", "add", "100.96.0.10/12", "dev", clIf)
		l.mustExec(l.b, "ip", "link", "set", clIf, "up")

		testkit.Eventually(t, 15*time.Second, "client pings the gateway", func() error { return l.ping(l.b, "100.96.0.1") })
		if err := l.ping(l.a, "100.96.0.10"); err != nil {
			t.Errorf("gateway → client: %v", err)
		}
		st := d.Status()
		if len(st.Peers) != 1 || st.Peers[0].Name != "laptop" || st.Peers[0].LastHandshake.IsZero() ||
			!strings.HasPrefix(st.Peers[0].Endpoint, "192.0.2.2:") || st.Peers[0].RxBytes == 0 || st.ListenPort != port {
			t.Errorf("Status = %+v", st)
		}
	}) {
		return
	}

	if !t.Run("adding a peer keeps the session", func(t *testing.T) {
		before := peerState(t, d, clientPriv.PublicKey())
		more := *cfg.Clone()
		more.Peers = append(more.Peers, Peer{Name: "phone", PublicKey: testKeyC, AllowedIPs: pfx("100.96.0.11/32")})
		if err := d.Set(more); err != nil {
			t.Fatal(err)
		}
		after := peerState(t, d, clientPriv.PublicKey())
		if !after.lastHandshake.Equal(before.lastHandshake) || after.endpoint != before.endpoint {
			t.Errorf("session changed: handshake %v → %v, endpoint %s → %s", before.lastHandshake, after.lastHandshake, before.endpoint, after.endpoint)
		}
		peerState(t, d, testKeyC)
		if err := l.ping(l.b, "100.96.0.1"); err != nil {
			t.Error(err)
		}
		// And removing it again.
		if err := d.Set(cfg); err != nil {
			t.Fatal(err)
		}
		if again := peerState(t, d, clientPriv.PublicKey()); !again.lastHandshake.Equal(before.lastHandshake) {
			t.Errorf("removing another peer renewed the session")
		}
		if len(d.Status().Peers) != 1 {
			t.Errorf("phone not removed: %+v", d.Status().Peers)
		}
	}) {
		return
	}

	if !t.Run("malformed datagrams are counted", func(t *testing.T) {
		before := dropped(t, d, "malformed")
		l.mustExec(l.b, "bash", "-c", fmt.Sprintf("printf 'not wireguard' > /dev/udp/192.0.2.1/%d", port))
		testkit.Eventually(t, 5*time.Second, "malformed counter", func() error {
			if v := dropped(t, d, "malformed"); v <= before {
				return fmt.Errorf("malformed = %v", v)
			}
			return nil
		})
		if err := l.ping(l.b, "100.96.0.1"); err != nil {
			t.Error(err)
		}
	}) {
		return
	}

	if !t.Run("metrics pass promlint", func(t *testing.T) {
		problems, err := testutil.CollectAndLint(d.Collector())
		if err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %+v", err, problems)
		}
		if n := testutil.CollectAndCount(d.Collector(), "edgegw_wireguard_peer_receive_bytes_total"); n != 1 {
			t.Errorf("%d receive series, want 1", n)
		}
	}) {
		return
	}

	if !t.Run("busy port is refused and the old one kept", func(t *testing.T) {
		var busy *net.UDPConn
		var err error
		l.inNetns(l.a, func() { busy, err = net.ListenUDP("udp", &net.UDPAddr{Port: port + 3}) })
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		bad := *cfg.Clone()
		bad.ListenPort = port + 3
		if err := d.Set(bad); err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("Set with a busy port: %v", err)
		}
		if st := d.Status(); st.ListenPort != port {
			t.Errorf("listen port %d after a failed change, want %d", st.ListenPort, port)
		}
		if err := l.ping(l.b, "100.96.0.1"); err != nil {
			t.Error(err)
		}
	}) {
		return
	}

	if !t.Run("port, address and MTU change in place", func(t *testing.T) {
		moved := *cfg.Clone()
		moved.ListenPort = port + 1
		moved.MTU = 1380
		moved.Address = netip.MustParsePrefix("100.96.0.2/12")
		// From this goroutine, which is not in the gateway's namespace: the
		// rebind must still happen there.
		if err := d.Set(moved); err != nil {
			t.Fatal(err)
		}
		sport := fmt.Sprintf("sport = :%d", port+1)
		if out := l.mustExec(l.a, "ss", "-Hunl", sport); !strings.Contains(out, fmt.Sprint(port+1)) {
			t.Errorf("new port not bound in the gateway's namespace")
		}
		if out, _ := exec.Command("ss", "-Hunl", sport).Output(); len(out) > 0 {
			t.Errorf("new port bound in the host namespace:\n%s", out)
		}
		link := l.mustExec(l.a, "ip", "addr", "show", gwIf)
		if !strings.Contains(link, "mtu 1380") || !strings.Contains(link, "100.96.0.2/12") || strings.Contains(link, "100.96.0.1/") {
			t.Errorf("interface after change:\n%s", link)
		}
		if out := l.mustExec(l.a, "ip", "route", "show", "proto", "237"); !strings.Contains(out, "10.99.0.0/24") {
			t.Errorf("route lost:\n%s", out)
		}
		l.mustExec(l.b, "wg", "set", clIf, "peer", d.PublicKey().String(), "endpoint", fmt.Sprintf("192.0.2.1:%d", port+1))
		testkit.Eventually(t, 10*time.Second, "ping after the move", func() error { return l.ping(l.b, "100.96.0.2") })
		if err := d.Set(moved); err != nil {
			t.Errorf("repeating Set: %v", err)
		}
	}) {
		return
	}

	if !t.Run("unknown key gets no traffic through", func(t *testing.T) {
		before := dropped(t, d, "invalid_handshake")
		other, _ := GeneratePrivateKey()
		keyFile := filepath.Join(dir, "other.key")
		os.WriteFile(keyFile, []byte(other.String()+"\n"), 0o600)
		l.mustExec(l.b, "wg", "set", clIf, "private-key", keyFile)
		for range 3 {
			if err := l.ping(l.b, "100.96.0.2"); err == nil {
				t.Fatal("ping through with a key the gateway does not know")
			}
		}
		if v := dropped(t, d, "invalid_handshake"); v <= before {
			t.Errorf("invalid_handshake = %v, want > %v", v, before)
		}
	}) {
		return
	}

	if !t.Run("Close leaves nothing and is idempotent", func(t *testing.T) {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if out, err := l.exec(l.a, "ip", "link", "show", gwIf); err == nil {
			t.Errorf("interface remains after Close:\n%s", out)
		}
		if out := l.mustExec(l.a, "ip", "route", "show", "proto", "237"); strings.TrimSpace(out) != "" {
			t.Errorf("routes remain after Close:\n%s", out)
		}
		if _, err := os.Stat("/var/run/wireguard/" + gwIf + ".sock"); err == nil {
			t.Error("UAPI socket remains after Close")
		}
		noLeak(t, baseline)
		if err := d.Set(cfg); err != ErrClosed {
			t.Errorf("Set after Close: %v", err)
		}
	}) {
		return
	}
}
