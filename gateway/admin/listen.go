package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// bindUnix binds the admin socket: its directory is made (or tightened)
// to mode 0700, a stale socket from a crashed run is removed, but a live
// one (another edgegw answering on it) is an error.
func (s *Server) bindUnix(path string) (*listener, error) {
	dir := filepath.Dir(path)
	if sharedDir(dir) {
		return nil, fmt.Errorf("admin socket: %s needs a directory of its own (mode 0700), not %s", path, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	} else if fi.Mode()&os.ModeSticky != 0 {
		return nil, fmt.Errorf("admin socket: %s is a shared directory (sticky bit); the socket needs one of its own", dir)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if err := Busy(path); err != nil {
			return nil, err
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket: remove the stale %s: %w", path, err)
		}
	}
	// The socket is made with the process umask; tighten it before
	// anything can connect, and chmod again for umasks wider than 0177.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Lchown(path, 0, 0); err != nil && os.Geteuid() == 0 {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	l := &listener{addr: path, ln: ln, unix: true}
	s.serve(l)
	s.log.Info("admin socket up", "path", path)
	return l, nil
}

// Busy reports, as an error, whether another process answers on the admin
// socket at path (another edgegw runs), or path is something other than a
// socket. The gateway asks before it touches the kernel, so that a second
// edgegw never removes the first one's table and routes as leftovers.
func Busy(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("admin socket: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("admin socket: another process answers on %s (is another edgegw running?)", path)
	}
	return nil
}

// bindTCP binds the TCP listener, serving TLS with cert from its first
// connection when cert is set.
func (s *Server) bindTCP(addr string, cert *tls.Certificate) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	l := &listener{addr: addr, loopback: Loopback(addr)}
	l.cert.Store(cert)
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		l.loopback = a.Unmap().IsLoopback()
	}
	l.ln = &tlsSwitch{Listener: ln, cert: &l.cert, cfg: &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			// With admin.tls.acme the ACME certificate for the hello's
			// name, read on every handshake so a renewal is served
			// without a new socket; else, or while ACME has none, the
			// configured one.
			if f := s.opts.Certificates; f != nil && l.acme.Load() {
				if c, err := f(hello); err == nil && c != nil {
					return c, nil
				}
			}
			if c := l.cert.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate")
		},
	}}
	s.serve(l)
	s.log.Info("admin listener up", "addr", ln.Addr().String(), "loopback", l.loopback)
	return l, nil
}

// serve starts l's http.Server; s.wg owns the goroutine.
func (s *Server) serve(l *listener) {
	l.srv = &http.Server{
		Handler:           s.handler(l),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	closing := make(chan struct{})
	l.srv.BaseContext = func(net.Listener) context.Context { return closingContext(context.Background(), closing) }
	l.srv.RegisterOnShutdown(func() { close(closing) })
	if l.unix {
		l.srv.ConnContext = peerContext
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", "addr", l.addr, "err", err)
		}
	}()
}

// stop shuts a listener down, giving requests in flight 5 s, then closes
// what is left.
func (s *Server) stop(l *listener) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil {
		l.srv.Close()
	}
}

// tlsSwitch hands out TLS server connections while a certificate is set:
// a reload that adds or rotates the certificate needs no new socket.
type tlsSwitch struct {
	net.Listener
	cert *atomic.Pointer[tls.Certificate]
	cfg  *tls.Config
}

func (t *tlsSwitch) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil || t.cert.Load() == nil {
		return c, err
	}
	return tls.Server(c, t.cfg), nil
}
