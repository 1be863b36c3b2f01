package gateway_test

import (
	"bufio"
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
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestAdminThroughGateway attacks the admin plane of a running edgegw as
// a host on the office LAN would: the admin listener is on the LAN
// address (with TLS, as `edgegw check` demands, refusing it without),
// and calls come without a token, with a viewer's, an admin's and a
// revoked token, and with a Host header of a rebinding attacker's. Tokens
// are made with the CLI on the box over the root-only socket and survive
// a restart. Every action (token create and revoke, device revoke, a
// viewer's refused revoke, reloads by SIGHUP and by the CLI) reaches
// Logpush file destinations as audit_logs and audit_logs_v2 records.
func TestAdminThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	state := filepath.Join(s.dir, "state")

	// A device in the registry to revoke.
	reg, err := identity.Open(t.Context(), identity.Options{
		StateDir: state, Pool: netip.MustParsePrefix("100.96.0.1/12"), Reserved: []netip.Addr{netip.MustParseAddr("100.96.0.1")},
	})
	must(t, err)
	k, _ := wireguard.GeneratePrivateKey()
	dev, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "alice-laptop", Email: "alice@corp.example", Subject: "s-alice", PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour)})
	must(t, err)
	must(t, reg.Close())

	certFile, keyFile, pool := writeAdminCert(t, s.dir, ra.GWLANAddr)
	auditFile, auditV2File := filepath.Join(s.dir, "audit.ndjson"), filepath.Join(s.dir, "audit-v2.ndjson")
	config := func(tlsSection string) string {
		return fmt.Sprintf(`appliance:
  name: e2e
  state_dir: %s
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: %s:9100
  socket: %s
  hosts: [gw.corp.example]%s
log:
  level: debug
identity:
  store: sqlite
tunnels:
  wireguard:
    interface: %s
    listen_port: 51820
    address: 100.96.0.1/12
logpush:
  - name: audit
    dataset: audit_logs
    destination: file://%s
    max_upload_interval: 1s
  - name: audit-v2
    dataset: audit_logs_v2
    destination: file://%s
    max_upload_interval: 1s
`, state, ra.GWLANAddr, s.socket(), tlsSection, s.wgIf, auditFile, auditV2File)
	}

	// Without TLS the LAN listener is refused, at its line.
	must(t, os.WriteFile(s.cfg, []byte(config("")), 0o600))
	out, err := ra.GW.Exec(t.Context(), binary, "check", "--config", s.cfg)
	if err == nil || !strings.Contains(string(out), s.cfg+":8:11: admin.listen: \"10.0.0.1:9100\" is not a loopback address") {
		t.Fatalf("edgegw check accepted a LAN admin listener without TLS: %v\n%s", err, out)
	}
	must(t, os.WriteFile(s.cfg, []byte(config(fmt.Sprintf("\n  tls:\n    cert_file: %s\n    key_file: %s", certFile, keyFile))), 0o600))
	run(t, ra.GW, binary, "check", "--config", s.cfg)
	s.start()

	// What the steps share: the tokens, and a host on the LAN calling the
	// admin API.
	var viewer, viewerFile, ops string
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: ra.LAN.DialContext, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gw.corp.example"},
	}}
	base := "https://" + ra.GWLANAddr.String() + ":9100"
	call := func(t *testing.T, method, path, tok, host string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
		must(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	revokePath := "/api/v1/devices/" + dev.ID + "/revoke"

	if !t.Run("admin socket is root only", func(t *testing.T) {
		// The socket: root only.
		fi, err := os.Stat(s.socket())
		must(t, err)
		if fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("admin socket mode %v uid %d, want 0600 root", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		}
	}) {
		return
	}

	if !t.Run("tokens from the CLI shown once", func(t *testing.T) {
		// Tokens from the CLI on the box, printed once.
		token := func(name, role string) (secret, file string) {
			// run gives stdout and stderr: the token is stdout's one line, the
			// advice on stderr follows.
			out := run(t, ra.GW, binary, "admin", "token", "create", name, "--role", role, "--socket", s.socket())
			secret, _, _ = strings.Cut(out, "\n")
			if !strings.HasPrefix(secret, "edgegw_") || !strings.Contains(out, "shown only this once") {
				t.Fatalf("edgegw admin token create:\n%s", out)
			}
			file = filepath.Join(s.dir, name+".token")
			must(t, os.WriteFile(file, []byte(secret+"\n"), 0o600))
			return secret, file
		}
		viewer, viewerFile = token("grafana", "viewer")
		ops, _ = token("ops", "admin")
	}) {
		return
	}

	if !t.Run("roles and host checks on the LAN listener", func(t *testing.T) {
		for _, tt := range []struct {
			name, method, path, tok, host string
			want                          int
		}{
			{"health is open", "GET", "/healthz", "", "", 200},
			{"no token", "GET", "/api/v1/devices", "", "", 401},
			{"no token, status", "GET", "/api/v1/status", "", "", 401},
			{"forged token", "GET", "/api/v1/devices", "edgegw_" + strings.Repeat("x", 43), "", 401},
			{"metrics not open to the LAN", "GET", "/metrics", "", "", 403},
			{"viewer lists devices", "GET", "/api/v1/devices", viewer, "", 200},
			{"viewer may not revoke", "POST", revokePath, viewer, "", 403},
			{"DNS rebinding", "GET", "/api/v1/devices", ops, "rebind.attacker.example", 421},
			{"configured host name", "GET", "/api/v1/status", viewer, "gw.corp.example:9100", 200},
			{"admin revokes", "POST", revokePath, ops, "", 200},
		} {
			if code, body := call(t, tt.method, tt.path, tt.tok, tt.host); code != tt.want {
				t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, code, body, tt.want)
			}
		}
	}) {
		return
	}

	if !t.Run("the CLI from the LAN with a token file and the CA", func(t *testing.T) {
		// The CLI from the LAN host, with a token file and the CA.
		caFile := filepath.Join(s.dir, "ca.pem")
		must(t, os.WriteFile(caFile, mustRead(t, certFile), 0o644))
		if out := run(t, ra.LAN, binary, "device", "list", "--admin", base, "--token-file", viewerFile, "--ca-file", caFile); !strings.Contains(out, dev.ID) || !strings.Contains(out, "revoked") {
			t.Errorf("edgegw device list from the LAN:\n%s", out)
		}
	}) {
		return
	}

	if !t.Run("a revoked token fails at once", func(t *testing.T) {
		// A revoked token fails at once.
		run(t, ra.GW, binary, "admin", "token", "revoke", "grafana", "--socket", s.socket())
		if code, _ := call(t, "GET", "/api/v1/devices", viewer, ""); code != 401 {
			t.Errorf("revoked viewer token: %d, want 401", code)
		}
	}) {
		return
	}

	if !t.Run("reloads by signal and by the CLI", func(t *testing.T) {
		// Reloads: by signal and by the CLI.
		s.signal(syscall.SIGHUP)
		s.waitLog("configuration unchanged", 1)
		if out := run(t, ra.GW, binary, "reload", "--socket", s.socket()); !strings.Contains(out, "Reloaded") {
			t.Errorf("edgegw reload: %s", out)
		}
	}) {
		return
	}

	if !t.Run("failed sign-ins are counted", func(t *testing.T) {
		// Failed sign-ins are counted.
		if m := s.get("/metrics"); metricValue(m, `edgegw_admin_requests_total{result="unauthenticated"}`) < 4 ||
			metricValue(m, `edgegw_admin_requests_total{result="misdirected"}`) < 1 {
			t.Errorf("admin request counters:\n%s", grepLines(m, "edgegw_admin_"))
		}
	}) {
		return
	}

	if !t.Run("the audit trail in Cloudflare's field names", func(t *testing.T) {
		// The audit trail, in Cloudflare's field names.
		type rec map[string]any
		records := func(file string) []rec {
			f, err := os.Open(file)
			if err != nil {
				return nil
			}
			defer f.Close()
			var out []rec
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var r rec
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("%s: %v: %s", file, err, sc.Text())
				}
				out = append(out, r)
			}
			return out
		}
		type want struct {
			action, rtype, rid, actor string
			ok                        bool
		}
		wants := []want{
			{"create", "admin_token", "grafana", "uid:0", true},
			{"create", "admin_token", "ops", "uid:0", true},
			{"revoke", "device", dev.ID, "grafana", false},
			{"revoke", "device", dev.ID, "ops", true},
			{"revoke", "admin_token", "grafana", "uid:0", true},
			{"reload", "configuration", s.cfg, "SIGHUP", true},
			{"reload", "configuration", s.cfg, "uid:0", true},
		}
		var got []rec
		netlab.Eventually(t, 15*time.Second, "audit records in the Logpush file", func() error {
			got = records(auditFile)
			if len(got) < len(wants) {
				return fmt.Errorf("%d records, want %d", len(got), len(wants))
			}
			return nil
		})
		for i, w := range wants {
			r := got[i]
			if r["ActionType"] != w.action || r["ResourceType"] != w.rtype || r["ResourceID"] != w.rid || r["ActorID"] != w.actor || r["ActionResult"] != w.ok {
				t.Errorf("audit_logs record %d = %v, want %+v", i, r, w)
			}
			for _, f := range []string{"ID", "When", "ActorType", "ActorIP", "Interface", "Metadata", "NewValue", "OldValue"} {
				if _, ok := r[f]; !ok {
					t.Errorf("audit_logs record %d lacks %s: %v", i, f, r)
				}
			}
		}
		if got[3]["ActorIP"] != ra.ServerAddr.String() || got[3]["Interface"] != "API" {
			t.Errorf("the revoke's actor IP and interface: %v %v, want %s API", got[3]["ActorIP"], got[3]["Interface"], ra.ServerAddr)
		}
		if nv, _ := got[3]["NewValue"].(map[string]any); nv["id"] != dev.ID || nv["status"] != "revoked" {
			t.Errorf("the device revoke's NewValue: %v", got[3]["NewValue"])
		}
		if got[5]["ActorType"] != "system" || got[0]["Interface"] != "CLI" {
			t.Errorf("actor types: SIGHUP %v, socket %v", got[5]["ActorType"], got[0]["Interface"])
		}
		for i, r := range got {
			if b, _ := json.Marshal(r); strings.Contains(string(b), viewer) || strings.Contains(string(b), ops) {
				t.Errorf("audit record %d holds a token's secret: %s", i, b)
			}
		}
		netlab.Eventually(t, 15*time.Second, "audit_logs_v2 records", func() error {
			v2 := records(auditV2File)
			if len(v2) < len(wants) {
				return fmt.Errorf("%d records", len(v2))
			}
			r := v2[3]
			if r["ActionResult"] != "success" || r["ActorIPAddress"] != ra.ServerAddr.String() || r["AuditLogID"] != got[3]["ID"] ||
				r["ActorContext"] != "api_token" || r["ActorTokenDetails"].(map[string]any)["name"] != "ops" {
				return fmt.Errorf("record 3 = %v", r)
			}
			if v2[2]["ActionResult"] != "failure" {
				return fmt.Errorf("the refused revoke: %v", v2[2])
			}
			return nil
		})
		if !strings.Contains(s.proc.Output(), "audit: device "+dev.ID+" revoked") {
			t.Errorf("no audit log line for the revoke")
		}
	}) {
		return
	}

	if !t.Run("a second edgegw on the same socket stops", func(t *testing.T) {
		// A second edgegw on the same socket stops before it touches the
		// kernel: the running one keeps its table and keeps serving.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		out, err = ra.GW.Exec(ctx, binary, "run", "--config", s.cfg)
		cancel()
		if err == nil || !strings.Contains(string(out), "another process answers on "+s.socket()) {
			t.Errorf("a second edgegw on the same socket: %v\n%s", err, out)
		}
		run(t, ra.GW, "nft", "list", "table", "inet", "edgegw")
		if code, _ := call(t, "GET", "/healthz", "", ""); code != 200 {
			t.Errorf("the running gateway after a second one tried: /healthz %d", code)
		}
	}) {
		return
	}

	if !t.Run("tokens survive a restart", func(t *testing.T) {
		// Tokens survive a restart; the revoked one stays revoked.
		must(t, s.proc.Stop())
		s.start()
		if code, _ := call(t, "GET", "/api/v1/status", ops, ""); code != 200 {
			t.Errorf("admin token after a restart: %d, want 200", code)
		}
		if code, _ := call(t, "GET", "/api/v1/status", viewer, ""); code != 401 {
			t.Errorf("revoked token after a restart: %d, want 401", code)
		}
		if out := run(t, ra.GW, binary, "admin", "token", "list", "--socket", s.socket()); !strings.Contains(out, "ops") || strings.Contains(out, "grafana") {
			t.Errorf("token list after a restart:\n%s", out)
		}
	}) {
		return
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return b
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// lanAdmin is an admin section's lines (indented) for a listener on
// addr:9100 over TLS with certFile and keyFile, for gw.corp.example.
func lanAdmin(addr netip.Addr, certFile, keyFile string) string {
	return fmt.Sprintf("  listen: %s:9100\n  hosts: [gw.corp.example]\n  tls:\n    cert_file: %s\n    key_file: %s\n", addr, certFile, keyFile)
}

// adminOnLAN moves the site's admin listener from loopback to the
// gateway's LAN address over TLS (a certificate from writeAdminCert),
// rewriting the written configuration; it returns the file as written
// and the pool that trusts the certificate.
func (s *site) adminOnLAN() (file string, pool *x509.CertPool) {
	t := s.t
	t.Helper()
	certFile, keyFile, pool := writeAdminCert(t, s.dir, s.ra.GWLANAddr)
	cfg, err := os.ReadFile(s.cfg)
	must(t, err)
	file = strings.Replace(string(cfg), "  listen: 127.0.0.1:9100\n", lanAdmin(s.ra.GWLANAddr, certFile, keyFile), 1)
	if file == string(cfg) {
		t.Fatalf("no loopback admin listener to move in %s", s.cfg)
	}
	must(t, os.WriteFile(s.cfg, []byte(file), 0o600))
	return file, pool
}

// writeAdminCert writes a self-signed certificate for gw.corp.example and
// addr, and returns its files and a pool that trusts it.
func writeAdminCert(t testing.TB, dir string, addr netip.Addr) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw.corp.example"},
		DNSNames: []string{"gw.corp.example"}, IPAddresses: []net.IP{addr.AsSlice()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	certFile, keyFile = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	c, err := x509.ParseCertificate(der)
	must(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}
