// Package smtptest runs Debian's aiosmtpd (python3-aiosmtpd) as the SMTP
// relay of tests, in a network namespace: its debugging handler prints
// every command and message it receives, which is what tests assert on.
package smtptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// Python is Debian's python3, which has python3-aiosmtpd (a python3
// earlier in PATH may lack the module).
const Python = "/usr/bin/python3"

// Need fails t unless aiosmtpd is installed.
func Need(t testing.TB) {
	t.Helper()
	if out, err := exec.Command(Python, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		t.Fatalf("python3-aiosmtpd is required (apt-get install python3-aiosmtpd): %v: %s", err, out)
	}
}

// Cert is a self-signed certificate for 127.0.0.1 and smtp.test, in
// files, and a pool that trusts it.
type Cert struct {
	CertFile, KeyFile string
	Pool              *x509.CertPool
}

// NewCert writes a fresh Cert into dir.
func NewCert(t testing.TB, dir string) Cert {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smtp.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"smtp.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	c := Cert{CertFile: filepath.Join(dir, "smtp-cert.pem"), KeyFile: filepath.Join(dir, "smtp-key.pem"), Pool: x509.NewCertPool()}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	c.Pool.AddCert(leaf)
	return c
}

// Start runs aiosmtpd in ns on 127.0.0.1:port, offering STARTTLS with
// cert (nil: no STARTTLS at all), and waits until it accepts
// connections. The test's cleanup stops it. ns's loopback must be up.
func Start(t testing.TB, ns *netlab.NS, port int, cert *Cert) *netlab.Proc {
	t.Helper()
	Need(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"-m", "aiosmtpd", "-n", "-d", "-l", addr}
	if cert != nil {
		args = append(args, "--tlscert", cert.CertFile, "--tlskey", cert.KeyFile)
	}
	p, err := ns.Start(Python, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	testkit.Eventually(t, 20*time.Second, "aiosmtpd listening on "+addr, func() error {
		c, err := ns.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			return fmt.Errorf("%v: %s", err, p.Output())
		}
		return c.Close()
	})
	return p
}
