package alert

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// Email sends each event as a plain-text message over SMTP. The session
// is always upgraded with STARTTLS before anything is sent (a server that
// does not offer it is refused), and authenticates with PLAIN when a user
// is set.
type Email struct {
	Server   string   // host:port, e.g. smtp.example.net:587
	From     string   // the envelope and header sender
	To       []string // recipients
	Username string   // "": no authentication
	Password string
	// TLS verifies the server; nil: the system roots and Server's host
	// name. Tests set RootCAs.
	TLS *tls.Config
	// Dial opens the connection; nil: a net.Dialer. Tests dial into a
	// network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// String names the server, not the credentials.
func (m *Email) String() string { return "email smtp://" + m.Server }

func (m *Email) validate() error {
	host, port, err := net.SplitHostPort(m.Server)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("alert email: server %q is not host:port", m.Server)
	}
	if _, err := mail.ParseAddress(m.From); err != nil {
		return fmt.Errorf("alert email: from %q: %w", m.From, err)
	}
	if len(m.To) == 0 {
		return errors.New("alert email: no recipients")
	}
	for _, to := range m.To {
		if _, err := mail.ParseAddress(to); err != nil {
			return fmt.Errorf("alert email: to %q: %w", to, err)
		}
	}
	return nil
}

// message renders ev as an RFC 5322 message.
func (m *Email) message(ev Event) []byte {
	p := newPayload(ev)
	subject := "[edgegw] " + p.Name + " firing on " + ev.Prefix
	if ev.State == Resolved {
		subject = "[edgegw] " + p.Name + " resolved on " + ev.Prefix
	}
	var b bytes.Buffer
	h := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	h("From", m.From)
	h("To", strings.Join(m.To, ", "))
	h("Subject", mime.QEncoding.Encode("utf-8", subject))
	h("Date", ev.Time.Format(time.RFC1123Z))
	h("Message-ID", "<"+ev.ID+"."+string(ev.State)+"@edgegw>")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("X-Edgegw-Alert-Id", ev.ID)
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "%s\r\n\r\nrule: %s\r\nprefix: %s\r\nstate: %s\r\ntime: %s\r\nbits/s: %.0f\r\npackets/s: %.0f\r\n",
		p.Text, ev.Rule, ev.Prefix, ev.State, ev.Time.UTC().Format(time.RFC3339), ev.BitsPerSecond, ev.PacketsPerSecond)
	return b.Bytes()
}

// post sends ev in one SMTP session. Network errors and 4xx replies may
// pass on a retry; 5xx replies and a server without STARTTLS do not.
func (m *Email) post(ctx context.Context, _ *http.Client, ev Event) (retry bool, err error) {
	host, _, _ := net.SplitHostPort(m.Server)
	dial := m.Dial
	if dial == nil {
		d := net.Dialer{Timeout: 10 * time.Second}
		dial = d.DialContext
	}
	conn, err := dial(ctx, "tcp", m.Server)
	if err != nil {
		return true, fmt.Errorf("alert %s: %w", m, err)
	}
	// The whole session has a deadline, so a stalled server cannot hold
	// the sender.
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return true, fmt.Errorf("alert %s: %w", m, err)
	}
	defer c.Close()
	step := func(what string, err error) (bool, error) {
		var te *textproto.Error
		if errors.As(err, &te) {
			return te.Code < 500, fmt.Errorf("alert %s: %s: %w", m, what, err)
		}
		return true, fmt.Errorf("alert %s: %s: %w", m, what, err)
	}
	if err := c.Hello("edgegw"); err != nil {
		return step("EHLO", err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return false, fmt.Errorf("alert %s: the server does not offer STARTTLS; refusing to send in the clear", m)
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if m.TLS != nil {
		cfg = m.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
	}
	if err := c.StartTLS(cfg); err != nil {
		return step("STARTTLS", err)
	}
	if m.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, host)); err != nil {
			return step("AUTH", err)
		}
	}
	from, _ := mail.ParseAddress(m.From)
	if err := c.Mail(from.Address); err != nil {
		return step("MAIL FROM", err)
	}
	for _, to := range m.To {
		a, _ := mail.ParseAddress(to)
		if err := c.Rcpt(a.Address); err != nil {
			return step("RCPT TO", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return step("DATA", err)
	}
	if _, err := w.Write(m.message(ev)); err != nil {
		return step("DATA", err)
	}
	if err := w.Close(); err != nil {
		return step("DATA", err)
	}
	if err := c.Quit(); err != nil {
		return step("QUIT", err)
	}
	return false, nil
}
