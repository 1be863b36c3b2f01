//go:build linux

package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// smtpPython runs Debian's python3-aiosmtpd (a python3 earlier in PATH
// may lack the module).
const smtpPython = "/usr/bin/python3"

// smtpCert writes a certificate for 127.0.0.1 and its key, and returns a
// pool that trusts it.
func smtpCert(t *testing.T, dir string) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smtp.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

// TestEnrollmentMail: an enrollment is mailed over STARTTLS, with a
// certificate the client verifies, to the admins and the device's user,
// naming the device and how to revoke it; a server without STARTTLS gets
// nothing, and no retry.
func TestEnrollmentMail(t *testing.T) {
	if out, err := exec.Command(smtpPython, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		t.Fatalf("python3-aiosmtpd is required (apt-get install python3-aiosmtpd): %v: %s", err, out)
	}
	lab := netlab.NewT(t)
	ns, err := lab.NS("smtp")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ns.IP("link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	cert, key, pool := smtpCert(t, t.TempDir())
	start := func(port string, args ...string) *netlab.Proc {
		p, err := ns.Start(smtpPython, append([]string{"-m", "aiosmtpd", "-n", "-d", "-l", "127.0.0.1:" + port}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop() })
		testkit.Eventually(t, 20*time.Second, "aiosmtpd listening on "+port, func() error {
			c, err := ns.DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
			if err != nil {
				return fmt.Errorf("%v: %s", err, p.Output())
			}
			return c.Close()
		})
		return p
	}
	tlsSrv := start("2525", "--tlscert", cert, "--tlskey", key)
	plain := start("2526")

	m := &Mail{Server: "127.0.0.1:2525", From: "edgegw <edgegw@corp.example>", Admins: []string{"secops@corp.example"}, User: true,
		TLS: &tls.Config{RootCAs: pool}, Dial: ns.DialContext}
	if err := CheckMail(m); err != nil {
		t.Fatal(err)
	}
	n := Notification{Event: EventEnrolled, Time: time.Now(), Gateway: "lon-edge-1", Provider: "corp", Remote: "198.51.100.7:50000",
		Device: NotificationDevice{ID: "dev_0123456789abcdefghjkmnpqrs", Name: "alice-laptop\r\nBcc: evil@attacker.example", Email: "alice@corp.example",
			Groups: []string{"staff"}, Address: netip.MustParseAddr("100.96.0.2"), Expires: time.Now().Add(time.Hour)}}
	if retry, err := m.send(context.Background(), n); err != nil {
		t.Fatalf("send: %v (retry %v)\n%s", err, retry, tlsSrv.Output())
	}
	testkit.Eventually(t, 10*time.Second, "the message printed by aiosmtpd", func() error {
		out := tlsSrv.Output()
		if i, j := strings.Index(out, "STARTTLS"), strings.Index(out, "MAIL FROM"); i < 0 || j < i {
			return fmt.Errorf("MAIL FROM before STARTTLS in\n%s", out)
		}
		for _, want := range []string{"secops@corp.example", "alice@corp.example", "lon-edge-1", "edgegw device revoke dev_0123456789abcdefghjkmnpqrs", "100.96.0.2"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("%q missing from\n%s", want, out)
			}
		}
		if strings.Contains(out, "RCPT TO:<evil@attacker.example>") || strings.Contains(out, "\nBcc:") {
			return fmt.Errorf("the device name injected a header or recipient:\n%s", out)
		}
		return nil
	})
	m.Server = "127.0.0.1:2526"
	retry, err := m.send(context.Background(), n)
	if err == nil || retry || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("server without STARTTLS: %v (retry %v)", err, retry)
	}
	if out := plain.Output(); strings.Contains(out, "MAIL FROM") {
		t.Fatalf("something was sent in clear text:\n%s", out)
	}
}
