package gateway_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

// TestAccessThroughGateway runs the Access proxy as part of the gateway: an
// identity provider that cannot be reached keeps /readyz at 503 with the
// reason, while a machine with a service token already reaches the office
// app through the proxy, and the app receives edgegw's signed assertion.
func TestAccessThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	secret := filepath.Join(s.dir, "ci-bot.secret")
	must(t, os.WriteFile(secret, []byte("s3cret-token-value\n"), 0o600))

	// A Splunk HEC receiver on the gateway's loopback: security teams read
	// Access decisions there.
	var hec *hectest.Server
	must(t, ra.GW.Do(func() error {
		hec = hectest.New(hectest.Config{Tokens: []string{"hec-token-1"}})
		return nil
	}))
	defer hec.Close()
	token := filepath.Join(s.dir, "hec-token")
	must(t, os.WriteFile(token, []byte("hec-token-1\n"), 0o600))
	s.extras = fmt.Sprintf(`identity:
  providers:
    - name: corp-sso
      issuer: http://127.0.0.1:1
      client_id: edgegw
access:
  listen: 10.0.0.1:8443
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: ci
          action: service_auth
          include: [{service_token: ci-bot}]
        - name: staff
          action: allow
          include: [{email_domain: corp.example}]
  service_tokens:
    - name: ci-bot
      client_id: 6f2c1a0e.access
      client_secret_file: %s
logpush:
  - name: splunk-access
    dataset: access_requests
    destination: %s
    token_file: %s
    max_upload_interval: 1s
`, secret, hec.SplunkURL("/services/collector/event", url.Values{"sourcetype": {"edgegw:access"}}), token)
	s.writeConfig()
	s.start()

	srv, err := ra.LAN.ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "assertion=%t\n", r.Header.Get("Edgegw-Access-Jwt-Assertion") != "")
	}))
	must(t, err)
	defer srv.Close()

	netlab.Eventually(t, 10*time.Second, "readyz names the unreachable provider", func() error {
		resp, err := ra.GW.HTTPClient().Get("http://127.0.0.1:9100/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "corp-sso") {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	})

	c := ra.LAN.HTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "wiki.corp.example"}
	do := func(hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("GET", "https://10.0.0.1:8443/", nil)
		req.Host = "wiki.corp.example"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(map[string]string{"CF-Access-Client-Id": "6f2c1a0e.access", "CF-Access-Client-Secret": "s3cret-token-value"}); code != 200 || body != "assertion=true\n" {
		t.Errorf("service token: %d %q", code, body)
	}
	if code, _ := do(map[string]string{"CF-Access-Client-Id": "6f2c1a0e.access", "CF-Access-Client-Secret": "wrong"}); code == 200 {
		t.Error("a wrong secret got through")
	}
	if code, _ := do(map[string]string{"Accept": "application/json"}); code != http.StatusUnauthorized {
		t.Errorf("API client without a session: %d, want 401", code)
	}
	if st := s.get("/api/v1/status"); !strings.Contains(st, `"listen": "10.0.0.1:8443"`) {
		t.Errorf("status lacks access:\n%s", st)
	}

	// Every decision reaches Splunk as an access_requests record.
	netlab.Eventually(t, 15*time.Second, "access records in the HEC receiver", func() error {
		var allowed, denied int
		for _, e := range hec.Events() {
			var rec struct {
				Action, AppDomain, IPAddress, UserUID string
				Allowed                               bool
			}
			if err := json.Unmarshal(e.Event, &rec); err != nil {
				return err
			}
			if e.Sourcetype != "edgegw:access" || rec.AppDomain != "wiki.corp.example" || rec.IPAddress != "10.0.0.5" {
				return fmt.Errorf("unexpected event %s (sourcetype %q)", e.Event, e.Sourcetype)
			}
			if rec.Allowed && rec.UserUID == "ci-bot" {
				allowed++
			} else if !rec.Allowed {
				denied++
			}
		}
		if allowed < 1 || denied < 1 {
			return fmt.Errorf("%d allowed, %d denied records so far", allowed, denied)
		}
		return nil
	})
	if lp := s.get("/api/v1/logpush"); !strings.Contains(lp, `"splunk-access"`) {
		t.Errorf("/api/v1/logpush:\n%s", lp)
	}
}
