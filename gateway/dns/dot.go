package dns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	mdns "github.com/miekg/dns"
)

// ServeDoT serves DNS over TLS (RFC 7858) on ln with the certificates of
// tc until ctx ends; then it closes ln and returns nil once in-flight
// queries are answered. The owner binds ln (usually port 853 on the
// addresses of the Access listener, with its certificate) and owns the
// goroutine that calls ServeDoT. Queries are logged with Protocol "tls".
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
