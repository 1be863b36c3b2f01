//go:build linux

package alert

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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// aiosmtpd is Debian's python3-aiosmtpd, run by Debian's python (a
// python3 earlier in PATH may lack the module).
const aiosmtpdPython = "/usr/bin/python3"

func needAiosmtpd(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(aiosmtpdPython, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		t.Fatalf("python3-aiosmtpd is required (apt-get install python3-aiosmtpd): %v: %s", err, out)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// a pool that trusts it.
func selfSigned(t *testing.T, dir string) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smtp.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"smtp.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

// TestEmail sends a firing and its resolve to Debian's aiosmtpd (the
// debugging handler prints each message it receives) over STARTTLS with
// a certificate the client verifies; a server that offers no STARTTLS is
// refused without sending, and without retries.
func TestEmail(t *testing.T) {
	needAiosmtpd(t)
	lab := netlab.NewT(t)
	ns, err := lab.NS("smtp")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ns.IP("link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	start := func(port string, args ...string) *netlab.Proc {
		p, err := ns.Start(aiosmtpdPython, append([]string{"-m", "aiosmtpd", "-n", "-d", "-l", "127.0.0.1:" + port}, args...)...)
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

	m := Email{Server: "127.0.0.1:2525", From: "edgegw <edgegw@office.example>", To: []string{"noc@office.example", "ops@office.example"},
		TLS: &tls.Config{RootCAs: pool}, Dial: ns.DialContext}
	if err := m.validate(); err != nil {
		t.Fatal(err)
	}
	ev := Event{ID: "0123abcd", Rule: "branch-flood", Prefix: "10.9.0.2/32", State: Firing, Time: time.Now(),
		BitsPerSecond: 1.8e6, ThresholdBitsPerSecond: 200000, DurationSeconds: 10}
	for _, state := range []State{Firing, Resolved} {
		ev.State = state
		if retry, err := m.post(context.Background(), nil, ev); err != nil {
			t.Fatalf("%s: %v (retry %v)\n%s", state, err, retry, tlsSrv.Output())
		}
	}
	testkit.Eventually(t, 10*time.Second, "both messages printed by aiosmtpd", func() error {
		out := tlsSrv.Output()
		// Nothing but EHLO and STARTTLS before the handshake.
		if i, j := strings.Index(out, "STARTTLS"), strings.Index(out, "MAIL FROM"); i < 0 || j < i {
			return fmt.Errorf("MAIL FROM before STARTTLS in\n%s", out)
		}
		for _, want := range []string{"Subject: [edgegw] Flow alert: branch-flood firing on 10.9.0.2/32",
			"Subject: [edgegw] Flow alert: branch-flood resolved on 10.9.0.2/32", "X-Edgegw-Alert-Id: 0123abcd",
			"rule: branch-flood", ">> b'STARTTLS'", ">> b'RCPT TO:<noc@office.example>'", ">> b'RCPT TO:<ops@office.example>'"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in\n%s", want, out)
			}
		}
		return nil
	})

	// The wrong certificate: refused at STARTTLS.
	bad := m
	bad.TLS = &tls.Config{RootCAs: x509.NewCertPool()}
	if _, err := bad.post(context.Background(), nil, ev); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("an untrusted certificate: %v", err)
	}
	// No STARTTLS on offer: nothing is sent, and no retry is asked for.
	m.Server = "127.0.0.1:2526"
	retry, err := m.post(context.Background(), nil, ev)
	if err == nil || retry || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Errorf("a server without STARTTLS: retry %v, %v", retry, err)
	}
	if strings.Contains(plain.Output(), "X-Edgegw-Alert-Id") {
		t.Errorf("a message went out in the clear:\n%s", plain.Output())
	}
}
