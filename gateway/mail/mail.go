// Package mail submits messages to an SMTP relay, as the gateway's
// notifications (flow alerts, enrollment mail) need it: the session is
// always upgraded with STARTTLS and the server verified (a relay that does
// not offer STARTTLS gets nothing), PLAIN authentication when a user name
// is set, one deadline for the whole session, and a verdict on whether
// another attempt may succeed.
package mail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"time"
)

// Relay is an SMTP submission server and how to reach it.
type Relay struct {
	Server string // host:port, e.g. smtp.corp.example:587
	// Username "": no authentication.
	Username, Password string
	// TLS verifies the server; nil: the system roots and Server's host
	// name (see LoadCA).
	TLS *tls.Config
	// Dial opens the connection; nil: a net.Dialer. Tests dial into a
	// network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// sessionTimeout bounds one SMTP session, so a stalled relay cannot hold
// the sender.
const sessionTimeout = 30 * time.Second

// Send submits msg (an RFC 5322 message with CRLF line ends) from the
// envelope sender from to the envelope recipients to, in one session.
//
// retry says whether another attempt may succeed: yes after network
// errors and 4xx replies (the relay's "try again later"); no after a 5xx
// reply, a relay without STARTTLS, or a certificate that does not verify,
// which need someone to change something first.
func (r *Relay) Send(ctx context.Context, from string, to []string, msg []byte) (retry bool, err error) {
	host, _, err := net.SplitHostPort(r.Server)
	if err != nil {
		return false, fmt.Errorf("server %q is not host:port: %w", r.Server, err)
	}
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	dial := r.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", r.Server)
	if err != nil {
		return true, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return step("greeting", err)
	}
	defer c.Close()
	if err := c.Hello("edgegw"); err != nil {
		return step("EHLO", err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return false, fmt.Errorf("%s does not offer STARTTLS; edgegw sends nothing in clear text", r.Server)
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if r.TLS != nil {
		cfg = r.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
	}
	if err := c.StartTLS(cfg); err != nil {
		var ve *tls.CertificateVerificationError
		if errors.As(err, &ve) {
			return false, fmt.Errorf("STARTTLS: %w", err)
		}
		return step("STARTTLS", err)
	}
	if r.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", r.Username, r.Password, host)); err != nil {
			return step("AUTH", err)
		}
	}
	if err := c.Mail(from); err != nil {
		return step("MAIL FROM", err)
	}
	for _, a := range to {
		if err := c.Rcpt(a); err != nil {
			return step("RCPT TO "+a, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return step("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
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

// step names the failed step; a 5xx reply is final, anything else (a 4xx
// reply, a broken connection) may pass on another attempt.
func step(what string, err error) (bool, error) {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code < 500, fmt.Errorf("%s: %w", what, err)
	}
	return true, fmt.Errorf("%s: %w", what, err)
}

// LoadCA reads a PEM bundle of the roots that sign the relay's
// certificate (a private CA), for Relay.TLS.
func LoadCA(file string) (*tls.Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA: %s holds no PEM certificate", file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
