package access

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
)

// testCA makes a CA and a client certificate with cn signed by it.
func testCA(t *testing.T, cn string) (caPEM []byte, client tls.Certificate) {
	t.Helper()
	caKey := newECKey(t)
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key := newECKey(t)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	caPEM, good := testCA(t, "build-host-1")
	_, rogue := testCA(t, "build-host-1") // same name, another CA
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, caPEM, 0o644)
	f := newFakeIdP(t)
	up := newUpstream(t)
	cfg := defaultConfig(t, up.URL, dir)
	cfg.TLS.ClientCAFile = caFile
	cfg.Apps = append(cfg.Apps, App{Name: "builds", Domain: "builds.test", Upstream: up.URL, Policies: []policy.Policy{
		{Name: "hosts", Action: policy.ServiceAuth, Include: []policy.Selector{{Certificate: yes()}}, Require: []policy.Selector{{CommonName: "build-host-1"}}},
	}})
	e := startEnv(t, cfg, idpConfig(t, f, dir), dir, up)
	withCert := func(cert *tls.Certificate) *http.Client {
		c := e.client(false)
		tr := c.Transport.(*http.Transport)
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	resp, body := e.get(withCert(&good), e.url("builds.test", "/"), "Accept", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("good certificate: %d %s", resp.StatusCode, body)
	}
	raw := decodeEcho(t, body).Headers.Get(HeaderAssertion)
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var cl tokenClaims
	tok.UnsafeClaimsWithoutVerification(&cl)
	if cl.CommonName != "build-host-1" || cl.Type != tokenService || cl.Subject != "" {
		t.Fatalf("service assertion claims %+v", cl)
	}
	for name, c := range map[string]*http.Client{"no certificate": withCert(nil)} {
		if resp, _ := e.get(c, e.url("builds.test", "/"), "Accept", "application/json"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d", name, resp.StatusCode)
		}
	}
	// A certificate from another CA does not even complete the handshake.
	req, _ := http.NewRequest("GET", e.url("builds.test", "/"), nil)
	if resp, err := withCert(&rogue).Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("rogue certificate accepted")
		}
	}
}

// fakeDevices maps addresses to the subject of the device's owner.
type fakeDevices map[netip.Addr]string

func (f fakeDevices) DeviceOwner(a netip.Addr) (string, bool) {
	s, ok := f[a]
	return s, ok
}

type fakeCountries struct{}

func (fakeCountries) Country(netip.Addr) string { return "GB" }

// TestDeviceSelectorAndCountry: the device selector matches only when the
// enrolled device behind the source address is the session user's own.
func TestDeviceSelectorAndCountry(t *testing.T) {
	for _, tt := range []struct {
		name  string
		owner func(f *fakeIdP) (string, bool)
		want  int
	}{
		{"the user's own device", func(f *fakeIdP) (string, bool) { return identity.SubjectOf(f.issuer, "user-1"), true }, http.StatusOK},
		{"another user's device", func(f *fakeIdP) (string, bool) { return identity.SubjectOf(f.issuer, "user-2"), true }, http.StatusForbidden},
		{"same sub at another issuer", func(f *fakeIdP) (string, bool) { return identity.SubjectOf("https://other.example", "user-1"), true }, http.StatusForbidden},
		{"no enrolled device", func(f *fakeIdP) (string, bool) { return "", false }, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := newFakeIdP(t)
			up := newUpstream(t)
			cfg := defaultConfig(t, up.URL, dir)
			cfg.Apps[0].Policies[0].Require = []policy.Selector{{Device: yes()}}
			devs := fakeDevices{}
			if owner, ok := tt.owner(f); ok {
				devs[netip.MustParseAddr("127.0.0.1")] = owner
			}
			e := startEnv(t, cfg, idpConfig(t, f, dir), dir, up, func(o *Options) { o.Devices = devs; o.Countries = fakeCountries{} })
			c := e.client(true)
			resp, _ := e.get(c, e.url("wiki.test", "/"))
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if recs := e.records(); len(recs) == 0 || recs[0].Country != "GB" {
				t.Fatalf("records %+v", recs)
			}
		})
	}
}

func TestProviderChooser(t *testing.T) {
	dir := t.TempDir()
	f1, f2 := newFakeIdP(t), newFakeIdP(t)
	f2.set(func(f *fakeIdP) { f.claims["email"] = "bob@corp.example" })
	up := newUpstream(t)
	idp := idpConfig(t, f1, dir)
	idp.Providers = append(idp.Providers, identity.Provider{Name: "partner", Issuer: f2.issuer, ClientID: f2.clientID, ClientSecretFile: idp.Providers[0].ClientSecretFile})
	cfg := defaultConfig(t, up.URL, dir)
	cfg.Apps[1].Providers = []string{"partner"}
	e := startEnv(t, cfg, idp, dir, up)
	c := e.client(true)
	resp, body := e.get(c, e.url("wiki.test", "/x"))
	if resp.StatusCode != 200 || !strings.Contains(body, "provider=partner") || !strings.Contains(body, "provider=corp") {
		t.Fatalf("chooser page: %d %s", resp.StatusCode, body)
	}
	resp, body = e.get(c, e.url("wiki.test", PathLogin+"?provider=partner&redirect_url=%2Fx"))
	if resp.StatusCode != 200 || decodeEcho(t, body).Headers.Get(HeaderEmail) != "bob@corp.example" {
		t.Fatalf("partner login: %d %s", resp.StatusCode, body)
	}
	// docs only takes the partner provider: no chooser, and corp is refused.
	resp, _ = e.get(c, e.url("docs.test", PathLogin+"?provider=corp"))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("corp login on docs: %d", resp.StatusCode)
	}
	resp, body = e.get(c, e.url("docs.test", "/y"))
	if resp.StatusCode != 200 || decodeEcho(t, body).Headers.Get(HeaderEmail) != "bob@corp.example" {
		t.Fatalf("docs: %d %s", resp.StatusCode, body)
	}
}

func TestIdentityConfig(t *testing.T) {
	c := identity.Config{Providers: []identity.Provider{{Name: "corp", Issuer: "https://sso.corp.example", ClientID: "edgegw"}}}
	c.SetDefaults()
	c.Providers[0].SetDefaults()
	if c.Store != "sqlite" || c.Providers[0].GroupsClaim != "groups" || strings.Join(c.Providers[0].Scopes, ",") != "openid,email,profile" {
		t.Fatalf("defaults %+v", c)
	}
	for issuer, ok := range map[string]bool{
		"https://sso.example":        true,
		"http://127.0.0.1:5556/dex":  true,
		"http://[::1]:8080":          true,
		"http://localhost:9998/":     true,
		"http://sso.example":         false,
		"ftp://sso.example":          false,
		"https://sso.example/?a=b":   false,
		"sso.example":                false,
		"https://user@sso.example":   false,
		"http://127.0.0.1.nip.io:80": false,
	} {
		if got := identity.CheckIssuer(issuer) == ""; got != ok {
			t.Errorf("CheckIssuer(%q) ok=%v, want %v", issuer, got, ok)
		}
	}
	var got []string
	bad := identity.Config{Store: "mysql://x"}
	bad.Validate(func(f, m string) { got = append(got, f) })
	p := identity.Provider{Name: "Corp SSO"}
	p.Validate(func(f, m string) { got = append(got, f) })
	if strings.Join(got, ",") != "store,name,issuer,client_id" {
		t.Fatalf("problems %v", got)
	}
}
