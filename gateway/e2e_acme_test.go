package gateway_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

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
	netlab.Eventually(t, 10*time.Second, "the expiry metric", func() error {
		m := s.get("/metrics")
		if v := metricValue(m, `edgegw_acme_certificate_expiry_timestamp_seconds{domain="wiki.corp.example"}`); int64(v) != expiry.Unix() {
			return fmt.Errorf("edgegw_acme_certificate_expiry_timestamp_seconds = %v, want %d", v, expiry.Unix())
		}
		return nil
	})
}
