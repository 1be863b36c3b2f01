package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// getterFunc adapts a function to certificateGetter.
type getterFunc func(*tls.ClientHelloInfo) (*tls.Certificate, error)

func (f getterFunc) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return f(h) }

// TestCertSource: without an ACME manager the listeners get nil, nil (their
// configured certificate); with one they get its answer, and each ACME
// certificate a listener hands out is in the per-listener expiry metric
// under the hello's name; an error or no certificate records nothing.
func TestCertSource(t *testing.T) {
	notAfter := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC) // 1803902400
	cert := testCert(t, notAfter)
	var src certSource
	dot, admin := src.forListener("dot"), src.forListener("admin")
	hello := &tls.ClientHelloInfo{ServerName: "GW.corp.example."}

	if c, err := dot(hello); c != nil || err != nil || src.managing() {
		t.Fatalf("no manager: %v, %v (managing %v), want nil, nil", c, err, src.managing())
	}
	for _, tc := range []struct {
		name string
		g    getterFunc
		want *tls.Certificate
		err  bool
	}{
		{"none yet", func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }, nil, false},
		{"failed", func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("no") }, nil, true},
	} {
		src.set(tc.g)
		c, err := dot(hello)
		if c != tc.want || (err != nil) != tc.err {
			t.Errorf("%s: %v, %v", tc.name, c, err)
		}
	}
	if n := testutil.CollectAndCount(&src); n != 0 {
		t.Errorf("%d series before any ACME certificate was served", n)
	}
	src.set(getterFunc(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }))
	for _, get := range []func(*tls.ClientHelloInfo) (*tls.Certificate, error){dot, admin} {
		if c, err := get(hello); c != cert || err != nil {
			t.Fatalf("with a manager: %v, %v", c, err)
		}
	}
	want := `
# HELP edgegw_acme_listener_certificate_expiry_timestamp_seconds When the ACME certificate a TLS listener (dot, admin) last served for the name expires (Unix time).
# TYPE edgegw_acme_listener_certificate_expiry_timestamp_seconds gauge
edgegw_acme_listener_certificate_expiry_timestamp_seconds{domain="gw.corp.example",listener="admin"} 1.8039024e+09
edgegw_acme_listener_certificate_expiry_timestamp_seconds{domain="gw.corp.example",listener="dot"} 1.8039024e+09
`
	if err := testutil.CollectAndCompare(&src, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	src.set(nil)
	if c, err := dot(hello); c != nil || err != nil {
		t.Errorf("manager removed: %v, %v", c, err)
	}
}

// testCert is a self-signed certificate expiring at notAfter, without
// Leaf (as a getter may hand it out).
func testCert(t *testing.T, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw.corp.example"},
		DNSNames: []string{"gw.corp.example"}, NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
