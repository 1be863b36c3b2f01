package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// scimClient is an identity provider's SCIM client: it reaches the
// gateway's Access listener from outside (the remote user's namespace
// stands in for the internet) with a bearer token.
type scimClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func (c *scimClient) do(tok, method, path, body string) (int, map[string]any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, strings.NewReader(body))
	must(c.t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := c.hc.Do(req)
	must(c.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	must(c.t, err)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: %d, not JSON: %s", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// TestSCIMDeprovisioning: the identity provider's SCIM changes reach a
// stock WireGuard laptop that is using the network, through the binary:
// a group removal (Okta's request) closes the port the group opened
// within 5 s, a deactivation (Entra ID's request, with its string
// boolean) stops the laptop's ping within 5 s and removes its peer; a bad
// token, a malformed body and an unknown filter get RFC 7644's errors and
// change nothing; a rotated token file takes effect on SIGHUP.
func TestSCIMDeprovisioning(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needStockWireGuard(t)
	s := newSite(t)
	ra := s.ra
	op := startProvider(t, ra.GW, ra.User)
	webSecret := writeWebSecret(t, s)
	tokFile := filepath.Join(s.dir, "scim.token")
	const tok1, tok2 = "scim-token-1-0123456789abcdef0123456789", "scim-token-2-fedcba9876543210fedcba9876"
	must(t, os.WriteFile(tokFile, []byte(tok1+"\n"), 0o600))

	// SSH is for engineering: the provider puts test-user in it at
	// enrollment, SCIM takes it away.
	cfg := s.providerHead(op.Issuer, webSecret) + fmt.Sprintf(`access:
  listen: 0.0.0.0:8443
scim:
  token_file: %[4]s
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
`, s.dir, op.Issuer, webSecret, tokFile, s.wgIf)
	must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	s.start()
	for _, port := range []string{":22", ":80"} {
		echoServer(t, ra.LAN, port)
	}
	gwURL := "https://" + ra.GWWANAddr.String() + ":8443"

	out, err := enrollCmd(t, ra.User, op, op.Username(), gwURL, "alice-laptop", filepath.Join(s.dir, "alice.conf"))
	if err != nil {
		t.Fatalf("edgegw enroll: %v\n%s\ngateway log:\n%s", err, out, s.proc.Output())
	}
	conf, err := os.ReadFile(filepath.Join(s.dir, "alice.conf"))
	must(t, err)
	s.upClient(ra.User, s.lab.ID()+"u", strings.Replace(string(conf), "DNS = ", "# DNS = ", 1), "")
	var devs []enroll.Device
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	dev := devs[0]
	dial := func(port string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", "10.0.0.5:"+port)
		if err == nil {
			c.Close()
		}
		return err
	}
	netlab.Eventually(t, 15*time.Second, "the laptop reaches the office through its tunnel", func() error {
		return ra.User.Ping(ra.ServerAddr.String())
	})
	netlab.Eventually(t, 5*time.Second, "SSH open to the engineer", func() error { return dial("22") })

	c := &scimClient{t: t, base: gwURL + "/scim/v2", hc: &http.Client{Transport: &http.Transport{
		DialContext:     ra.User.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the gateway's self-signed certificate
	}}}

	// Refusals: each is RFC 7644's error and changes nothing.
	deactivate := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`
	if code, body := c.do("wrong-token-0123456789abcdef0123456789", "GET", "/Users", ""); code != 401 || body["status"] != "401" {
		t.Errorf("bad token: %d %v", code, body)
	}
	if code, body := c.do(tok1, "POST", "/Users", `{"userName": `); code != 400 || body["scimType"] != "invalidSyntax" {
		t.Errorf("malformed body: %d %v", code, body)
	}
	if code, body := c.do(tok1, "GET", "/Users?filter="+url.QueryEscape(`shoeSize eq "9"`), ""); code != 400 || body["scimType"] != "invalidFilter" {
		t.Errorf("unknown filter: %d %v", code, body)
	}

	// Entra ID provisions the user (its request's shape: testdata/entra-id.json).
	code, u := c.do(tok1, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
		"externalId":"0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef","userName":%q,"active":true,
		"emails":[{"primary":true,"type":"work","value":%q}],"meta":{"resourceType":"User"},
		"name":{"formatted":"Test User","familyName":"User","givenName":"Test"},"roles":[]}`, dev.Email, dev.Email))
	if code != 201 {
		t.Fatalf("create user: %d %v", code, u)
	}
	uid := u["id"].(string)
	// A bad token's deactivation did nothing: the tunnel still carries
	// traffic.
	if code, _ := c.do("x"+tok1, "PATCH", "/Users/"+uid, deactivate); code != 401 {
		t.Errorf("deactivation with a bad token: %d", code)
	}
	netlab.Eventually(t, 5*time.Second, "the laptop still reaches the office after the refused requests", func() error {
		return ra.User.Ping(ra.ServerAddr.String())
	})

	// Okta pushes engineering with the user in it (testdata/okta.json).
	code, g := c.do(tok1, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"engineering","members":[]}`)
	if code != 201 {
		t.Fatalf("create group: %d %v", code, g)
	}
	gid := g["id"].(string)
	if code, body := c.do(tok1, "PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"add","path":"members","value":[{"value":%q,"display":%q}]}]}`, uid, dev.Email)); code != 204 {
		t.Fatalf("add member: %d %v", code, body)
	}
	netlab.Eventually(t, 5*time.Second, "SSH still open: the user is in engineering", func() error { return dial("22") })

	// The group removal closes SSH within 5 s; the tunnel stays up.
	start := time.Now()
	if code, body := c.do(tok1, "PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"remove","path":"members[value eq \"%s\"]"}]}`, uid)); code != 204 {
		t.Fatalf("remove member: %d %v", code, body)
	}
	answered := time.Since(start)
	netlab.Eventually(t, 5*time.Second, "SSH closed after the group removal", func() error {
		if dial("22") == nil {
			return fmt.Errorf("SSH still connects")
		}
		return nil
	})
	t.Logf("group removal: answered in %s, SSH closed %s after the request", answered.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	netlab.Eventually(t, 5*time.Second, "the web server still reachable: the group removal must not cut the tunnel", func() error { return dial("80") })
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices/"+dev.ID)), &dev))
	if len(dev.Groups) != 0 || dev.Status != "active" {
		t.Errorf("device after the removal: %+v", dev)
	}

	// Entra ID disables the user: the laptop's ping stops within 5 s.
	start = time.Now()
	if code, body := c.do(tok1, "PATCH", "/Users/"+uid, deactivate); code != 200 || body["active"] != false {
		t.Fatalf("deactivate: %d %v", code, body)
	}
	answered = time.Since(start)
	netlab.Eventually(t, 5*time.Second, "the laptop's traffic stops after the deactivation", func() error {
		if ra.User.Ping(ra.ServerAddr.String()) == nil {
			return fmt.Errorf("ping still passes")
		}
		return nil
	})
	t.Logf("deactivation: answered in %s, ping stopped %s after the request", answered.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if dump := run(t, ra.GW, "wg", "show", s.wgIf, "dump"); strings.Contains(dump, dev.PublicKey.String()) {
		t.Errorf("the deactivated user's key is still a WireGuard peer:\n%s", dump)
	}
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices/"+dev.ID)), &dev))
	if dev.Status != "revoked" {
		t.Errorf("device after the deactivation: %+v", dev)
	}
	m := s.get("/metrics")
	if metricValue(m, `edgegw_scim_device_changes_total{change="revoked"}`) != 1 ||
		metricValue(m, `edgegw_scim_device_changes_total{change="regrouped"}`) != 2 ||
		metricValue(m, `edgegw_scim_requests_refused_total{reason="unauthorized"}`) != 2 {
		t.Errorf("SCIM metrics:\n%s", grepLines(m, "edgegw_scim_"))
	}

	// Rotation: a new token file and SIGHUP; the old token stops working.
	must(t, os.WriteFile(tokFile, []byte(tok2+"\n"), 0o600))
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	if code, _ := c.do(tok1, "GET", "/Users", ""); code != 401 {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	if code, body := c.do(tok2, "GET", "/Users?filter="+url.QueryEscape(fmt.Sprintf("userName eq %q", dev.Email)), ""); code != 200 || body["totalResults"] != float64(1) {
		t.Errorf("new token after rotation: %d %v", code, body)
	}
}
