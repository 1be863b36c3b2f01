//go:build linux

package enroll

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/mail/smtptest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestEnrollmentMail: an enrollment is mailed over STARTTLS, with a
// certificate the client verifies, to the admins and the device's user,
// naming the device and how to revoke it; a server without STARTTLS gets
// nothing, and no retry.
func TestEnrollmentMail(t *testing.T) {
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
