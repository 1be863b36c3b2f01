package enroll

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"strings"
	"time"

	smtprelay "github.com/edgegw/edgegw/gateway/mail"
)

// Mail sends enrollment notifications by e-mail: to the admins, and to the
// user in whose name the device enrolled, who is the first to know
// whether they enrolled it. The session is always upgraded with STARTTLS
// before anything is sent (a server that does not offer it is refused),
// and authenticates with PLAIN when a user name is set.
type Mail struct {
	Server string   // host:port, e.g. smtp.corp.example:587
	From   string   // the envelope and header sender
	Admins []string // told of every enrollment
	User   bool     // also the device's user (its email)
	// Username "": no authentication.
	Username, Password string
	// TLS verifies the server; nil: the system roots and Server's host
	// name. Tests set RootCAs.
	TLS *tls.Config
	// Dial opens the connection; nil: a net.Dialer. Tests dial into a
	// network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// CheckMail checks the addresses and the server of m.
func CheckMail(m *Mail) error {
	host, port, err := net.SplitHostPort(m.Server)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("enrollment mail: server %q is not host:port", m.Server)
	}
	if _, err := mail.ParseAddress(m.From); err != nil {
		return fmt.Errorf("enrollment mail: from %q: %w", m.From, err)
	}
	if len(m.Admins) == 0 && !m.User {
		return errors.New("enrollment mail: no recipients: name admins, or tell the user")
	}
	for _, to := range m.Admins {
		if _, err := mail.ParseAddress(to); err != nil {
			return fmt.Errorf("enrollment mail: admin %q: %w", to, err)
		}
	}
	return nil
}

// recipients of n: the admins, and the user when asked for and the
// provider's address parses.
func (m *Mail) recipients(n Notification) []string {
	to := append([]string(nil), m.Admins...)
	if m.User {
		if a, err := mail.ParseAddress(n.Device.Email); err == nil {
			to = append(to, a.Address)
		}
	}
	return to
}

// headerText keeps a value on one line (headers, and the body's fields:
// the registry refuses control characters in names, this is the second
// guard).
func headerText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// message renders n as an RFC 5322 message to the recipients.
func (m *Mail) message(n Notification, to []string) []byte {
	d := n.Device
	subject := fmt.Sprintf("New device %q enrolled for %s on %s", d.Name, d.Email, n.Gateway)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", headerText(m.From))
	fmt.Fprintf(&b, "To: %s\r\n", headerText(strings.Join(to, ", ")))
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", headerText(subject)))
	fmt.Fprintf(&b, "Date: %s\r\n", n.Time.Format(time.RFC1123Z))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	state := "active"
	if d.Pending {
		state = "waiting for an administrator's approval"
	}
	body := fmt.Sprintf(`A device was enrolled in the name of %s on the gateway %s.

Device:   %s (%s)
Address:  %s
Groups:   %s
Key:      %s
Expires:  %s
State:    %s
Sign-in:  %s, from %s
Time:     %s

If you did not enroll this device, tell your administrators at once: a
device code that someone else started and you approved enrolls their
device this way. Administrators revoke it with: edgegw device revoke %s
`, headerText(d.Email), headerText(n.Gateway), headerText(d.Name), d.ID, d.Address, headerText(strings.Join(d.Groups, ", ")), d.PublicKey,
		d.Expires.Format(time.RFC3339), state, headerText(n.Provider), n.Remote, n.Time.Format(time.RFC3339), d.ID)
	// Lines in SMTP end in CRLF; a lone "." line is escaped by the
	// client's data writer.
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	return b.Bytes()
}

// send makes one attempt (gateway/mail: STARTTLS always); retry says
// whether another may succeed: after network errors and 4xx replies, not
// after 5xx replies, a server without STARTTLS or a certificate that does
// not verify.
func (m *Mail) send(ctx context.Context, n Notification) (retry bool, _ error) {
	to := m.recipients(n)
	if len(to) == 0 {
		return false, nil
	}
	from, _ := mail.ParseAddress(m.From) // CheckMail parsed it
	if from == nil {
		return false, fmt.Errorf("mail: from %q is not an address", m.From)
	}
	r := smtprelay.Relay{Server: m.Server, Username: m.Username, Password: m.Password, TLS: m.TLS, Dial: m.Dial}
	if retry, err := r.Send(ctx, from.Address, to, m.message(n, to)); err != nil {
		return retry, fmt.Errorf("mail: %w", err)
	}
	return false, nil
}
