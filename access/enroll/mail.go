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
	"net/smtp"
	"strings"
	"time"
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

// send makes one attempt; retry says whether another may succeed.
func (m *Mail) send(ctx context.Context, n Notification) (retry bool, _ error) {
	to := m.recipients(n)
	if len(to) == 0 {
		return false, nil
	}
	host, _, _ := net.SplitHostPort(m.Server)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dial := m.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", m.Server)
	if err != nil {
		return true, fmt.Errorf("mail: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return true, fmt.Errorf("mail: %w", err)
	}
	defer c.Close()
	if err := c.Hello("edgegw"); err != nil {
		return true, fmt.Errorf("mail: EHLO: %w", err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return false, fmt.Errorf("mail: %s does not offer STARTTLS; edgegw sends nothing in clear text", m.Server)
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if m.TLS != nil {
		cfg = m.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
	}
	if err := c.StartTLS(cfg); err != nil {
		return false, fmt.Errorf("mail: STARTTLS: %w", err)
	}
	if m.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, host)); err != nil {
			return false, fmt.Errorf("mail: authenticate: %w", err)
		}
	}
	from, _ := mail.ParseAddress(m.From) // CheckMail parsed it
	if from == nil {
		return false, fmt.Errorf("mail: from %q is not an address", m.From)
	}
	if err := c.Mail(from.Address); err != nil {
		return true, fmt.Errorf("mail: MAIL FROM: %w", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return true, fmt.Errorf("mail: RCPT TO %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return true, fmt.Errorf("mail: DATA: %w", err)
	}
	if _, err := w.Write(m.message(n, to)); err != nil {
		return true, fmt.Errorf("mail: %w", err)
	}
	if err := w.Close(); err != nil {
		return true, fmt.Errorf("mail: %w", err)
	}
	return false, c.Quit()
}
