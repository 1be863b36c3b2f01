package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// TestPostureQuarantine: device posture through the binary. A laptop
// enrolled with `edgegw enroll` (which makes a first report from this
// machine's real kernel) reports a new kernel, runs stock WireGuard and
// pings the office. It then
// reports an old kernel with `edgegw posture report` over its own tunnel:
// the ping stops within 5 s, while the gateway's posture endpoint stays
// reachable through the tunnel, so a report of a new kernel releases it
// and the ping passes again within 5 s. A report signed with another key
// is refused and changes nothing.
func TestPostureQuarantine(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needStockWireGuard(t)
	s := newSite(t)
	ra := s.ra
	op := startProvider(t, ra.GW, ra.User)
	webSecret := writeWebSecret(t, s)
	cfg := s.providerHead(op.Issuer, webSecret) + fmt.Sprintf(`access:
  listen: 0.0.0.0:8443
tunnels:
  wireguard:
    interface: %[4]s
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
posture:
  rules:
    - name: linux-kernel
      type: os_version
      os: linux
      operator: ">="
      version: "6.1"
  grace: 10m
`, s.dir, op.Issuer, webSecret, s.wgIf)
	must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	s.start()
	gwURL := "https://" + ra.GWWANAddr.String() + ":8443"
	confFile := filepath.Join(s.dir, "alice.conf")
	out, err := enrollCmd(t, ra.User, op, op.Username(), gwURL, "alice-laptop", confFile)
	if err != nil {
		t.Fatalf("edgegw enroll: %v\n%s\ngateway log:\n%s", err, out, s.proc.Output())
	}
	// The first report, from this machine's own kernel: judged either way.
	if !strings.Contains(out, ": compliant") && !strings.Contains(out, "QUARANTINED") {
		t.Fatalf("edgegw enroll made no posture report:\n%s", out)
	}
	conf, err := os.ReadFile(confFile)
	must(t, err)
	root := filepath.Join(s.dir, "root")
	kernel := func(release string) {
		must(t, os.MkdirAll(filepath.Join(root, "proc/sys/kernel"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "proc/sys/kernel/osrelease"), []byte(release+"\n"), 0o644))
	}
	report := func(gw string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := ra.User.Exec(ctx, binary, "posture", "report", gw, "--config", confFile, "--insecure", "--root", root)
		if err != nil {
			t.Fatalf("edgegw posture report: %v\n%s\ngateway log:\n%s", err, out, s.proc.Output())
		}
		return string(out)
	}
	// Whatever this machine's kernel is, the laptop starts compliant:
	// a report of a new kernel, from outside the tunnel (the WAN URL),
	// as before the tunnel is up.
	kernel("6.12.38+deb13-amd64")
	if out := report(gwURL); !strings.Contains(out, ": compliant") {
		t.Fatalf("new kernel report over the WAN:\n%s", out)
	}
	s.upClient(ra.User, s.lab.ID()+"u", strings.Replace(string(conf), "DNS = ", "# DNS = ", 1), "")
	var devs []enroll.Device
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	netlab.Eventually(t, 15*time.Second, "the laptop reaches the office through its tunnel", func() error {
		return ra.User.Ping(ra.ServerAddr.String())
	})

	// Reports now go over the tunnel, to the gateway's WireGuard address:
	// in quarantine that is one of the few places the laptop can reach.
	const overTunnel = "https://100.96.0.1:8443"
	kernel("4.19.0-27-amd64")
	start := time.Now()
	if out := report(overTunnel); !strings.Contains(out, "QUARANTINED") || !strings.Contains(out, `linux version "4.19.0-27-amd64" is not >= 6.1`) {
		t.Fatalf("old kernel report:\n%s", out)
	}
	var dev enroll.Device
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices/"+devs[0].ID)), &dev))
	if !dev.Quarantined || dev.Status != "active" {
		t.Errorf("device in quarantine, as the admin API shows it: %+v", dev)
	}
	netlab.Eventually(t, 5*time.Second, "the quarantined laptop's ping stops", func() error {
		if ra.User.Ping(ra.ServerAddr.String()) == nil {
			return fmt.Errorf("ping still passes")
		}
		return nil
	})
	t.Logf("quarantine: ping stopped %s after the report was sent", time.Since(start).Round(time.Millisecond))

	// A report signed with another key, claiming the laptop's, is refused
	// over the same path and releases nothing.
	forged := refusedForgery(t, ra.User, conf)
	if forged != http.StatusUnauthorized {
		t.Errorf("forged report: %d, want 401", forged)
	}
	if ra.User.Ping(ra.ServerAddr.String()) == nil {
		t.Fatal("the forged report released the laptop")
	}

	kernel("6.12.38+deb13-amd64")
	start = time.Now()
	if out := report(overTunnel); !strings.Contains(out, ": compliant") {
		t.Fatalf("new kernel report:\n%s", out)
	}
	netlab.Eventually(t, 5*time.Second, "the released laptop reaches the office again", func() error {
		return ra.User.Ping(ra.ServerAddr.String())
	})
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices/"+devs[0].ID)), &dev))
	if dev.Quarantined {
		t.Errorf("device after the release, as the admin API shows it: %+v", dev)
	}
	t.Logf("release: ping passed %s after the report was sent", time.Since(start).Round(time.Millisecond))

	m := s.get("/metrics")
	// Reports: the first one at enrollment (this machine's kernel), a
	// new kernel over the WAN, the old one and a new one over the tunnel.
	if q := metricValue(m, `edgegw_posture_quarantines_total{cause="report"}`); q < 1 || q > 2 ||
		metricValue(m, `edgegw_posture_reports_total{result="compliant"}`)+metricValue(m, `edgegw_posture_reports_total{result="noncompliant"}`) != 4 ||
		metricValue(m, `edgegw_posture_reports_total{result="noncompliant"}`) < 1 ||
		metricValue(m, `edgegw_posture_reports_refused_total{reason="unauthenticated"}`) != 1 ||
		metricValue(m, `edgegw_posture_devices_quarantined`) != 0 {
		t.Errorf("posture metrics:\n%s", grepLines(m, "edgegw_posture_"))
	}
}

// refusedForgery sends, from ns over the tunnel, a passing report that
// names the device's public key (from its wg-quick file) but is signed
// with a fresh key, and returns the status.
func refusedForgery(t *testing.T, ns *netlab.NS, conf []byte) int {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "c.conf")
	must(t, os.WriteFile(file, conf, 0o600))
	priv, gwPub, err := posture.ReadQuickKeys(file)
	must(t, err)
	other, err := wgconf.GeneratePrivateKey()
	must(t, err)
	body, err := json.Marshal(posture.Report{Time: time.Now(), OS: posture.OSLinux, OSVersion: "6.12", DiskEncrypted: posture.Unknown, Firewall: posture.Unknown})
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://100.96.0.1:8443"+posture.Path, bytes.NewReader(body))
	must(t, err)
	must(t, posture.Sign(req.Header, body, other, gwPub))
	req.Header.Set(posture.HeaderDeviceKey, priv.PublicKey().String())
	hc := &http.Client{Transport: &http.Transport{
		DialContext:     ns.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the gateway's self-signed certificate
	}}
	resp, err := hc.Do(req)
	must(t, err)
	resp.Body.Close()
	return resp.StatusCode
}
