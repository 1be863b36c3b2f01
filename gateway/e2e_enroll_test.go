package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// needStockWireGuard fails an end-to-end test on a machine without the
// stock WireGuard tools its remote users run, naming their packages.
func needStockWireGuard(t *testing.T) {
	t.Helper()
	for _, tool := range [][2]string{{"wireguard-go", "wireguard-go"}, {"wg", "wireguard-tools"},
		{"wg-quick", "wireguard-tools"}, {"ping", "iputils-ping"}} {
		testkit.NeedTool(t, tool[0], tool[1])
	}
}

// startProvider starts the test OpenID provider in the test process with
// the command line's device client (edgegw-cli) and the web client
// (edgegw-web, secret "web-secret"), and makes it reachable at its issuer
// URL from each namespace in via, as a cloud provider is over the internet.
func startProvider(t *testing.T, via ...*netlab.NS) *enrolltest.OP {
	op := enrolltest.Start(t, enrolltest.Options{})
	op.AddDeviceClient("edgegw-cli")
	op.AddWebClient("edgegw-web", "web-secret", "https://wiki.corp.example/cdn-cgi/access/callback")
	issuer, err := url.Parse(op.Issuer)
	must(t, err)
	for _, ns := range via {
		forwardLoopback(t, ns, issuer.Host)
	}
	return op
}

// writeWebSecret writes the web client's secret into the site's directory
// for identity.providers[].client_secret_file.
func writeWebSecret(t *testing.T, s *site) string {
	path := filepath.Join(s.dir, "web.secret")
	must(t, os.WriteFile(path, []byte("web-secret\n"), 0o600))
	return path
}

// providerHead is how the configurations of the tests with an identity
// provider begin: the office's interfaces, the admin API on loopback and
// its socket, debug logs, and the test provider as identity.providers
// "corp", with its web client (webSecret) and its device client.
func (s *site) providerHead(issuer, webSecret string) string {
	return fmt.Sprintf(`appliance:
  name: e2e
  state_dir: %[1]s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100
  socket: %[1]s/admin.sock
log:
  level: debug
identity:
  providers:
    - name: corp
      issuer: %[2]s
      client_id: edgegw-web
      client_secret_file: %[3]s
      device_client_id: edgegw-cli
`, s.dir, issuer, webSecret)
}

// TestEnrollThroughGateway enrolls a remote user's device with the gateway
// end to end: a real OpenID provider with the device grant, `edgegw enroll`
// run on the user's machine against the gateway's Access listener, the
// approval given at the provider as the user would, stock wg-quick with the
// file enroll wrote, then LAN access, an identity rule on the groups the
// provider reported, the device in the admin API, and revocation cutting
// the tunnel within 5 s. A user the enrollment policy does not allow is
// refused with a message that says so.
func TestEnrollThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needStockWireGuard(t)
	s := newSite(t)
	ra := s.ra

	// The provider runs in the test process; the gateway and the user's
	// machine both reach it at its issuer URL through a forwarder in their
	// namespace, as both would reach a cloud provider over the internet.
	op := startProvider(t, ra.GW, ra.User)
	webSecret := writeWebSecret(t, s)

	// test-user (groups engineering, staff) is allowed to enroll;
	// test-user2 (contractors) is not. SSH is for engineering, which
	// test-user is in (so passing proves the provider's groups reached the
	// firewall's identity sets), the ledger database for finance, which
	// test-user is not in.
	cfg := s.providerHead(op.Issuer, webSecret) + fmt.Sprintf(`access:
  listen: 0.0.0.0:8443          # enrollment from the WAN, DNS over HTTPS through the tunnel
gateway:
  dns:
    listen: [100.96.0.1:53]
    upstreams: [10.0.0.5:53]
    policies:
      - id: eng-intranet
        expression: identity.groups contains "engineering" and dns.fqdn == "intranet.corp.example"
        action: override
        override: [10.0.0.5]
tunnels:
  wireguard:
    interface: %[5]s
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
firewall:
  rules:
    - id: ssh-engineering
      expression: tcp.dstport == 22 and not identity.groups contains "engineering"
      action: block
    - id: ledger-finance
      expression: tcp.dstport == 5432 and not identity.groups contains "finance"
      action: block
`, s.dir, op.Issuer, webSecret, ra.GWWANAddr, s.wgIf)
	must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	s.start()
	for _, port := range []string{":22", ":80", ":5432"} {
		echoServer(t, ra.LAN, port)
	}
	gwURL := "https://" + ra.GWWANAddr.String() + ":8443"
	// dial connects from the user's machine to the office server.
	dial := func(port string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", "10.0.0.5:"+port)
		if err == nil {
			c.Close()
		}
		return err
	}

	// What the steps share: the wg-quick file enroll wrote, the device.
	var (
		conf []byte
		dev  enroll.Device
	)

	if !t.Run("a user enrolls with edgegw enroll", func(t *testing.T) {
		// The user enrolls with edgegw enroll and brings up the file it wrote.
		start := time.Now()
		outFile := filepath.Join(s.dir, "alice.conf")
		out, err := enrollCmd(t, ra.User, op, op.Username(), gwURL, "alice-laptop", outFile)
		if err != nil {
			t.Fatalf("edgegw enroll: %v\n%s\ngateway log:\n%s", err, out, s.proc.Output())
		}
		t.Logf("enrolled in %s (device grant, approval, registration)", time.Since(start).Round(time.Millisecond))
		conf, err = os.ReadFile(outFile)
		must(t, err)
		for _, want := range []string{"Endpoint = " + ra.GWWANAddr.String() + ":51820", "10.0.0.0/24"} {
			if !strings.Contains(string(conf), want) {
				t.Errorf("the wg-quick file lacks %q:\n%s", want, conf)
			}
		}
		if !strings.Contains(string(conf), "DNS = 100.96.0.1") {
			t.Errorf("the wg-quick file does not name Gateway DNS:\n%s", conf)
		}
		// wg-quick hands DNS = to resolvconf, which the test namespaces lack;
		// the test asks the resolver directly instead.
		noDNS := regexp.MustCompile(`(?m)^DNS = .*\n`).ReplaceAllString(string(conf), "")
		s.upClient(ra.User, s.lab.ID()+"u", noDNS, "")
	}) {
		return
	}

	if !t.Run("the firewall knows the user's groups", func(t *testing.T) {
		// The firewall knows the enrolled user's groups from the provider.
		netlab.Eventually(t, 15*time.Second, "ping the office server through the enrolled tunnel", func() error {
			return ra.User.Ping(ra.ServerAddr.String())
		})
		if err := dial("80", 2*time.Second); err != nil {
			t.Fatalf("TCP to the office web server: %v", err)
		}
		if err := dial("22", 2*time.Second); err != nil {
			t.Errorf("the enrolled user (in engineering) cannot reach SSH: %v", err)
		}
		if err := dial("5432", 2*time.Second); err == nil {
			t.Error("the enrolled user (not in finance) reached the ledger; rule ledger-finance should block it")
		}
		if n := counter(t, s, "ledger-finance"); n == 0 {
			t.Error("the ledger-finance counter did not move")
		}
		if n := counter(t, s, "ssh-engineering"); n != 0 {
			t.Errorf("the ssh-engineering counter is %v for an engineer", n)
		}
	}) {
		return
	}

	if !t.Run("Gateway DNS knows the device's user", func(t *testing.T) {
		// Gateway DNS knows the enrolled device's user: the engineering-only
		// override answers over UDP and over DNS over HTTPS on the Access
		// listener, which refuses a client it cannot identify.
		dnsCtx, dnsCancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer dnsCancel()
		if out, err := ra.User.Exec(dnsCtx, "dig", "+short", "+tries=2", "+time=2", "@100.96.0.1", "intranet.corp.example", "A"); err != nil || strings.TrimSpace(string(out)) != "10.0.0.5" {
			t.Errorf("dig through the tunnel: %v %q", err, out)
		}
		if out, err := ra.User.Exec(dnsCtx, "kdig", "+https", "+short", "@100.96.0.1", "-p", "8443", "intranet.corp.example", "A"); err != nil || !strings.Contains(string(out), "10.0.0.5") {
			t.Errorf("kdig over DoH through the tunnel: %v %q", err, out)
		}
		if out, _ := ra.User.Exec(dnsCtx, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
			"https://"+ra.GWWANAddr.String()+":8443/dns-query?dns=AAABAAABAAAAAAAACGludHJhbmV0BGNvcnAHZXhhbXBsZQAAAQAB"); strings.TrimSpace(string(out)) != "403" {
			t.Errorf("DoH from an unidentified address: HTTP %q, want 403", out)
		}
	}) {
		return
	}

	if !t.Run("the admin sees the device", func(t *testing.T) {
		// The admin sees the device, with the identity the provider vouched
		// for.
		var devs []enroll.Device
		must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
		if len(devs) != 1 {
			t.Fatalf("/api/v1/devices: %+v", devs)
		}
		dev = devs[0]
		if dev.Name != "alice-laptop" || dev.Status != "active" || !strings.Contains(strings.Join(dev.Groups, ","), "staff") ||
			!strings.Contains(string(conf), "Address = "+dev.Address.String()+"/32") {
			t.Errorf("device %+v does not match the wg-quick file:\n%s", dev, conf)
		}
	}) {
		return
	}

	if !t.Run("handshakes are recorded as last seen", func(t *testing.T) {
		// Its handshakes are its last-seen time, recorded every 10 s.
		netlab.Eventually(t, 25*time.Second, "the registry records when the device was last seen", func() error {
			var d enroll.Device
			must(t, json.Unmarshal([]byte(s.get("/api/v1/devices/"+dev.ID)), &d))
			if d.LastSeen.IsZero() || d.LastSeen.Before(dev.Created) || time.Since(d.LastSeen) > time.Minute {
				return fmt.Errorf("last_seen %v (created %v)", d.LastSeen, dev.Created)
			}
			return nil
		})
	}) {
		return
	}

	if !t.Run("a user outside the policy is refused", func(t *testing.T) {
		// A user outside the policy is refused, and told why.
		out2, err := enrollCmd(t, ra.User, op, enrolltest.SecondUser, gwURL, "bob-laptop", filepath.Join(s.dir, "bob.conf"))
		if err == nil {
			t.Errorf("a contractor enrolled:\n%s", out2)
		} else if !strings.Contains(out2, "may not enroll devices on this gateway") {
			t.Errorf("the refusal does not say why:\n%s", out2)
		} else {
			t.Logf("refused: %s", out2[strings.LastIndex(strings.TrimSpace(out2), "\n")+1:])
		}
		if _, err := os.Stat(filepath.Join(s.dir, "bob.conf")); err == nil {
			t.Error("a refused enrollment wrote a configuration")
		}
		var devs []enroll.Device
		must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
		if len(devs) != 1 {
			t.Errorf("the refused enrollment left a device: %+v", devs)
		}
	}) {
		return
	}

	if !t.Run("revocation stops traffic within 5 s", func(t *testing.T) {
		// Revocation: the tunnel stops carrying traffic within 5 s.
		resp, body := s.post("/api/v1/devices/" + dev.ID + "/revoke")
		revoked := time.Now()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"revoked"`) {
			t.Fatalf("revoke: %s %s", resp.Status, body)
		}
		probes := 0
		netlab.Eventually(t, 5*time.Second, "traffic stops after the revocation", func() error {
			probes++
			if dial("80", 300*time.Millisecond) == nil {
				return fmt.Errorf("TCP to the office still connects")
			}
			return nil
		})
		// Each probe is a TCP connect with a 300 ms timeout: the time is an
		// upper bound with that resolution.
		t.Logf("traffic cut %s after the revoke call returned (%d probe(s) of 300 ms; the first one that failed ends it)",
			time.Since(revoked).Round(time.Millisecond), probes)
		if err := ra.User.Ping(ra.ServerAddr.String()); err == nil {
			t.Error("ping still passes after the revocation")
		}
		if dump := run(t, ra.GW, "wg", "show", s.wgIf, "dump"); strings.Contains(dump, dev.PublicKey.String()) {
			t.Errorf("the revoked key is still a WireGuard peer:\n%s", dump)
		}
	}) {
		return
	}
}

var enrollCodeRE = regexp.MustCompile(`(?m)^    ([A-Z0-9-]{6,})$`)

// enrollCmd runs `edgegw enroll` in ns and approves the code it prints at
// the provider as user. It returns the command's output and exit error.
// trust is how the gateway's certificate is checked; default --insecure.
func enrollCmd(t *testing.T, ns *netlab.NS, op *enrolltest.OP, user, gwURL, name, out string, trust ...string) (string, error) {
	t.Helper()
	if len(trust) == 0 {
		trust = []string{"--insecure"}
	}
	p, err := ns.Start(binary, append([]string{"enroll", gwURL, "--name", name, "--out", out, "--timeout", "30s"}, trust...)...)
	must(t, err)
	defer p.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var code string
	for code == "" {
		if m := enrollCodeRE.FindStringSubmatch(p.Output()); m != nil {
			code = m[1]
			break
		}
		select {
		case <-p.Done():
			return p.Output(), fmt.Errorf("exited before showing a user code: %w", p.Wait())
		case <-ctx.Done():
			return p.Output(), fmt.Errorf("no user code shown: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := op.Approve(ctx, code, user, true); err != nil {
		return p.Output(), fmt.Errorf("approve %s as %s: %w", code, user, err)
	}
	select {
	case <-p.Done():
		return p.Output(), p.Wait()
	case <-ctx.Done():
		return p.Output(), fmt.Errorf("enroll did not finish: %w", ctx.Err())
	}
}

// forwardLoopback makes the test process's loopback address hostport
// reachable at the same address inside ns.
func forwardLoopback(t *testing.T, ns *netlab.NS, hostport string) {
	ln, err := ns.Listen("tcp", hostport)
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
				up, err := net.DialTimeout("tcp", hostport, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, up)
			}()
		}
	}()
}
