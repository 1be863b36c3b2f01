// Package acmetest runs Pebble, Let's Encrypt's ACME test server, for
// tests: installed with go install from the module proxy into a temporary
// directory (never a binary already on the machine), on loopback or in a
// network namespace, with a resolver that sends every validation to one
// address.
package acmetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// pebbleVersion is the Pebble the tests install (go install, into a
// temporary directory): the ACME test server of Let's Encrypt.
const pebbleVersion = "v2.10.3"

var pebbleBin struct {
	mu   sync.Mutex
	path string
	err  error
	dir  string
}

// Cleanup removes the installed Pebble; call it from TestMain after
// m.Run.
func Cleanup() {
	pebbleBin.mu.Lock()
	defer pebbleBin.mu.Unlock()
	if pebbleBin.dir != "" {
		os.RemoveAll(pebbleBin.dir)
		pebbleBin.dir, pebbleBin.path = "", ""
	}
}

// installPebble builds Pebble once per test binary from the Go module
// proxy; the Go build cache makes later runs quick.
func installPebble(t testing.TB) string {
	t.Helper()
	pebbleBin.mu.Lock()
	defer pebbleBin.mu.Unlock()
	if pebbleBin.path == "" && pebbleBin.err == nil {
		func() {
			dir, err := os.MkdirTemp("", "edgegw-pebble-")
			if err != nil {
				pebbleBin.err = err
				return
			}
			pebbleBin.dir = dir
			cmd := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "GOWORK=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				pebbleBin.err = fmt.Errorf("go install pebble@%s: %w\n%s", pebbleVersion, err, out)
				return
			}
			pebbleBin.path = filepath.Join(dir, "pebble")
		}()
	}
	if pebbleBin.err != nil {
		testkit.Unavailable(t, pebbleBin.err.Error())
	}
	return pebbleBin.path
}

// Pebble is one running Pebble.
type Pebble struct {
	Directory string         // the ACME directory URL
	CAFile    string         // the roots of the directory's own HTTPS
	Roots     *x509.CertPool // the roots of the certificates Pebble issues
	RootsPEM  []byte
}

// Options say where Pebble runs and validates.
type Options struct {
	HTTPPort, TLSPort int           // where validations connect
	Validity          time.Duration // of the issued certificates
	// Net runs Pebble and its resolver; default this process's
	// namespace. A *netlab.NS runs them in a namespace.
	Net Net
	// ResolveTo is the address every name resolves to for validations;
	// default 127.0.0.1 (in Net).
	ResolveTo net.IP
	// DNSServer, host:port, is the server Pebble asks instead (for
	// dns-01: the Knot that holds the zone); ResolveTo is then unused.
	DNSServer string
}

// Net is where Pebble runs: a *netlab.NS has these methods.
type Net interface {
	Command(name string, args ...string) *exec.Cmd
	Listen(network, addr string) (net.Listener, error)
	ListenPacket(network, addr string) (net.PacketConn, error)
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

type hostNet struct{}

func (hostNet) Command(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
func (hostNet) Listen(network, addr string) (net.Listener, error) {
	return net.Listen(network, addr)
}
func (hostNet) ListenPacket(network, addr string) (net.PacketConn, error) {
	return net.ListenPacket(network, addr)
}
func (hostNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Start runs Pebble on 127.0.0.1 of o.Net with a resolver that answers
// every name with o.ResolveTo, so validations reach the gateway there. It
// is stopped when t ends.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	if o.Net == nil {
		o.Net = hostNet{}
	}
	if o.ResolveTo == nil {
		o.ResolveTo = net.IPv4(127, 0, 0, 1)
	}
	bin := installPebble(t)
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := serverCert(t, "127.0.0.1")
	caFile := filepath.Join(dir, "ca.pem")
	for name, b := range map[string][]byte{caFile: caPEM, filepath.Join(dir, "cert.pem"): certPEM, filepath.Join(dir, "key.pem"): keyPEM} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	listen, mgmt := FreePort(t, o.Net), FreePort(t, o.Net)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", listen),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":             filepath.Join(dir, "cert.pem"),
		"privateKey":              filepath.Join(dir, "key.pem"),
		"httpPort":                o.HTTPPort,
		"tlsPort":                 o.TLSPort,
		"keyAlgorithm":            "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "short-lived, for renewal tests", "validityPeriod": int(o.Validity.Seconds()),
		}},
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	resolver := o.DNSServer
	if resolver == "" {
		resolver = startResolver(t, o.Net, o.ResolveTo)
	}
	cmd := o.Net.Command(bin, "-config", confFile, "-dnsserver", resolver)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	out := &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// ip netns exec execs Pebble: the process is Pebble itself.
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("pebble:\n%s", out.String())
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: o.Net.DialContext}}
	p := &Pebble{Directory: fmt.Sprintf("https://127.0.0.1:%d/dir", listen), CAFile: caFile}
	testkit.Eventually(t, 30*time.Second, "pebble serves its directory", func() error {
		resp, err := client.Get(p.Directory)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	})
	resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmt))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p.RootsPEM, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM(p.RootsPEM) {
		t.Fatalf("pebble's root: no PEM in %q", p.RootsPEM)
	}
	return p
}

// startResolver answers every A question with to and every other with no
// data, over UDP and TCP on one port of 127.0.0.1 in n; it returns its
// address.
func startResolver(t testing.TB, n Net, to net.IP) string {
	ln, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := n.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: to})
			}
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return ln.Addr().String()
}

// serverCert makes a CA and a certificate it signs for ip.
func serverCert(t testing.TB, ip string) (caPEM, certPEM, keyPEM []byte) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ip)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// FreePort is a TCP port free on 127.0.0.1 of n (nil: this process's
// namespace) a moment ago.
func FreePort(t testing.TB, n Net) int {
	t.Helper()
	if n == nil {
		n = hostNet{}
	}
	ln, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Served is the leaf the listener at addr serves for name, verified
// against roots, dialled in n (nil: this process's namespace).
func Served(ctx context.Context, n Net, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	if n == nil {
		n = hostNet{}
	}
	raw, err := n.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots})
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}
