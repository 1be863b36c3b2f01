package dns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/selfsign"
)

// ServeDoT serves DNS over TLS (RFC 7858) on ln with the certificates of
// tc until ctx ends; then it closes ln and returns nil once in-flight
// queries are answered. The owner binds ln (usually port 853 on the
// addresses of the Access listener, with its certificate) and owns the
// goroutine that calls ServeDoT. Queries are logged with Protocol "tls".
// With dot.identified_only, a query from a client without an identity
// (see [IdentitySource]) is answered REFUSED with Extended DNS Error 18
// (Prohibited). The server serves dot.listen itself this way.
func (s *Server) ServeDoT(ctx context.Context, ln net.Listener, tc *tls.Config) error {
	if tc == nil || (len(tc.Certificates) == 0 && tc.GetCertificate == nil) {
		ln.Close()
		return errors.New("dns: DNS over TLS needs a certificate")
	}
	tc = tc.Clone()
	tc.NextProtos = []string{"dot"} // RFC 7858 ALPN
	srv := &mdns.Server{
		Listener: tls.NewListener(ln, tc), Net: "tcp-tls",
		Handler:     mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) { s.serveDNS(w, r, "tls") }),
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: func() time.Duration { return 10 * time.Second },
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case err := <-done:
		return fmt.Errorf("dns: serve DNS over TLS on %s: %w", ln.Addr(), err)
	case <-started: // Shutdown before this would not stop it
	}
	select {
	case err := <-done:
		return fmt.Errorf("dns: serve DNS over TLS on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	srv.ShutdownContext(sctx)
	<-done
	return nil
}

// dotListener is one DoT address the server binds itself (dot.listen).
type dotListener struct {
	want   netip.AddrPort
	bound  netip.AddrPort
	cancel context.CancelFunc
	done   chan struct{}
}

// loadDoTCert reads the certificate and key of c.DoT, if any, into the
// one DoT listeners present from the next handshake on. With acme and
// no cert_file that is a self-signed certificate for the listen
// addresses, kept in <state_dir>/dns: what the listeners serve until
// ACME has a certificate for the hello, and whenever it has none.
func (s *Server) loadDoTCert(c *Config) error {
	if c.DoT == nil {
		return nil
	}
	var cert tls.Certificate
	var err error
	if c.DoT.CertFile == "" && c.DoT.ACME {
		var hosts []string
		for _, a := range c.DoT.Listen {
			if !a.Addr().IsUnspecified() {
				hosts = append(hosts, a.Addr().String())
			}
		}
		base := ""
		if s.opts.StateDir != "" {
			base = filepath.Join(s.opts.StateDir, "dns", "dot-selfsigned")
		}
		cert, _, err = selfsign.Load(base, "edgegw dns", hosts, time.Now())
	} else {
		cert, err = tls.LoadX509KeyPair(c.DoT.CertFile, c.DoT.KeyFile)
	}
	if err != nil {
		return fmt.Errorf("gateway.dns.dot: %w", err)
	}
	s.dotCert.Store(&cert)
	return nil
}

// dotCertificate is the certificate a DoT handshake gets: the one
// Options.Certificates gives for the hello (ACME; read on every handshake,
// so a renewed certificate is served without restarting the listener), or
// else dot.cert_file.
func (s *Server) dotCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if f := s.opts.Certificates; f != nil {
		if c, err := f(hello); err == nil && c != nil {
			return c, nil
		}
	}
	return s.dotCert.Load(), nil
}

// bindDoTLocked makes the DoT listeners match addrs, as bindLocked does
// for plain DNS. s.mu is held and Run runs.
func (s *Server) bindDoTLocked(addrs []netip.AddrPort) error {
	var keep, added []*dotListener
	for _, a := range addrs {
		if i := slices.IndexFunc(s.dot, func(l *dotListener) bool { return l.want == a }); i >= 0 {
			keep = append(keep, s.dot[i])
			continue
		}
		ln, err := net.Listen("tcp", a.String())
		if err != nil {
			for _, l := range added {
				l.stop()
			}
			return fmt.Errorf("listen DNS over TLS %s: %w", a, err)
		}
		ctx, cancel := context.WithCancel(s.runCtx)
		l := &dotListener{want: a, bound: addrPort(ln.Addr()), cancel: cancel, done: make(chan struct{})}
		tc := &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.dotCertificate,
		}
		s.bg.Go(func() {
			defer close(l.done)
			if err := s.ServeDoT(ctx, ln, tc); err != nil {
				s.log.Error("DNS-over-TLS listener stopped", "addr", l.bound, "err", err)
			}
		})
		added = append(added, l)
	}
	for _, l := range s.dot {
		if !slices.Contains(keep, l) {
			l.stop()
		}
	}
	s.dot = append(keep, added...)
	return nil
}

// stop closes the listener and waits for its queries.
func (l *dotListener) stop() {
	l.cancel()
	<-l.done
}
