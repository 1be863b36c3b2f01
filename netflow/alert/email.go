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
	"strings"
	"time"

	smtprelay "github.com/edgegw/edgegw/gateway/mail"
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

// post sends ev in one SMTP session (gateway/mail: STARTTLS always).
// Network errors and 4xx replies may pass on a retry; 5xx replies, a
// server without STARTTLS and a certificate that does not verify do not.
func (m *Email) post(ctx context.Context, _ *http.Client, ev Event) (retry bool, err error) {
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return false, fmt.Errorf("alert %s: from: %w", m, err)
	}
	to := make([]string, 0, len(m.To))
	for _, t := range m.To {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return false, fmt.Errorf("alert %s: to: %w", m, err)
		}
		to = append(to, a.Address)
	}
	r := smtprelay.Relay{Server: m.Server, Username: m.Username, Password: m.Password, TLS: m.TLS, Dial: m.Dial}
	if retry, err := r.Send(ctx, from.Address, to, m.message(ev)); err != nil {
		return retry, fmt.Errorf("alert %s: %w", m, err)
	}
	return false, nil
}
