//go:build linux

package mail_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/mail"
	"github.com/edgegw/edgegw/gateway/mail/smtptest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestRelay sends through Debian's aiosmtpd: over STARTTLS with a
// certificate the client verifies (from a ca_file, as the config gives
// it), nothing but EHLO and STARTTLS before the handshake; a certificate
// that does not verify and a relay without STARTTLS get nothing and ask
// for no retry (someone must change something first); a relay that is not
// there asks for one.
func TestRelay(t *testing.T) {
	lab := netlab.NewT(t)
	ns, err := lab.NS("smtp")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ns.IP("link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	cert := smtptest.NewCert(t, t.TempDir())
	tlsSrv := smtptest.Start(t, ns, 2525, &cert)
	plain := smtptest.Start(t, ns, 2526, nil)
	ca, err := mail.LoadCA(cert.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From: edgegw@office.example\r\nTo: noc@office.example\r\nSubject: relay test\r\n\r\nhello\r\n")
	r := mail.Relay{Server: "127.0.0.1:2525", TLS: ca, Dial: ns.DialContext}
	if retry, err := r.Send(t.Context(), "edgegw@office.example", []string{"noc@office.example"}, msg); err != nil {
		t.Fatalf("send: %v (retry %v)\n%s", err, retry, tlsSrv.Output())
	}
	testkit.Eventually(t, 10*time.Second, "the message printed by aiosmtpd", func() error {
		out := tlsSrv.Output()
		if i, j := strings.Index(out, "STARTTLS"), strings.Index(out, "MAIL FROM"); i < 0 || j < i {
			return fmt.Errorf("MAIL FROM before STARTTLS in\n%s", out)
		}
		for _, want := range []string{"Subject: relay test", ">> b'RCPT TO:<noc@office.example>'"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in\n%s", want, out)
			}
		}
		return nil
	})

	bad := r
	bad.TLS = &tls.Config{RootCAs: x509.NewCertPool()}
	if retry, err := bad.Send(t.Context(), "edgegw@office.example", []string{"noc@office.example"}, msg); err == nil || retry || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("a certificate that does not verify: retry %v, %v", retry, err)
	}
	clear := r
	clear.Server = "127.0.0.1:2526"
	if retry, err := clear.Send(t.Context(), "edgegw@office.example", []string{"noc@office.example"}, msg); err == nil || retry || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Errorf("a relay without STARTTLS: retry %v, %v", retry, err)
	}
	if strings.Contains(plain.Output(), "relay test") {
		t.Errorf("a message went out in the clear:\n%s", plain.Output())
	}
	gone := r
	gone.Server = "127.0.0.1:2527"
	if retry, err := gone.Send(t.Context(), "edgegw@office.example", []string{"noc@office.example"}, msg); err == nil || !retry {
		t.Errorf("a relay that is not there: retry %v, %v", retry, err)
	}
}
