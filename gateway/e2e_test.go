package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/edgegw/edgegw/access/acme/acmetest"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// binary is the edgegw built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "edgegw-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer acmetest.Cleanup() // the Pebble TestACMEThroughGateway installed
	binary = filepath.Join(dir, "edgegw")
	out, err := exec.Command("go", "build", "-o", binary, "../cmd/edgegw").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build edgegw: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, ns *netlab.NS, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, name, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out)
}

// wgKey makes a key pair with stock `wg`, as a user would.
func wgKey(t testing.TB, ns *netlab.NS, dir, name string) (privFile, pub string) {
	t.Helper()
	priv := strings.TrimSpace(run(t, ns, "wg", "genkey"))
	privFile = filepath.Join(dir, name+".key")
	must(t, os.WriteFile(privFile, []byte(priv+"\n"), 0o600))
	cmd := ns.Command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(priv + "\n")
	out, err := cmd.Output()
	must(t, err)
	return privFile, strings.TrimSpace(string(out))
}

// site is one gateway under test: the topology, its config and process.
type site struct {
	t      testing.TB
	lab    *netlab.Lab
	ra     *netlab.RemoteAccess
	dir    string
	wgIf   string // the gateway's WireGuard interface (unique: UAPI sockets are global)
	cfg    string
	proc   *netlab.Proc
	peers  []string // YAML of static peers
	extras string
}

func newSite(t testing.TB) *site {
	lab := netlab.NewT(t)
	ra, err := lab.RemoteAccess()
	must(t, err)
	s := &site{t: t, lab: lab, ra: ra, dir: t.TempDir(), wgIf: lab.ID() + "g"}
	s.cfg = filepath.Join(s.dir, "edgegw.yaml")
	return s
}

func (s *site) addPeer(name, pub, addr string) {
	s.peers = append(s.peers, fmt.Sprintf(`
      - name: %s
        public_key: %q
        allowed_ips: [%s]
        email: %s@corp.example`, name, pub, addr, name))
}

func (s *site) writeConfig() {
	cfg := fmt.Sprintf(`appliance:
  name: e2e
  state_dir: %s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100
  socket: %s
log:
  level: debug
tunnels:
  wireguard:
    interface: %s
    listen_port: 51820
    address: 100.96.0.1/12
    peers:%s
%s`, s.dir, s.socket(), s.wgIf, strings.Join(s.peers, ""), s.extras)
	if len(s.peers) == 0 {
		cfg = strings.Replace(cfg, "    peers:\n", "", 1)
	}
	must(s.t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
}

func (s *site) start() {
	s.t.Helper()
	p, err := s.ra.GW.Start(binary, "run", "--config", s.cfg)
	must(s.t, err)
	s.proc = p
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "edgegw is up"); err != nil {
		s.t.Fatalf("gateway did not start: %v\n%s", err, p.Output())
	}
}

func (s *site) signal(sig syscall.Signal) {
	must(s.t, syscall.Kill(s.proc.Pid(), sig))
}

// waitLog waits for the n-th occurrence of substr in the gateway's log.
func (s *site) waitLog(substr string, n int) {
	s.t.Helper()
	netlab.Eventually(s.t, 10*time.Second, "log line "+substr, func() error {
		if c := strings.Count(s.proc.Output(), substr); c < n {
			return fmt.Errorf("seen %d times", c)
		}
		return nil
	})
}

// socket is the gateway's admin socket: in the test's directory, so that
// gateways of tests running side by side each have their own.
func (s *site) socket() string { return filepath.Join(s.dir, "admin.sock") }

// adminClient talks to the gateway over its admin socket, as root, like
// the edgegw CLI on the box.
func (s *site) adminClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.socket())
		},
	}}
}

// get GETs an admin path over the socket and returns the body.
func (s *site) get(path string) string {
	s.t.Helper()
	resp, err := s.adminClient().Get("http://localhost" + path)
	must(s.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(s.t, err)
	return string(b)
}

// post POSTs to an admin path over the socket.
func (s *site) post(path string) (*http.Response, []byte) {
	s.t.Helper()
	resp, err := s.adminClient().Post("http://localhost"+path, "", nil)
	must(s.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(s.t, err)
	return resp, b
}

// client brings up a remote user's stock WireGuard: Debian's wg-quick with
// Debian's wireguard-go, configured from `edgegw peer config`.
func (s *site) client(ns *netlab.NS, ifname, peer, keyFile string) {
	s.t.Helper()
	s.clientWith(ns, ifname, peer, keyFile, "")
}

// clientWith is client with another userspace WireGuard (empty: Debian's).
func (s *site) clientWith(ns *netlab.NS, ifname, peer, keyFile, impl string) {
	s.t.Helper()
	s.upClient(ns, ifname, s.peerConfig(peer, keyFile), impl)
}

// peerConfig is `edgegw peer config`'s output, run on the gateway.
func (s *site) peerConfig(peer, keyFile string) string {
	s.t.Helper()
	args := []string{"peer", "config", peer, "--config", s.cfg, "--endpoint", s.ra.GWWANAddr.String() + ":51820"}
	if keyFile != "" {
		args = append(args, "--private-key-file", keyFile)
	}
	return run(s.t, s.ra.GW, binary, args...)
}

// upClient runs `wg-quick up` on conf, named ifname, in ns.
func (s *site) upClient(ns *netlab.NS, ifname, conf, impl string) {
	s.t.Helper()
	path := filepath.Join(s.dir, ifname+".conf")
	must(s.t, os.WriteFile(path, []byte(conf), 0o600))
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ns.Exec(ctx, "wg-quick", "down", path)
	})
	cmd := ns.Command("wg-quick", "up", path)
	if impl != "" {
		cmd.Env = append(os.Environ(), "WG_QUICK_USERSPACE_IMPLEMENTATION="+impl)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("wg-quick up %s: %v\n%s", path, err, out)
	}
}

// handshake is the gateway's latest handshake time with the peer whose
// public key is pub (wg lists peers in no fixed order).
func handshake(t testing.TB, gw *netlab.NS, ifname, pub string) string {
	t.Helper()
	f := strings.Fields(run(t, gw, "wg", "show", ifname, "latest-handshakes"))
	for i := 0; i+1 < len(f); i += 2 {
		if f[i] == pub && f[i+1] != "0" {
			return f[i+1]
		}
	}
	t.Fatalf("no handshake with %s on %s: %v", pub, ifname, f)
	return ""
}

// echoServer answers each line with the same line, on the office server.
func echoServer(t testing.TB, ns *netlab.NS, addr string) {
	ln, err := ns.Listen("tcp", addr)
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
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

func echo(t testing.TB, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := fmt.Fprintln(c, line)
	must(t, err)
	got, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(got) != line {
		t.Fatalf("echo %q: got %q, %v", line, got, err)
	}
}

// TestWireGuardRemoteAccess is the first slice end to end: a remote user
// with stock WireGuard reaches the office LAN through edgegw.
func TestWireGuardRemoteAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra

	// A second remote host whose key the gateway does not know.
	eve, err := s.lab.NS("eve")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth2", "203.0.113.1/24", eve, "eth0", "203.0.113.2/24"))
	must(t, eve.Route("default", "203.0.113.1"))

	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	eveKey, evePub := wgKey(t, eve, s.dir, "eve")
	s.addPeer("alice", alicePub, "100.96.0.10/32")
	s.writeConfig()
	s.start()

	// The office server answers HTTP and echoes TCP lines.
	srv, err := ra.LAN.ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.RemoteAddr)
	}))
	must(t, err)
	defer srv.Close()
	echoServer(t, ra.LAN, ":7")

	// eve: alice's client config without a key (edgegw writes a
	// placeholder), completed with eve's own key, which the gateway does
	// not know.
	conf := s.peerConfig("alice", "")
	if !strings.Contains(conf, "REPLACE_WITH") {
		t.Fatalf("no private-key placeholder in:\n%s", conf)
	}
	eveKeyText, err := os.ReadFile(eveKey)
	must(t, err)
	conf = regexp.MustCompile(`(?m)^PrivateKey = .*$`).ReplaceAllString(conf, "PrivateKey = "+strings.TrimSpace(string(eveKeyText)))
	s.upClient(eve, s.lab.ID()+"e", conf, "")

	userIf := s.lab.ID() + "u"
	s.client(ra.User, userIf, "alice", aliceKey)

	// What the steps share: alice's TCP connection to the echo server,
	// open across the reloads.
	var (
		echoConn net.Conn
		echoR    *bufio.Reader
	)
	defer func() {
		if echoConn != nil {
			echoConn.Close()
		}
	}()

	if !t.Run("ping the office through the tunnel", func(t *testing.T) {
		netlab.Eventually(t, 15*time.Second, "ping office server through the tunnel", func() error {
			return ra.User.Ping(ra.ServerAddr.String())
		})
	}) {
		return
	}

	if !t.Run("the office sees the tunnel address", func(t *testing.T) {
		resp, err := ra.User.HTTPClient().Get("http://10.0.0.5:8080/")
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The office sees the tunnel address: LAN-bound traffic is routed,
		// not masqueraded.
		if !strings.HasPrefix(string(body), "hello 100.96.0.10:") {
			t.Errorf("body = %q", body)
		}
	}) {
		return
	}

	if !t.Run("an unknown key gets no handshake", func(t *testing.T) {
		if err := eve.Ping(ra.ServerAddr.String()); err == nil {
			t.Fatal("a key the gateway does not know got traffic through")
		}
		hs := run(t, eve, "wg", "show", s.lab.ID()+"e", "latest-handshakes")
		if f := strings.Fields(hs); len(f) != 2 || f[1] != "0" {
			t.Errorf("unknown key completed a handshake: %q", hs)
		}
		dump := run(t, ra.GW, "wg", "show", s.wgIf, "dump")
		if strings.Contains(dump, evePub) || strings.Contains(dump, "203.0.113.2") {
			t.Errorf("gateway knows eve:\n%s", dump)
		}
	}) {
		return
	}

	if !t.Run("status and metrics", func(t *testing.T) {
		st := s.get("/api/v1/status")
		for _, want := range []string{`"name": "alice"`, `"kind": "wireguard"`, `"ready": true`} {
			if !strings.Contains(st, want) {
				t.Errorf("status lacks %s:\n%s", want, st)
			}
		}
		m := s.get("/metrics")
		problems, err := promlint.New(strings.NewReader(m)).Lint()
		must(t, err)
		for _, p := range problems {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
		for _, want := range []string{
			"edgegw_config_last_reload_successful 1",
			`edgegw_wireguard_peer_receive_bytes_total{interface="` + s.wgIf + `",peer="alice"}`,
			"edgegw_wireguard_peer_last_handshake_timestamp_seconds",
		} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	}) {
		return
	}

	// Garbage to the WireGuard port is counted and dropped; the gateway
	// keeps serving.
	if !t.Run("malformed datagrams counted and dropped", func(t *testing.T) {
		c, err := ra.User.DialContext(context.Background(), "udp", s.ra.GWWANAddr.String()+":51820")
		must(t, err)
		for i := range 5 {
			c.Write([]byte(fmt.Sprintf("\x01not a wireguard handshake %d", i)))
		}
		c.Close()
		malformed := `edgegw_wireguard_dropped_packets_total{interface="` + s.wgIf + `",reason="malformed"} 5`
		netlab.Eventually(t, 5*time.Second, "malformed packets counted", func() error {
			if !strings.Contains(s.get("/metrics"), malformed) {
				return fmt.Errorf("no %s", malformed)
			}
			return nil
		})
		must(t, ra.User.Ping(ra.ServerAddr.String()))
		if r := s.get("/readyz"); !strings.HasPrefix(r, "ready") {
			t.Errorf("readyz = %q", r)
		}
	}) {
		return
	}

	// A reload that adds a peer keeps alice's open TCP connection alive.
	if !t.Run("a reload that adds a peer keeps sessions", func(t *testing.T) {
		c, err := ra.User.DialContext(context.Background(), "tcp", "10.0.0.5:7")
		must(t, err)
		echoConn, echoR = c, bufio.NewReader(c)
		echo(t, echoConn, echoR, "before reload")

		before := handshake(t, ra.GW, s.wgIf, alicePub)
		_, bobPub := wgKey(t, ra.User, s.dir, "bob")
		// bob also routes a network behind him: a route edgegw installs.
		s.addPeer("bob", bobPub, "100.96.0.11/32, 172.16.5.0/24")
		s.writeConfig()
		s.signal(syscall.SIGHUP)
		s.waitLog("configuration reloaded", 1)
		echo(t, echoConn, echoR, "after reload")
		if after := handshake(t, ra.GW, s.wgIf, alicePub); after != before {
			t.Errorf("alice's session was re-established by the reload: handshake %s → %s", before, after)
		}
		if out := run(t, ra.GW, "ip", "route", "show", "proto", "237"); !strings.Contains(out, "172.16.5.0/24 dev "+s.wgIf) {
			t.Errorf("no route for bob's network:\n%s", out)
		}
		if st := s.get("/api/v1/status"); !strings.Contains(st, `"name": "bob"`) {
			t.Errorf("bob missing after reload:\n%s", st)
		}
	}) {
		return
	}

	// A bad file is rejected and changes nothing.
	if !t.Run("a bad file is rejected", func(t *testing.T) {
		must(t, os.WriteFile(s.cfg, []byte("tunnels:\n  wireguard:\n    listen_port: nope\n"), 0o600))
		s.signal(syscall.SIGHUP)
		s.waitLog("reload rejected", 1)
		if !strings.Contains(s.proc.Output(), "tunnels.wireguard.listen_port: expected a whole number") {
			t.Errorf("reload error does not name the field:\n%s", s.proc.Output())
		}
		if m := s.get("/metrics"); !strings.Contains(m, "edgegw_config_last_reload_successful 0") {
			t.Error("gauge does not show the failed reload")
		}
		echo(t, echoConn, echoR, "after bad reload")
	}) {
		return
	}

	// A crash leaves the nft table behind; the next start removes it.
	if !t.Run("a start after a crash cleans up", func(t *testing.T) {
		s.writeConfig()
		s.signal(syscall.SIGKILL)
		<-s.proc.Done()
		if out := run(t, ra.GW, "nft", "list", "tables"); !strings.Contains(out, "inet edgegw") {
			t.Fatalf("expected the crashed run's table, got %q", out)
		}
		// A route a crashed run left on a device that outlives it.
		run(t, ra.GW, "ip", "route", "add", "192.0.2.123/32", "via", "198.51.100.1", "proto", "237")
		s.start()
		if out := run(t, ra.GW, "ip", "route", "show", "proto", "237"); strings.Contains(out, "192.0.2.123") {
			t.Errorf("leftover route survived the restart:\n%s", out)
		}
		// The client still holds the crashed gateway's session; WireGuard
		// starts a new handshake after its data goes unanswered for
		// keepalive-timeout + rekey-timeout (15 s), so allow for that.
		netlab.Eventually(t, 40*time.Second, "ping after restart", func() error {
			return ra.User.Ping(ra.ServerAddr.String())
		})
	}) {
		return
	}

	if !t.Run("shutdown leaves nothing", func(t *testing.T) {
		s.signal(syscall.SIGTERM)
		select {
		case <-s.proc.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("gateway did not exit on SIGTERM")
		}
		if err := s.proc.Wait(); err != nil {
			t.Errorf("exit: %v\n%s", err, s.proc.Output())
		}
		if out := run(t, ra.GW, "ip", "link", "show"); strings.Contains(out, s.wgIf) {
			t.Errorf("interface left behind:\n%s", out)
		}
		if out := run(t, ra.GW, "nft", "list", "tables"); strings.Contains(out, "edgegw") {
			t.Errorf("nft table left behind: %s", out)
		}
		if out := run(t, ra.GW, "ip", "route", "show", "table", "all", "proto", "237"); strings.TrimSpace(out) != "" {
			t.Errorf("routes left behind:\n%s", out)
		}
	}) {
		return
	}
}
