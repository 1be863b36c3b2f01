package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/access/acme/acmetest"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestACMEThroughGateway: with access.acme the gateway's Access listener
// gets its certificate from an ACME CA (Pebble, in the gateway's
// namespace) over http-01 and serves it: a LAN client that trusts only
// the CA's root reaches the app through it, and /metrics has the
// certificate's expiry.
func TestACMEThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	httpPort := acmetest.FreePort(t, ra.GW)
	p := acmetest.Start(t, acmetest.Options{Net: ra.GW, HTTPPort: httpPort, TLSPort: acmetest.FreePort(t, ra.GW), Validity: time.Hour})
	s.extras = fmt.Sprintf(`access:
  listen: 10.0.0.1:8443
  acme:
    directory: %s
    ca_file: %s
    email: ops@corp.example
    challenges: [http-01]
    http_listen: 127.0.0.1:%d
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: public
          action: bypass
          include: [{everyone: true}]
`, p.Directory, p.CAFile, httpPort)
	s.writeConfig()
	s.start()

	srv, err := ra.LAN.ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "wiki")
	}))
	must(t, err)
	defer srv.Close()

	var expiry time.Time
	netlab.Eventually(t, 60*time.Second, "the Access listener serves the CA's certificate", func() error {
		leaf, err := acmetest.Served(t.Context(), ra.LAN, "10.0.0.1:8443", "wiki.corp.example", p.Roots)
		if err != nil {
			return err
		}
		expiry = leaf.NotAfter
		return nil
	})
	c := ra.LAN.HTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: p.Roots, ServerName: "wiki.corp.example"}
	req, _ := http.NewRequest("GET", "https://10.0.0.1:8443/", nil)
	req.Host = "wiki.corp.example"
	resp, err := c.Do(req)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "wiki" {
		t.Fatalf("through the verified listener: %s %q", resp.Status, body)
	}
	var st struct {
		Access struct {
			ACME []struct {
				Domain  string    `json:"domain"`
				Expires time.Time `json:"expires"`
			} `json:"acme"`
		} `json:"access"`
	}
	raw := s.get("/api/v1/status")
	must(t, json.Unmarshal([]byte(raw), &st))
	if a := st.Access.ACME; len(a) != 1 || a[0].Domain != "wiki.corp.example" || !a[0].Expires.Equal(expiry) {
		t.Errorf("the status lacks the certificate's expiry %s:\n%s", expiry, raw)
	}
	netlab.Eventually(t, 10*time.Second, "the expiry metric", func() error {
		m := s.get("/metrics")
		if v := metricValue(m, `edgegw_acme_certificate_expiry_timestamp_seconds{domain="wiki.corp.example"}`); int64(v) != expiry.Unix() {
			return fmt.Errorf("edgegw_acme_certificate_expiry_timestamp_seconds = %v, want %d", v, expiry.Unix())
		}
		return nil
	})
}

// TestACMEDNS01ThroughGateway: with access.acme challenges [dns-01] the
// gateway publishes the challenge by a TSIG-signed DNS UPDATE to a knotd
// (in the gateway's namespace, the zone's primary), Pebble validates it
// there, and the Access listener serves the certificate to a LAN client
// that trusts only the CA's root.
func TestACMEDNS01ThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	k := acmetest.StartKnot(t, ra.GW, "corp.example")
	p := acmetest.Start(t, acmetest.Options{Net: ra.GW, HTTPPort: acmetest.FreePort(t, ra.GW), TLSPort: acmetest.FreePort(t, ra.GW),
		Validity: time.Hour, DNSServer: k.Addr})
	s.extras = fmt.Sprintf(`access:
  listen: 10.0.0.1:8443
  acme:
    directory: %s
    ca_file: %s
    challenges: [dns-01]
    rfc2136:
      server: %s
      zone: corp.example
      tsig_key_name: %s
      tsig_algorithm: %s
      tsig_secret_file: %s
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: public
          action: bypass
          include: [{everyone: true}]
`, p.Directory, p.CAFile, k.Addr, k.KeyName, k.Algorithm, k.SecretFile)
	s.writeConfig()
	s.start()
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", s.proc.Output())
		}
	}()

	srv, err := ra.LAN.ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "wiki")
	}))
	must(t, err)
	defer srv.Close()

	netlab.Eventually(t, 60*time.Second, "the Access listener serves the certificate got over dns-01", func() error {
		_, err := acmetest.Served(t.Context(), ra.LAN, "10.0.0.1:8443", "wiki.corp.example", p.Roots)
		return err
	})
	c := ra.LAN.HTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: p.Roots, ServerName: "wiki.corp.example"}
	req, _ := http.NewRequest("GET", "https://10.0.0.1:8443/", nil)
	req.Host = "wiki.corp.example"
	resp, err := c.Do(req)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "wiki" {
		t.Fatalf("through the verified listener: %s %q", resp.Status, body)
	}
	netlab.Eventually(t, 30*time.Second, "the challenge record is removed from the zone", func() error {
		got, err := k.TXT("_acme-challenge.wiki.corp.example")
		if err != nil || len(got) != 0 {
			return fmt.Errorf("TXT %q (%v)", got, err)
		}
		return nil
	})
}

// TestEnrollWithACMECertificate: a gateway whose Access listener has an
// ACME certificate for its WAN address (RFC 8738, from Pebble over
// http-01) enrolls a device with `edgegw enroll --ca-file <the CA's
// root>`, without --insecure: the laptop verifies the gateway.
func TestEnrollWithACMECertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needStockWireGuard(t)
	s := newSite(t)
	ra := s.ra
	op := startProvider(t, ra.GW, ra.User)
	webSecret := writeWebSecret(t, s)
	httpPort := acmetest.FreePort(t, ra.GW)
	p := acmetest.Start(t, acmetest.Options{Net: ra.GW, HTTPPort: httpPort, TLSPort: acmetest.FreePort(t, ra.GW), Validity: time.Hour})
	root := filepath.Join(s.dir, "pebble-root.pem")
	must(t, os.WriteFile(root, p.RootsPEM, 0o644))
	cfg := s.providerHead(op.Issuer, webSecret) + fmt.Sprintf(`access:
  listen: 0.0.0.0:8443
  acme:
    directory: %[6]s
    ca_file: %[7]s
    domains: [%[4]s]
    challenges: [http-01]
    http_listen: 0.0.0.0:%[8]d
tunnels:
  wireguard:
    interface: %[5]s
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
`, s.dir, op.Issuer, webSecret, ra.GWWANAddr, s.wgIf, p.Directory, p.CAFile, httpPort)
	must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	s.start()
	gw := ra.GWWANAddr.String()
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", s.proc.Output())
		}
	}()
	netlab.Eventually(t, 60*time.Second, "the Access listener serves the CA's certificate for its address", func() error {
		_, err := acmetest.Served(t.Context(), ra.User, gw+":8443", gw, p.Roots)
		return err
	})
	outFile := filepath.Join(s.dir, "alice.conf")
	out, err := enrollCmd(t, ra.User, op, op.Username(), "https://"+gw+":8443", "alice-laptop", outFile, "--ca-file", root)
	if err != nil {
		t.Fatalf("edgegw enroll --ca-file: %v\n%s\ngateway log:\n%s", err, out, s.proc.Output())
	}
	conf, err := os.ReadFile(outFile)
	must(t, err)
	if !strings.Contains(string(conf), "Endpoint = "+gw+":51820") {
		t.Errorf("the wg-quick file lacks the gateway's endpoint:\n%s", conf)
	}
}

// TestACMEForDoTAndAdmin: with gateway.dns.dot.acme and admin.tls.acme
// the DoT listener and the admin listener serve the certificate the
// gateway's ACME manager (access.acme, Pebble over http-01) got for
// gw.corp.example: a LAN client that trusts only the CA's root gets a DNS
// answer over DoT and the admin API's /healthz over HTTPS. A name that is
// not among access.acme.domains gets each listener's configured
// certificate (the fallback), and /metrics has the expiry, also per
// listener.
func TestACMEForDoTAndAdmin(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	httpPort := acmetest.FreePort(t, ra.GW)
	p := acmetest.Start(t, acmetest.Options{Net: ra.GW, HTTPPort: httpPort, TLSPort: acmetest.FreePort(t, ra.GW), Validity: time.Hour})
	// The configured certificate, served until ACME has one and for
	// other names.
	certFile, keyFile, _ := dotCert(t, s.dir, "gw.corp.example")
	fallbackPEM, err := os.ReadFile(certFile)
	must(t, err)
	fallback, _ := pem.Decode(fallbackPEM)
	s.extras = fmt.Sprintf(`access:
  listen: 10.0.0.1:8443
  acme:
    directory: %s
    ca_file: %s
    domains: [gw.corp.example]
    challenges: [http-01]
    http_listen: 127.0.0.1:%d
gateway:
  dns:
    listen: [10.0.0.1:53]
    upstreams: [10.0.0.5:53]
    dot:
      listen: [10.0.0.1:853]
      cert_file: %[4]s
      key_file: %[5]s
      acme: true
    policies:
      - id: probe
        expression: dns.domains contains "probe.corp.example"
        action: override
        override: [10.0.0.42]
`, p.Directory, p.CAFile, httpPort, certFile, keyFile)
	s.writeConfig()
	raw, err := os.ReadFile(s.cfg)
	must(t, err)
	// The admin listener names no certificate of its own: a self-signed
	// one is its fallback.
	cfg := strings.Replace(string(raw), "admin:\n  listen: 127.0.0.1:9100\n", `admin:
  listen: 10.0.0.1:9443
  tls:
    acme: true
  hosts: [gw.corp.example]
`, 1)
	if cfg == string(raw) {
		t.Fatal("the site's admin section moved: the test cannot put its own")
	}
	must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	s.start()
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", s.proc.Output())
		}
	}()

	var expiry time.Time
	netlab.Eventually(t, 60*time.Second, "the DoT listener serves the CA's certificate", func() error {
		leaf, err := acmetest.Served(t.Context(), ra.LAN, "10.0.0.1:853", "gw.corp.example", p.Roots)
		if err != nil {
			return err
		}
		expiry = leaf.NotAfter
		return nil
	})

	// A DNS answer over DoT, the server verified against the CA's root only.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	conn, err := ra.LAN.DialContext(ctx, "tcp", "10.0.0.1:853")
	must(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	tc := tls.Client(conn, &tls.Config{RootCAs: p.Roots, ServerName: "gw.corp.example", NextProtos: []string{"dot"}})
	must(t, tc.HandshakeContext(ctx))
	dc := &dns.Conn{Conn: tc}
	q := new(dns.Msg)
	q.SetQuestion("probe.corp.example.", dns.TypeA)
	must(t, dc.WriteMsg(q))
	r, err := dc.ReadMsg()
	must(t, err)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.42" {
		t.Errorf("answer over DoT: %v", r)
	}

	// The admin listener: the same certificate, and the API behind it.
	leaf, err := acmetest.Served(t.Context(), ra.LAN, "10.0.0.1:9443", "gw.corp.example", p.Roots)
	if err != nil {
		t.Fatalf("the admin listener does not serve the CA's certificate: %v", err)
	}
	if !leaf.NotAfter.Equal(expiry) {
		t.Errorf("the admin listener's certificate expires %s, DoT's %s: not the one ACME certificate", leaf.NotAfter, expiry)
	}
	c := ra.LAN.HTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: p.Roots, ServerName: "gw.corp.example"}
	req, _ := http.NewRequest("GET", "https://10.0.0.1:9443/healthz", nil)
	req.Host = "gw.corp.example" // the LAN host resolves no names: dial the address
	resp, err := c.Do(req)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("admin /healthz through the verified listener: %s %q", resp.Status, body)
	}

	// Names outside access.acme.domains: DoT's cert_file, and the admin
	// listener's self-signed certificate, kept in the state directory.
	for _, addr := range []string{"10.0.0.1:853", "10.0.0.1:9443"} {
		conn, err := ra.LAN.DialContext(ctx, "tcp", addr)
		must(t, err)
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: "other.corp.example"})
		err = tc.HandshakeContext(ctx)
		if err == nil {
			leaf := tc.ConnectionState().PeerCertificates[0]
			switch {
			case addr == "10.0.0.1:853" && !bytes.Equal(leaf.Raw, fallback.Bytes):
				t.Errorf("%s serves another certificate than its cert_file for a name ACME does not manage", addr)
			case addr == "10.0.0.1:9443" && (leaf.Subject.CommonName != "edgegw admin" || leaf.VerifyHostname("gw.corp.example") != nil):
				t.Errorf("%s serves %q (%v) for a name ACME does not manage, not its self-signed fallback", addr, leaf.Subject.CommonName, leaf.DNSNames)
			}
		}
		tc.Close()
		must(t, err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "state", "admin", "selfsigned.crt")); err != nil {
		t.Errorf("the admin listener's self-signed certificate is not kept: %v", err)
	}

	netlab.Eventually(t, 10*time.Second, "the expiry metric", func() error {
		m := s.get("/metrics")
		for _, name := range []string{
			`edgegw_acme_certificate_expiry_timestamp_seconds{domain="gw.corp.example"}`,
			`edgegw_acme_listener_certificate_expiry_timestamp_seconds{domain="gw.corp.example",listener="dot"}`,
			`edgegw_acme_listener_certificate_expiry_timestamp_seconds{domain="gw.corp.example",listener="admin"}`,
		} {
			if v := metricValue(m, name); int64(v) != expiry.Unix() {
				return fmt.Errorf("%s = %v, want %d", name, v, expiry.Unix())
			}
		}
		return nil
	})
}
