// Package selfsign makes and keeps the self-signed certificate a TLS
// listener of edgegw serves when it has no other: the Access listener
// without a configured certificate, and the DoT and admin listeners with
// ACME but no cert_file, until ACME has a certificate and whenever it
// fails. Clients are told to distrust it, so it is a fallback that keeps
// the listener up, never a way to be trusted.
package selfsign

import (
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
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
)

// Validity is how long a new certificate is valid; one that expires
// within Renew is made again.
const (
	Validity = 365 * 24 * time.Hour
	Renew    = 7 * 24 * time.Hour
)

// Load returns the certificate kept at base+".crt" and base+".key" when
// it still covers hosts (names, or IP addresses) and is valid beyond
// now+Renew; else it makes a new one (ECDSA P-256, CommonName cn, the
// hosts and "localhost" as names) and keeps it there, the key 0600. An
// empty base keeps nothing. made tells whether the certificate is new.
func Load(base, cn string, hosts []string, now time.Time) (cert tls.Certificate, made bool, err error) {
	if base != "" {
		if c, err := tls.LoadX509KeyPair(base+".crt", base+".key"); err == nil && c.Leaf != nil &&
			now.Add(Renew).Before(c.Leaf.NotAfter) && Covers(c.Leaf, hosts) {
			return c, false, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "localhost" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	if base != "" {
		if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
			return tls.Certificate{}, false, fmt.Errorf("keep the self-signed certificate: %w", err)
		}
		// The key first: a crash between the two leaves a certificate
		// that does not load with the old key, and the next Load makes a
		// new pair.
		err := renameio.WriteFile(base+".key", keyPEM, 0o600, renameio.WithStaticPermissions(0o600))
		if err == nil {
			err = renameio.WriteFile(base+".crt", certPEM, 0o644, renameio.WithStaticPermissions(0o644))
		}
		if err != nil {
			return tls.Certificate{}, false, fmt.Errorf("keep the self-signed certificate: %w", err)
		}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	return c, true, nil
}

// Covers tells whether c is valid for every one of hosts (names or IP
// addresses).
func Covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}
