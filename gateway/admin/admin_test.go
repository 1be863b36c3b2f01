package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// env is an admin server over a real device registry (SQLite), its
// listeners in the "gw" namespace of a lab, a client namespace "lan"
// linked to it, and the audit events it emitted.
type env struct {
	t       *testing.T
	dir     string
	gw, lan *netlab.NS
	srv     *Server
	reg     *identity.Registry
	cfg     Config
	caPool  *x509.CertPool
	reloads int

	mu     sync.Mutex
	events []Event
	status func() any // GET /api/v1/status; nil: {"version": "test"}
	// mod changes the server's options (newEnvWith).
	mod    func(*Options)
	cancel context.CancelFunc
	done   chan error
}

const (
	gwAddr  = "10.9.0.1"
	lanAddr = "10.9.0.2"
)

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, nil)
}

// newEnvWith is newEnv with the server's options changed by mod, which
// may use the env (its namespaces are made before the server).
func newEnvWith(t *testing.T, cfg Config, mod func(*env, *Options)) *env {
	t.Helper()
	lab := netlab.NewT(t)
	gw, err := lab.NS("gw")
	if err != nil {
		t.Fatal(err)
	}
	lan, err := lab.NS("lan")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(gw, "eth0", gwAddr+"/24", lan, "eth0", lanAddr+"/24"); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), gw: gw, lan: lan}
	if mod != nil {
		e.mod = func(o *Options) { mod(e, o) }
	}
	e.reg, err = identity.Open(t.Context(), identity.Options{
		StateDir: e.dir, Pool: netip.MustParsePrefix("100.96.0.1/12"), Reserved: []netip.Addr{netip.MustParseAddr("100.96.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.reg.Close() })
	e.srv = e.newServer()
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(e.dir, "run", "admin.sock")
	}
	if cfg.TLS != nil && cfg.TLS.CertFile == "" {
		cfg.TLS.CertFile, cfg.TLS.KeyFile, e.caPool = writeCert(t, e.dir, "gw.corp.test", netip.MustParseAddr(gwAddr))
	}
	e.cfg = cfg
	if err := gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.srv.Run(ctx) }()
	t.Cleanup(e.stop)
	return e
}

// newServer makes a server over e's registry and state dir (a restart
// makes a second one).
func (e *env) newServer() *Server {
	reg := prometheus.NewRegistry()
	opts := Options{
		StateDir: e.dir,
		Metrics:  reg,
		Status: func() any {
			e.mu.Lock()
			f := e.status
			e.mu.Unlock()
			if f != nil {
				return f()
			}
			return map[string]string{"version": "test"}
		},
		Devices: enroll.NewAdmin(e.reg, enroll.AdminOptions{}),
		Reload: func(context.Context) (string, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.reloads++
			return "/etc/edgegw/edgegw.yaml", nil
		},
		Audit: func(ev Event) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.events = append(e.events, ev)
		},
	}
	if e.mod != nil {
		e.mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	reg.MustRegister(srv)
	return srv
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Errorf("Run: %v", err)
	}
	e.cancel = nil
}

func (e *env) audit() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.events...)
}

// root is a client on the socket, as the CLI on the box.
func (e *env) root() *Client {
	c, err := NewClient(ClientOptions{Socket: e.cfg.Socket})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// createToken makes a token through the socket and returns its secret.
func (e *env) createToken(name string, role Role) string {
	e.t.Helper()
	body, err := e.root().Do(e.t.Context(), http.MethodPost, PathTokens, CreateTokenRequest{Name: name, Role: role})
	if err != nil {
		e.t.Fatalf("create token %s: %v", name, err)
	}
	var ct CreatedToken
	if err := json.Unmarshal(body, &ct); err != nil || !strings.HasPrefix(ct.Secret, TokenPrefix) || ct.Role != role {
		e.t.Fatalf("create token %s: %v %s", name, err, body)
	}
	return ct.Secret
}

// request is one request from the lan namespace to the TCP listener.
type request struct {
	method, path string
	token        string // "" for none
	host         string // "" for the listener's address
	auth         string // a raw Authorization header instead of token
	body         string // JSON; "" for none
}

func (e *env) do(r request) (int, string) {
	e.t.Helper()
	scheme := "http"
	tcfg := &tls.Config{RootCAs: e.caPool, ServerName: "gw.corp.test"}
	if e.cfg.TLS != nil {
		scheme = "https"
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: e.lan.DialContext, TLSClientConfig: tcfg, DisableKeepAlives: true,
	}}
	_, port, _ := net.SplitHostPort(e.cfg.Listen)
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), r.method, scheme+"://"+net.JoinHostPort(gwAddr, port)+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAPIAuth is the attack test of the admin API over the network: a
// listener on a LAN address with TLS, called from another host without a
// token, with a bad one, with a viewer's, an admin's and a revoked token,
// and with a Host header of the attacker's (DNS rebinding).
func TestAPIAuth(t *testing.T) {
	e := newEnv(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}})
	k, _ := wireguard.GeneratePrivateKey()
	dev, err := e.reg.Enroll(t.Context(), identity.Enrollment{Name: "alice-laptop", Email: "alice@corp.test", Subject: "s1", PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	viewer := e.createToken("grafana", RoleViewer)
	adminTok := e.createToken("ops", RoleAdmin)
	revoke := "POST"
	revokePath := PathDevices + "/" + dev.ID + "/revoke"

	for _, tt := range []struct {
		name string
		req  request
		want int
		body string // substring
	}{
		{"health needs no token", request{method: "GET", path: "/healthz"}, 200, "ok"},
		{"readiness needs no token", request{method: "GET", path: "/readyz"}, 200, "ready"},
		{"no token", request{method: "GET", path: PathDevices}, 401, "admin token is required"},
		{"no token, status", request{method: "GET", path: PathStatus}, 401, ""},
		{"unknown token", request{method: "GET", path: PathDevices, token: TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, 401, ""},
		{"token without prefix", request{method: "GET", path: PathDevices, token: "grafana"}, 401, ""},
		{"basic auth", request{method: "GET", path: PathDevices, auth: "Basic Z3JhZmFuYTpvcHM="}, 401, ""},
		{"viewer reads devices", request{method: "GET", path: PathDevices, token: viewer}, 200, dev.ID},
		{"viewer reads status", request{method: "GET", path: PathStatus, token: viewer}, 200, `"version": "test"`},
		{"viewer may not revoke", request{method: revoke, path: revokePath, token: viewer}, 403, "viewer"},
		{"viewer may not list tokens", request{method: "GET", path: PathTokens, token: viewer}, 403, ""},
		{"viewer may not reload", request{method: "POST", path: PathReload, token: viewer}, 403, ""},
		{"metrics closed off loopback", request{method: "GET", path: "/metrics", token: viewer}, 403, "admin.metrics"},
		{"foreign Host (DNS rebinding)", request{method: "GET", path: PathDevices, token: adminTok, host: "evil.example:9100"}, 421, "admin.hosts"},
		{"foreign Host on health", request{method: "GET", path: "/healthz", host: "attacker.example"}, 421, ""},
		{"configured name", request{method: "GET", path: PathDevices, token: viewer, host: "GW.corp.test:9100"}, 200, dev.ID},
		{"admin revokes", request{method: revoke, path: revokePath, token: adminTok}, 200, `"status": "revoked"`},
		{"admin reloads", request{method: "POST", path: PathReload, token: adminTok}, 200, `"reloaded": true`},
		{"admin lists tokens", request{method: "GET", path: PathTokens, token: adminTok}, 200, `"grafana"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do(tt.req)
			if code != tt.want || !strings.Contains(body, tt.body) {
				t.Errorf("%s %s: %d %s, want %d with %q", tt.req.method, tt.req.path, code, body, tt.want, tt.body)
			}
			if strings.Contains(body, viewer) || strings.Contains(body, adminTok) {
				t.Errorf("a token's secret is in an answer: %s", body)
			}
		})
	}
	if d, _ := e.reg.Get(t.Context(), dev.ID); !d.Revoked {
		t.Error("the device is not revoked")
	}

	// A revoked token fails at once.
	if _, err := e.root().Do(t.Context(), http.MethodPost, PathTokens+"/grafana/revoke", nil); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.do(request{method: "GET", path: PathDevices, token: viewer}); code != 401 {
		t.Errorf("revoked token: %d, want 401", code)
	}
	if code, _ := e.do(request{method: "GET", path: PathDevices, token: adminTok}); code != 200 {
		t.Errorf("the other token after a revocation: %d, want 200", code)
	}

	// Refusals are counted by result.
	for result, min := range map[string]float64{resultUnauthenticated: 6, resultForbidden: 4, resultMisdirected: 2, resultOK: 10} {
		if got := testutil.ToFloat64(e.srv.results.WithLabelValues(result)); got < min {
			t.Errorf("edgegw_admin_requests_total{result=%q} = %v, want ≥ %v", result, got, min)
		}
	}

	// Every action is audited, refused ones too, with who and from where.
	want := []struct {
		action, typ, id, actor string
		ok                     bool
	}{
		{"create", "admin_token", "grafana", "uid:0", true},
		{"create", "admin_token", "ops", "uid:0", true},
		{"revoke", "device", dev.ID, "grafana", false},
		{"reload", "configuration", "", "grafana", false},
		{"revoke", "device", dev.ID, "ops", true},
		{"reload", "configuration", "/etc/edgegw/edgegw.yaml", "ops", true},
		{"revoke", "admin_token", "grafana", "uid:0", true},
	}
	got := e.audit()
	if len(got) != len(want) {
		t.Fatalf("%d audit events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Action != w.action || g.ResourceType != w.typ || g.ResourceID != w.id || g.Actor.ID != w.actor || g.Result != w.ok || g.ID == "" || g.When.IsZero() {
			t.Errorf("event %d = %+v, want %+v", i, g, w)
		}
		if g.Actor.Context == "api_token" && g.Actor.IP != lanAddr {
			t.Errorf("event %d: actor IP %q, want %s", i, g.Actor.IP, lanAddr)
		}
	}
	if !strings.Contains(string(got[4].NewValue), `"revoked"`) {
		t.Errorf("the revoke's new value is not the revoked device: %s", got[4].NewValue)
	}
	if !strings.Contains(string(got[6].OldValue), `"grafana"`) {
		t.Errorf("the token revoke's old value: %s", got[6].OldValue)
	}
}

// TestLoopbackNeedsToken: /api/* needs a token on loopback too (every
// local user can reach loopback); /metrics is open there.
func TestLoopbackNeedsToken(t *testing.T) {
	e := newEnv(t, Config{Listen: "127.0.0.1:9100"})
	tok := e.createToken("local", RoleViewer)
	get := func(path, token, host string) int {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:9100"+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := e.gw.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		path, token, host string
		want              int
	}{
		{PathStatus, "", "", 401},
		{PathStatus, tok, "", 200},
		{PathStatus, tok, "localhost:9100", 200},
		{PathStatus, tok, "127.0.0.2:9100", 200},
		{PathStatus, tok, "rebind.attacker.example:9100", 421},
		{"/metrics", "", "", 200},
		{"/healthz", "", "", 200},
		{"/readyz", "", "", 200},
	} {
		if got := get(tt.path, tt.token, tt.host); got != tt.want {
			t.Errorf("GET %s (token %v, host %q) = %d, want %d", tt.path, tt.token != "", tt.host, got, tt.want)
		}
	}
}

// TestMetricsPolicy opens /metrics on a LAN listener by source prefix and
// by token.
func TestMetricsPolicy(t *testing.T) {
	e := newEnv(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Metrics: Metrics{Allow: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/30")}}})
	if code, body := e.do(request{method: "GET", path: "/metrics"}); code != 200 || !strings.Contains(body, "edgegw_admin_requests_total") {
		t.Errorf("scrape from an allowed prefix: %d %.200s", code, body)
	}
	// Only /metrics: the API still wants a token from that prefix.
	if code, _ := e.do(request{method: "GET", path: PathStatus}); code != 401 {
		t.Errorf("API from the metrics prefix without a token: %d, want 401", code)
	}

	cfg := e.cfg
	cfg.Metrics = Metrics{Allow: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}}
	if err := e.gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.do(request{method: "GET", path: "/metrics"}); code != 403 {
		t.Errorf("scrape from outside the prefixes: %d, want 403", code)
	}
	cfg.Metrics = Metrics{Token: true}
	if err := e.gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
	tok := e.createToken("prometheus", RoleViewer)
	if code, _ := e.do(request{method: "GET", path: "/metrics"}); code != 401 {
		t.Errorf("scrape without a token when metrics.token is set: %d, want 401", code)
	}
	if code, _ := e.do(request{method: "GET", path: "/metrics", token: tok}); code != 200 {
		t.Errorf("scrape with a viewer token: %d, want 200", code)
	}
}

// TestSocket checks the socket's modes and that only root is served: a
// process running as nobody cannot connect, and even with the modes
// loosened the server refuses its uid (SO_PEERCRED).
func TestSocket(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "setpriv", "util-linux")
	testkit.NeedTool(t, "curl", "curl")
	e := newEnv(t, Config{Listen: "127.0.0.1:9100"})
	sock := e.cfg.Socket
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket of 0600", fi.Mode())
	}
	if uid := ownerUID(t, sock); uid != 0 {
		t.Errorf("socket owner uid %d, want 0", uid)
	}
	di, err := os.Stat(filepath.Dir(sock))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %v %v, want 0700", di.Mode(), err)
	}

	// Root is an admin on the socket.
	if _, err := e.root().Do(t.Context(), http.MethodGet, PathDevices, nil); err != nil {
		t.Fatalf("root on the socket: %v", err)
	}

	asNobody := func() (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock, "http://localhost"+PathDevices).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := asNobody()
	if err == nil || !strings.Contains(out, "ermission denied") && !strings.Contains(out, "Couldn't connect") {
		t.Errorf("nobody on the socket: %q %v, want a refused connection", out, err)
	}
	// Loosen every mode on the way; the peer check still refuses.
	for p := sock; p != "/"; p = filepath.Dir(p) {
		if strings.HasPrefix(p, os.TempDir()+"/") || p == sock {
			os.Chmod(p, 0o777)
		}
	}
	before := testutil.ToFloat64(e.srv.results.WithLabelValues(resultForbidden))
	out, err = asNobody()
	if err != nil || out != "403" {
		t.Errorf("nobody on a loosened socket: %q %v, want HTTP 403", out, err)
	}
	if got := testutil.ToFloat64(e.srv.results.WithLabelValues(resultForbidden)); got != before+1 {
		t.Errorf("forbidden count %v, want %v", got, before+1)
	}
}

// TestSocketInUse: a second server refuses a socket another one answers
// on, and takes over a stale one (a crashed run's).
func TestSocketInUse(t *testing.T) {
	e := newEnv(t, Config{Listen: "127.0.0.1:9100"})
	other := e.newServer()
	cfg := e.cfg
	cfg.Listen = "127.0.0.1:9101"
	err := e.gw.Do(func() error { return other.Set(cfg) })
	if err == nil || !strings.Contains(err.Error(), "another process answers") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	e.stop()
	// A stale socket file: a listener closed without unlinking.
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := e.gw.Do(func() error { return other.Set(cfg) }); err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- other.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := e.root().Do(t.Context(), http.MethodGet, PathTokens, nil); err != nil {
		t.Errorf("the new server's socket: %v", err)
	}
}

// TestTokensSurviveRestart: tokens are stored hashed, 0600, and a new
// server (a restart) knows them; a revoked one stays revoked.
func TestTokensSurviveRestart(t *testing.T) {
	e := newEnv(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}})
	keep := e.createToken("keep", RoleAdmin)
	gone := e.createToken("gone", RoleViewer)
	if _, err := e.root().Do(t.Context(), http.MethodPost, PathTokens+"/gone/revoke", nil); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.do(request{method: "GET", path: PathStatus, token: keep}); code != 200 {
		t.Fatalf("before the restart: %d", code)
	}
	path := filepath.Join(e.dir, "admin", "tokens.json")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v %v, want mode 0600", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), keep) || strings.Contains(string(data), gone) || strings.Contains(string(data), `"gone"`) {
		t.Fatalf("the token file holds a secret or the revoked token:\n%s", data)
	}

	e.stop() // flushes last-used times
	e.srv = e.newServer()
	if err := e.gw.Do(func() error { return e.srv.Set(e.cfg) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.srv.Run(ctx) }()

	if code, _ := e.do(request{method: "GET", path: PathStatus, token: keep}); code != 200 {
		t.Errorf("after the restart: %d, want 200", code)
	}
	if code, _ := e.do(request{method: "GET", path: PathStatus, token: gone}); code != 401 {
		t.Errorf("the revoked token after the restart: %d, want 401", code)
	}
	list := e.srv.tokens.all()
	if len(list) != 1 || list[0].Name != "keep" || list[0].LastUsed.IsZero() || list[0].CreatedBy != "uid:0" {
		t.Errorf("tokens after the restart: %+v", list)
	}
}

func TestTokenCreateErrors(t *testing.T) {
	e := newEnv(t, Config{Listen: "127.0.0.1:9100"})
	e.createToken("dup", RoleViewer)
	for _, tt := range []struct {
		req  CreateTokenRequest
		want int
	}{
		{CreateTokenRequest{Name: "dup", Role: RoleViewer}, 409},
		{CreateTokenRequest{Name: "bad name", Role: RoleViewer}, 400},
		{CreateTokenRequest{Name: "", Role: RoleViewer}, 400},
		{CreateTokenRequest{Name: "x", Role: "root"}, 400},
	} {
		_, err := e.root().Do(t.Context(), http.MethodPost, PathTokens, tt.req)
		se, ok := err.(*StatusError)
		if !ok || se.Status != tt.want {
			t.Errorf("create %+v: %v, want status %d", tt.req, err, tt.want)
		}
	}
	if _, err := e.root().Do(t.Context(), http.MethodPost, PathTokens+"/nope/revoke", nil); err == nil || err.(*StatusError).Status != 404 {
		t.Errorf("revoke unknown: %v", err)
	}
	// Failed actions are audited too.
	fails := 0
	for _, ev := range e.audit() {
		if !ev.Result {
			fails++
		}
	}
	if fails != 5 {
		t.Errorf("%d failed actions audited, want 5", fails)
	}
}

// writeCert writes a self-signed certificate for name and addr and
// returns its files and a pool that trusts it.
func writeCert(t *testing.T, dir, name string, addr netip.Addr) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	return writeCertSerial(t, dir, name, addr, 1)
}

// writeCertSerial is writeCert with a given serial number.
func writeCertSerial(t *testing.T, dir, name string, addr netip.Addr, serial int64) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{addr.AsSlice()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

func ownerUID(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestSetMoves: a new configuration moves the listener and the socket:
// the new ones serve before the old ones go, and the old socket file is
// removed.
func TestSetMoves(t *testing.T) {
	e := newEnv(t, Config{Listen: "127.0.0.1:9100"})
	cfg := e.cfg
	cfg.Listen = "127.0.0.1:9101"
	cfg.Socket = filepath.Join(e.dir, "run2", "admin.sock")
	if err := e.gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
	if e.srv.Addr() != "127.0.0.1:9101" || e.srv.Socket() != cfg.Socket {
		t.Errorf("after the move: %s %s", e.srv.Addr(), e.srv.Socket())
	}
	netlab.Eventually(t, 10*time.Second, "the old socket is gone", func() error {
		if _, err := os.Stat(e.cfg.Socket); err == nil {
			return fmt.Errorf("%s still exists", e.cfg.Socket)
		}
		return nil
	})
	e.cfg = cfg
	if _, err := e.root().Do(t.Context(), http.MethodGet, PathTokens, nil); err != nil {
		t.Errorf("the new socket: %v", err)
	}
	resp, err := e.gw.HTTPClient().Get("http://127.0.0.1:9101/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A listener that cannot bind leaves the running ones as they are.
	bad := cfg
	bad.Listen = "10.9.0.99:9100"
	bad.TLS = &TLS{CertFile: "/nonexistent", KeyFile: "/nonexistent"}
	if err := e.gw.Do(func() error { return e.srv.Set(bad) }); err == nil {
		t.Error("Set with an unreadable certificate succeeded")
	}
	bad.TLS = nil
	if err := e.gw.Do(func() error { return e.srv.Set(bad) }); err == nil || !strings.Contains(err.Error(), "no admin.tls") {
		t.Errorf("Set of a LAN listener without TLS: %v", err)
	}
	if e.srv.Addr() != "127.0.0.1:9101" {
		t.Errorf("after failed sets: %s", e.srv.Addr())
	}
}

// TestCertRotates: Set re-reads the certificate files, so a certificate
// rotated in place is served from the next connection (a SIGHUP reload).
func TestCertRotates(t *testing.T) {
	e := newEnv(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}})
	serial := func() string {
		c, err := e.lan.DialContext(t.Context(), "tcp", gwAddr+":9100")
		if err != nil {
			t.Fatal(err)
		}
		// The rotated certificate is another self-signed one: only which
		// one is served matters here.
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		defer tc.Close()
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(); got != "1" {
		t.Fatalf("serial %s, want 1", got)
	}
	writeCertSerial(t, e.dir, "gw.corp.test", netip.MustParseAddr(gwAddr), 2)
	if got := serial(); got != "1" {
		t.Errorf("serial %s before Set, want 1", got)
	}
	if err := e.gw.Do(func() error { return e.srv.Set(e.cfg) }); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != "2" {
		t.Errorf("serial %s after Set, want the rotated certificate's 2", got)
	}
}
