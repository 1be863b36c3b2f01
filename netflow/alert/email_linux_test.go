//go:build linux

package alert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/mail/smtptest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestEmail sends a firing and its resolve to Debian's aiosmtpd (the
// debugging handler prints each message it receives) over STARTTLS with
// a certificate the client verifies; a server that offers no STARTTLS is
// refused without sending, and without retries.
func TestEmail(t *testing.T) {
	lab := netlab.NewT(t)
	ns, err := lab.NS("smtp")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ns.IP("link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	cert := smtptest.NewCert(t, t.TempDir())
	pool := cert.Pool
	tlsSrv := smtptest.Start(t, ns, 2525, &cert)
	plain := smtptest.Start(t, ns, 2526, nil)

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
