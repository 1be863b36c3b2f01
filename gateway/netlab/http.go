//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// HTTPServer is an HTTP server listening inside a namespace, started by
// [NS.ServeHTTP]. The lab closes it on [Lab.Close].
type HTTPServer struct {
	// Addr is the bound address, useful when ServeHTTP was given port 0.
	Addr netip.AddrPort
	// URL is "http://" + Addr.
	URL string

	srv       *http.Server
	done      chan struct{}
	serveErr  error
	closeOnce sync.Once
	closeErr  error
}

// ServeHTTP serves h on a TCP listener created inside the namespace at addr
// (for example "10.0.0.5:80" or ":0") and returns once the listener is
// bound. The server runs on its own goroutine until [HTTPServer.Close] or
// [Lab.Close].
func (n *NS) ServeHTTP(addr string, h http.Handler) (*HTTPServer, error) {
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netlab: serve HTTP in %s: %w", n.name, err)
	}
	bound, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("netlab: serve HTTP in %s: %w", n.name, err)
	}
	bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	s := &HTTPServer{
		Addr: bound,
		URL:  "http://" + bound.String(),
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}

	l := n.lab
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		ln.Close()
		return nil, ErrClosed
	}
	l.servers = append(l.servers, s)
	l.mu.Unlock()

	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
	}()
	return s, nil
}

// Close closes the listener and all connections and waits for the server
// goroutine to return. It is idempotent and reports an error if the server
// had stopped on its own.
func (s *HTTPServer) Close() error {
	s.closeOnce.Do(func() {
		err := s.srv.Close()
		<-s.done
		s.closeErr = errors.Join(err, s.serveErr)
	})
	return s.closeErr
}

// HTTPClient returns an HTTP client whose connections are made from inside
// the namespace. It uses no proxy and no keep-alive, so no idle connection
// holds the namespace open after the test.
func (n *NS) HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:       n.DialContext,
			DisableKeepAlives: true,
		},
	}
}
