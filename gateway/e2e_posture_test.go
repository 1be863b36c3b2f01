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
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
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
	l := enrollPostureLaptop(t, `posture:
  rules:
    - name: linux-kernel
      type: os_version
      os: linux
      operator: ">="
      version: "6.1"
  grace: 10m
`)
	s, ra, conf, devs, kernel, report := l.s, l.s.ra, l.conf, l.devs, l.kernel, l.report

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

// postureLaptop is a laptop enrolled with `edgegw enroll` on a site with
// posture checks, its tunnel up (stock WireGuard), reporting with
// `edgegw posture report` from a root of its own whose kernel release
// the test sets.
type postureLaptop struct {
	s    *site
	conf []byte          // the wg-quick file enroll wrote
	devs []enroll.Device // the admin API's devices: the laptop alone
	// kernel sets the kernel release the next report gives.
	kernel func(release string)
	// report runs `edgegw posture report` against the gateway URL gw
	// and returns its output.
	report func(gw string) string
}

// enrollPostureLaptop starts a site whose configuration is the
// enrollment head (access on :8443, WireGuard enrollment for staff) and
// then sections (posture: and whatever else the test needs), enrolls
// the laptop, reports a new kernel (6.12) over the WAN, brings its
// tunnel up and waits until it pings the office.
func enrollPostureLaptop(t *testing.T, sections string) *postureLaptop {
	t.Helper()
	needStockWireGuard(t)
	s := newSite(t)
	ra := s.ra
	op := startProvider(t, ra.GW, ra.User)
	webSecret := writeWebSecret(t, s)
	cfg := s.providerHead(op.Issuer, webSecret) + fmt.Sprintf(`access:
  listen: 0.0.0.0:8443
tunnels:
  wireguard:
    interface: %[1]s
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
`, s.wgIf) + sections
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
	l := &postureLaptop{s: s}
	l.conf, err = os.ReadFile(confFile)
	must(t, err)
	root := filepath.Join(s.dir, "root")
	l.kernel = func(release string) {
		must(t, os.MkdirAll(filepath.Join(root, "proc/sys/kernel"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "proc/sys/kernel/osrelease"), []byte(release+"\n"), 0o644))
	}
	l.report = func(gw string) string {
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
	l.kernel("6.12.38+deb13-amd64")
	if out := l.report(gwURL); !strings.Contains(out, ": compliant") {
		t.Fatalf("new kernel report over the WAN:\n%s", out)
	}
	s.upClient(ra.User, s.lab.ID()+"u", strings.Replace(string(l.conf), "DNS = ", "# DNS = ", 1), "")
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &l.devs))
	if len(l.devs) != 1 {
		t.Fatalf("devices: %+v", l.devs)
	}
	netlab.Eventually(t, 15*time.Second, "the laptop reaches the office through its tunnel", func() error {
		return ra.User.Ping(ra.ServerAddr.String())
	})
	return l
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

// TestPostureSelectors: device.posture.* in firewall rules and DNS
// policies, through the binary. The posture rules ask only for a kernel
// of 4.x or later, so the laptop stays compliant (not quarantined) on
// 5.10 and 6.12 alike; a firewall rule keeps kernels older than 6.1 off
// the office's port 5432, and a DNS policy answers intranet.corp.example
// only to them (others are blocked). The laptop, on 6.12, reaches the
// port and gets the answer; it reports 5.10 over its tunnel, and within
// 5 s, without a reload, the port is closed to it and the name blocked,
// while port 80 still passes; it reports 6.12 again and both come back.
func TestPostureSelectors(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "dig", "bind9-dnsutils")
	l := enrollPostureLaptop(t, `posture:
  rules:
    - name: linux-kernel
      type: os_version
      os: linux
      operator: ">="
      version: "4"
  grace: 10m
firewall:
  rules:
    - id: ledger-new-kernels
      expression: tcp.dstport == 5432 and device.posture.os_version < "6.1"
      action: block
gateway:
  dns:
    listen: [100.96.0.1:53]
    upstreams: [10.0.0.5:53]
    policies:
      - id: intranet-old-kernels
        expression: dns.fqdn == "intranet.corp.example" and device.posture.os_version < "6.1"
        action: block
      - id: intranet
        expression: dns.fqdn == "intranet.corp.example" and device.posture.os == "linux"
        action: override
        override: [10.0.0.42]
`)
	ra := l.s.ra // the test sends no reload: reports alone move the verdicts
	for _, port := range []string{":80", ":5432"} {
		echoServer(t, ra.LAN, port)
	}
	dial := func(port string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", ra.ServerAddr.String()+":"+port)
		if err == nil {
			c.Close()
		}
		return err
	}
	dig := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := ra.User.Exec(ctx, "dig", "+short", "+tries=2", "+time=2", "@100.96.0.1", "intranet.corp.example", "A")
		if err != nil {
			t.Fatalf("dig through the tunnel: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// want waits (5 s) for the ledger port and the intranet name to be
	// as a kernel of that age should find them.
	want := func(what string, open bool) {
		t.Helper()
		answer := "0.0.0.0"
		if open {
			answer = "10.0.0.42"
		}
		netlab.Eventually(t, 5*time.Second, what, func() error {
			if err := dial("5432"); (err == nil) != open {
				return fmt.Errorf("port 5432: dial error %v, want open=%v", err, open)
			}
			if got := dig(); got != answer {
				return fmt.Errorf("intranet.corp.example = %q, want %s", got, answer)
			}
			return nil
		})
		if err := dial("80"); err != nil {
			t.Errorf("%s: port 80, which no posture rule guards: %v", what, err)
		}
	}
	want("a 6.12 kernel reaches the ledger and the intranet", true)

	const overTunnel = "https://100.96.0.1:8443"
	l.kernel("5.10.0-30-amd64")
	start := time.Now()
	if out := l.report(overTunnel); !strings.Contains(out, ": compliant") {
		t.Fatalf("5.10 report (compliant by the posture rules):\n%s", out)
	}
	want("a 5.10 kernel is kept off the ledger and the intranet", false)
	t.Logf("old kernel: port and name closed %s after the report was sent", time.Since(start).Round(time.Millisecond))

	l.kernel("6.12.38+deb13-amd64")
	start = time.Now()
	if out := l.report(overTunnel); !strings.Contains(out, ": compliant") {
		t.Fatalf("6.12 report:\n%s", out)
	}
	want("back on 6.12, the ledger and the intranet again", true)
	t.Logf("new kernel: port and name open %s after the report was sent", time.Since(start).Round(time.Millisecond))

}
