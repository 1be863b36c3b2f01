package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestRotateSecretsOnHUP rotates a service token's secret and the Access
// listener's TLS certificate in place, with the YAML untouched, and sends
// SIGHUP: the old secret must stop working and the new certificate must be
// served at once, without a restart. A leaked secret rotated this way must
// not keep working until the next reboot.
func TestRotateSecretsOnHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	secret := filepath.Join(s.dir, "ci-bot.secret")
	certFile := filepath.Join(s.dir, "access.crt")
	keyFile := filepath.Join(s.dir, "access.key")
	must(t, os.WriteFile(secret, []byte("first-secret-value-0001\n"), 0o600))
	writeCert(t, certFile, keyFile, 1001)
	s.extras = fmt.Sprintf(`access:
  listen: 10.0.0.1:8443
  tls:
    cert_file: %s
    key_file: %s
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: ci
          action: service_auth
          include: [{service_token: ci-bot}]
  service_tokens:
    - name: ci-bot
      client_id: 6f2c1a0e.access
      client_secret_file: %s
`, certFile, keyFile, secret)
	s.writeConfig()
	s.start()

	srv, err := ra.LAN.ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "wiki")
	}))
	must(t, err)
	defer srv.Close()

	// A new client per request: a kept-alive TLS connection would keep
	// the certificate of its handshake.
	do := func(secret string) (code int, serial int64) {
		t.Helper()
		c := ra.LAN.HTTPClient()
		c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "wiki.corp.example"}
		c.Transport.(*http.Transport).DisableKeepAlives = true
		req, _ := http.NewRequest("GET", "https://10.0.0.1:8443/", nil)
		req.Host = "wiki.corp.example"
		req.Header.Set("CF-Access-Client-Id", "6f2c1a0e.access")
		req.Header.Set("CF-Access-Client-Secret", secret)
		resp, err := c.Do(req)
		must(t, err)
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	netlab.Eventually(t, 10*time.Second, "the service token reaches the app", func() error {
		if code, serial := do("first-secret-value-0001"); code != 200 || serial != 1001 {
			return fmt.Errorf("status %d, certificate serial %d", code, serial)
		}
		return nil
	})

	// Rotate both files in place, as an operator (or certbot) would.
	must(t, os.WriteFile(secret, []byte("second-secret-value-0002\n"), 0o600))
	writeCert(t, certFile, keyFile, 2002)
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)

	if code, serial := do("first-secret-value-0001"); code == 200 {
		t.Errorf("the rotated-out secret still authenticates after SIGHUP (certificate serial %d)", serial)
	}
	code, serial := do("second-secret-value-0002")
	if code != 200 {
		t.Errorf("the new secret: status %d, want 200", code)
	}
	if serial != 2002 {
		t.Errorf("served certificate serial %d after SIGHUP, want the rotated one (2002)", serial)
	}
}

// writeCert writes a self-signed ECDSA certificate for wiki.corp.example
// with the given serial number, and its key.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "wiki.corp.example"},
		DNSNames:     []string{"wiki.corp.example"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
}
