package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/access/scim"
)

// swapHandler serves whichever handler a part last installed, or 404 with
// why when none is: the Access listener and the admin listener outlive the
// parts that serve paths on them.
type swapHandler struct {
	h    atomic.Pointer[http.Handler]
	none string // the 404 text while nothing is installed
}

func (s *swapHandler) set(h http.Handler) {
	if h == nil {
		s.h.Store(nil)
		return
	}
	s.h.Store(&h)
}

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := s.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, s.none, http.StatusNotFound)
}

// local is what the Access listener serves for host names that are not an
// app's: device enrollment, DNS over HTTPS, SCIM and posture reports, each
// installed by its part. acme is the gateway's one ACME certificate
// source, installed by the access part (access.acme) and asked by the
// other TLS listeners that are configured to serve its certificates
// (gateway.dns.dot.acme, admin.tls.acme).
type local struct {
	enroll  swapHandler
	doh     swapHandler
	scim    swapHandler
	posture swapHandler
	// sessions ends users' Access sessions: the access part installs its
	// server's, the identity part's SCIM deactivations call it.
	sessions sessionEnder
	// signIns takes the groups of each Access sign-in: the identity part
	// installs the registry's refresh when no SCIM keeps groups current.
	signIns signInHook
	// logouts carries Access logouts between the nodes of a pair: the
	// identity part installs its registry, the access part's server reads
	// and writes through it.
	logouts logoutStore
	acme    certSource
}

// logoutStore is access.Options.Logouts: the device registry's shared
// logouts (an HA pair's registry is one PostgreSQL database). Without a
// registry (no WireGuard identity) logouts stay the node's own.
type logoutStore struct {
	reg atomic.Pointer[identity.Registry]
}

func (l *logoutStore) set(r *identity.Registry) { l.reg.Store(r) }

func (l *logoutStore) Logouts() map[string]int64 {
	if r := l.reg.Load(); r != nil {
		return r.Snapshot().Logouts()
	}
	return nil
}

func (l *logoutStore) RecordLogouts(ctx context.Context, m map[string]int64, forgetBefore time.Time) error {
	if r := l.reg.Load(); r != nil {
		return r.RecordLogouts(ctx, m, forgetBefore)
	}
	return nil
}

// certificateGetter is what a tls.Config's GetCertificate needs: here the
// access part's acme.Manager.
type certificateGetter interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// certSource serves whichever certificate getter the access part last
// installed: the DoT and admin listeners outlive the ACME manager, which
// is replaced when access.acme changes. It remembers, per listener and
// name, the expiry of the ACME certificate last served there, for
// edgegw_acme_listener_certificate_expiry_timestamp_seconds.
type certSource struct {
	g atomic.Pointer[certificateGetter]

	mu     sync.Mutex
	served map[listenerName]time.Time
}

// listenerName labels the served-certificate metric.
type listenerName struct{ listener, name string }

var listenerExpiryDesc = prometheus.NewDesc("edgegw_acme_listener_certificate_expiry_timestamp_seconds",
	"When the ACME certificate a TLS listener (dot, admin) last served for the name expires (Unix time).",
	[]string{"listener", "domain"}, nil)

// forListener is GetCertificate for one listener other than Access: it
// records the expiry of each ACME certificate it hands out.
func (c *certSource) forListener(listener string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := c.GetCertificate(hello)
		if err != nil || cert == nil {
			return cert, err
		}
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		if leaf != nil {
			name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
			if name == "" && hello.Conn != nil {
				// No SNI: the certificate is the one for the address dialled.
				name, _, _ = net.SplitHostPort(hello.Conn.LocalAddr().String())
			}
			c.mu.Lock()
			if c.served == nil {
				c.served = map[listenerName]time.Time{}
			}
			c.served[listenerName{listener, name}] = leaf.NotAfter
			c.mu.Unlock()
		}
		return cert, nil
	}
}

// Describe implements prometheus.Collector.
func (c *certSource) Describe(ch chan<- *prometheus.Desc) { ch <- listenerExpiryDesc }

// Collect implements prometheus.Collector.
func (c *certSource) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range c.served {
		ch <- prometheus.MustNewConstMetric(listenerExpiryDesc, prometheus.GaugeValue, float64(t.Unix()), k.listener, k.name)
	}
}

func (c *certSource) set(g certificateGetter) {
	if g == nil {
		c.g.Store(nil)
		return
	}
	c.g.Store(&g)
}

// GetCertificate is the ACME certificate for the hello's name, or nil, nil
// (the listener's configured certificate) when there is no ACME manager,
// no certificate yet, or the name is not among access.acme.domains.
func (c *certSource) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	g := c.g.Load()
	if g == nil {
		return nil, nil
	}
	return (*g).GetCertificate(hello)
}

// managing reports whether an ACME manager is installed.
func (c *certSource) managing() bool { return c.g.Load() != nil }

// signInHook hands an Access sign-in's groups to the device registry.
type signInHook struct {
	fn atomic.Pointer[func(ctx context.Context, issuer, subject string, groups []string)]
}

func (h *signInHook) set(fn func(ctx context.Context, issuer, subject string, groups []string)) {
	if fn == nil {
		h.fn.Store(nil)
		return
	}
	h.fn.Store(&fn)
}

// signedIn is access.Options.SignedIn.
func (h *signInHook) signedIn(ctx context.Context, issuer, subject string, groups []string) {
	if fn := h.fn.Load(); fn != nil {
		(*fn)(ctx, issuer, subject, groups)
	}
}

// sessionEnder hands a SCIM deactivation to whichever Access server runs.
type sessionEnder struct {
	fn atomic.Pointer[func(emails []string) int]
}

func (e *sessionEnder) set(fn func(emails []string) int) {
	if fn == nil {
		e.fn.Store(nil)
		return
	}
	e.fn.Store(&fn)
}

// end ends the sessions of the users with these addresses, if an Access
// server runs (without one there are no sessions).
func (e *sessionEnder) end(emails []string) {
	if fn := e.fn.Load(); fn != nil {
		(*fn)(emails)
	}
}

func newLocal() *local {
	l := &local{}
	l.enroll.none = "Device enrollment is not enabled on this gateway."
	l.doh.none = "DNS over HTTPS is not enabled on this gateway."
	l.scim.none = "SCIM provisioning is not enabled on this gateway."
	l.posture.none = "Device posture is not enabled on this gateway."
	return l
}

func (l *local) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case enroll.Handles(r.URL.Path):
		l.enroll.ServeHTTP(w, r)
	case r.URL.Path == "/dns-query":
		l.doh.ServeHTTP(w, r)
	case scim.Handles(r.URL.Path):
		l.scim.ServeHTTP(w, r)
	case posture.Handles(r.URL.Path):
		l.posture.ServeHTTP(w, r)
	default:
		http.Error(w, "No application is configured for this host name.", http.StatusNotFound)
	}
}
