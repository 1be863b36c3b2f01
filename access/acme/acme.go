// Package acme gets and renews the Access listener's certificate from an
// ACME CA (RFC 8555: Let's Encrypt, or a private CA such as step-ca) with
// certmagic, answering http-01 on its own short-lived listener,
// tls-alpn-01 on the Access listener itself, or dns-01 with TXT records
// added by DNS UPDATE (RFC 2136, package rfc2136) to the zone's primary.
//
// The account key and the certificates live in StateDir/acme (files 0600,
// directories 0700). Renewal runs in the background well ahead of expiry
// (the last third of the lifetime, or the CA's ACME Renewal Information);
// the Access listener reads the current certificate on every handshake,
// so a renewed one is served without a restart and without closing a
// connection. The gateway hands the same Manager to the DoT listeners
// (gateway.dns.dot.acme) and the admin listener (admin.tls.acme), which
// read it on every handshake too: one account, one certificate per name.
// Until a certificate is obtained, and whenever ACME fails,
// the listener serves its configured or self-signed certificate
// ([Manager.GetCertificate] returns nil) and the failure is logged.
package acme

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
)

// Options are the Manager's collaborators.
type Options struct {
	// StateDir is the appliance state dir; files go to StateDir/acme.
	StateDir string
	Logger   *slog.Logger
	// Registerer takes the metrics; nil: none.
	Registerer prometheus.Registerer
	// Listening returns the Access listener's address once it is bound,
	// nil before. tls-alpn-01 is answered there, so Run waits for it
	// before asking the CA for anything: otherwise certmagic would bind
	// the port itself for the challenge and the Access server could not.
	Listening func() net.Addr
	// RenewCheckInterval is how often certificates are checked for
	// renewal; default 10m. Tests with minute-long certificates shorten
	// it.
	RenewCheckInterval time.Duration
	// DNSPropagationTimeout is how long dns-01 waits for its TXT record
	// on the zone's primary before it gives up on the attempt; default 2m.
	DNSPropagationTimeout time.Duration
}

// Manager keeps the certificates of one Plan current. GetCertificate is
// safe for concurrent use, also before Run and after it returned.
type Manager struct {
	plan   *Plan
	opts   Options
	log    *slog.Logger
	magic  atomic.Pointer[certmagic.Config] // set while Run runs
	cache  atomic.Pointer[certmagic.Cache]  // set while Run runs
	expiry *prometheus.Desc
	failed *prometheus.CounterVec
}

// New prepares a Manager for p; it starts nothing and touches no file.
func New(p *Plan, o Options) (*Manager, error) {
	if o.StateDir == "" {
		return nil, errors.New("acme: no state directory to keep the account key and certificates in")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RenewCheckInterval <= 0 {
		o.RenewCheckInterval = certmagic.DefaultRenewCheckInterval
	}
	m := &Manager{
		plan: p, opts: o, log: o.Logger.With("subsystem", "acme"),
		expiry: prometheus.NewDesc("edgegw_acme_certificate_expiry_timestamp_seconds",
			"When the ACME certificate served for the domain expires (Unix time).", []string{"domain"}, nil),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_acme_failures_total",
			Help: "Attempts to obtain or renew the domain's certificate that failed.",
		}, []string{"domain"}),
	}
	if r := o.Registerer; r != nil {
		for _, c := range []prometheus.Collector{expiryCollector{m}, m.failed} {
			if err := r.Register(c); err != nil {
				m.Close()
				return nil, fmt.Errorf("acme metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Close unregisters the metrics; call it after Run returned.
func (m *Manager) Close() {
	if r := m.opts.Registerer; r != nil {
		r.Unregister(expiryCollector{m})
		r.Unregister(m.failed)
	}
}

// Domains are the names the Manager keeps certificates for.
func (m *Manager) Domains() []string { return slices.Clone(m.plan.cfg.Domains) }

// Dir is where the account key and certificates are kept.
func (m *Manager) Dir() string { return filepath.Join(m.opts.StateDir, "acme") }

// Run obtains the certificates and renews them until ctx is done. A CA
// that cannot be reached is retried with backoff (by certmagic) while the
// listener serves its fallback certificate.
func (m *Manager) Run(ctx context.Context) error {
	cfg := m.plan.cfg
	var addr net.Addr
	if cfg.Uses(TLSALPN01) {
		t := time.NewTicker(50 * time.Millisecond)
		for addr = m.opts.Listening(); addr == nil; addr = m.opts.Listening() {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		t.Stop()
	}
	zl := zapToSlog(m.log)
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		RenewCheckInterval: m.opts.RenewCheckInterval,
		Logger:             zl,
	})
	defer cache.Stop()
	magic = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: m.Dir()},
		Logger:  zl,
		// OCSP is gone from the public CAs and a private one may have no
		// responder; stapling would only add outbound fetches.
		OCSP:           certmagic.OCSPConfig{DisableStapling: true},
		OnEvent:        m.onEvent,
		ShouldEmitFunc: func(ev string) bool { return ev == "cert_obtained" || ev == "cert_failed" },
	})
	iss := certmagic.ACMEIssuer{
		CA:                      cfg.Directory,
		Email:                   cfg.Email,
		Agreed:                  true,
		TrustedRoots:            m.plan.roots,
		DisableHTTPChallenge:    !cfg.Uses(HTTP01),
		DisableTLSALPNChallenge: !cfg.Uses(TLSALPN01),
		Logger:                  zl,
	}
	if cfg.Uses(HTTP01) {
		host, port, _ := net.SplitHostPort(cfg.HTTPListen) // checked by Validate
		iss.ListenHost = host
		iss.AltHTTPPort, _ = strconv.Atoi(port)
	}
	if addr != nil {
		// Pointing the solver at the Access listener's port makes it find
		// the port taken and leave the answer to GetCertificate there.
		if ta, ok := addr.(*net.TCPAddr); ok {
			iss.AltTLSALPNPort = ta.Port
		}
	}
	if d := m.plan.dns; d != nil {
		iss.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider: d,
			TTL:         time.Minute,
			// The zone's primary is asked for the zone's SOA and, until
			// it answers with the new TXT record, for that record: the
			// gateway may have no recursive resolver that sees an internal
			// zone, and the primary is the first server to know.
			Resolvers:          []string{d.Server},
			PropagationTimeout: m.opts.DNSPropagationTimeout,
			Logger:             zl,
		}}
	}
	magic.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(magic, iss)}
	m.magic.Store(magic)
	m.cache.Store(cache)
	defer m.magic.Store(nil)
	defer m.cache.Store(nil)

	m.log.Info("managing certificates", "directory", cfg.Directory, "domains", cfg.Domains, "challenges", cfg.Challenges, "dir", m.Dir())
	if err := magic.ManageAsync(ctx, cfg.Domains); err != nil {
		// Only storage errors end up here; the CA's are retried.
		m.log.Error("ACME cannot manage the certificates; serving the configured or self-signed certificate", "err", err)
		return fmt.Errorf("acme: %w", err)
	}
	<-ctx.Done()
	return nil
}

// onEvent logs certmagic's outcomes and counts the failures.
func (m *Manager) onEvent(_ context.Context, ev string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch ev {
	case "cert_obtained":
		m.log.Info("certificate obtained", "domain", name, "renewal", renewal)
	case "cert_failed":
		m.failed.WithLabelValues(name).Inc()
		err, _ := data["error"].(error)
		var prob acme.Problem
		if errors.As(err, &prob) {
			err = prob // the CA's own words
		}
		if renewal {
			m.log.Error("ACME could not renew the certificate; the current one is served until it expires, renewal is retried", "domain", name, "err", err)
		} else {
			m.log.Error("ACME could not obtain a certificate; serving the configured or self-signed certificate meanwhile, retrying", "domain", name, "err", err)
		}
	}
	return nil
}

// Expiry is when the newest certificate held for domain expires; zero
// when there is none (yet, or Run is not running).
func (m *Manager) Expiry(domain string) time.Time {
	cache := m.cache.Load()
	if cache == nil {
		return time.Time{}
	}
	var latest time.Time
	for _, c := range cache.AllMatchingCertificates(domain) {
		if c.Leaf != nil && c.Leaf.NotAfter.After(latest) {
			latest = c.Leaf.NotAfter
		}
	}
	return latest
}

// expiryCollector reads the expiry from the cache at each scrape, so the
// metric is never behind a renewal.
type expiryCollector struct{ m *Manager }

func (e expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- e.m.expiry }

func (e expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range e.m.plan.cfg.Domains {
		if t := e.m.Expiry(d); !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(e.m.expiry, prometheus.GaugeValue, float64(t.Unix()), d)
		}
	}
}

// GetCertificate is for the Access listener's tls.Config: the managed
// certificate for the hello's name, the tls-alpn-01 answer for a CA's
// validation, or nil, nil (the listener's own certificate) when there is
// none: before the first is obtained, when ACME failed, for names that
// are not managed.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	magic := m.magic.Load()
	if magic == nil {
		return nil, nil
	}
	if slices.Contains(hello.SupportedProtos, acmeTLSALPN) {
		return magic.GetCertificate(hello) // the challenge answer, or a failed handshake
	}
	name := normalizeName(hello.ServerName)
	if name == "" && hello.Conn != nil {
		// No SNI: a client that dialled an address; certmagic looks the
		// certificate up by the local address then.
		if host, _, err := net.SplitHostPort(hello.Conn.LocalAddr().String()); err == nil {
			name = host
		}
	}
	if !slices.Contains(m.plan.cfg.Domains, name) {
		return nil, nil
	}
	c, err := magic.GetCertificate(hello)
	if err != nil {
		return nil, nil
	}
	return c, nil
}

// acmeTLSALPN is the ALPN protocol of tls-alpn-01 (RFC 8737).
const acmeTLSALPN = "acme-tls/1"

// NextProtos is what the listener's tls.Config must add to its NextProtos
// for tls-alpn-01 to be answered there.
func (p *Plan) NextProtos() []string {
	if p.cfg.Uses(TLSALPN01) {
		return []string{acmeTLSALPN}
	}
	return nil
}
