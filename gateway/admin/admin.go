// Package admin is edgegw's management plane: the admin API, metrics and
// health endpoints, who may use them, and the audit trail of what they
// changed.
//
// Two kinds of listener serve the same endpoints:
//
//   - a Unix socket (admin.socket, default /run/edgegw/admin.sock), mode
//     0600 in a directory of mode 0700, where only a peer of uid 0 (checked
//     with SO_PEERCRED) is served, as an admin. The edgegw CLI on the box
//     uses it.
//   - a TCP listener (admin.listen, default 127.0.0.1:9100). /healthz and
//     /readyz are open; /api/* needs a bearer token on every TCP listener,
//     loopback included (any local user can reach loopback); /metrics is
//     open on loopback and elsewhere only as admin.metrics says. A
//     non-loopback address needs TLS (the configuration is refused
//     otherwise). The Host header must name the listener (its own address,
//     localhost or admin.hosts), so a web page cannot reach the API by
//     rebinding a name of its own to it.
//
// The TCP listener also serves the operator console (gateway/console)
// under /console/, and redirects / there. A console session (a cookie set
// by logging in with a token) authenticates /api/* like that token's
// bearer header, with a CSRF check on every change; actions made from the
// console run the same handlers and are audited the same way, with the
// actor's interface "UI". With admin.oidc the console also signs users in
// through an identity provider, admin.policies deciding their role.
//
// Besides the status, devices, tokens and reload, the API serves what the
// console's pages read: /api/v1/status/events (the status as server-sent
// events, credentials checked before each), /api/v1/audit (the last 1000
// audit events), /api/v1/firewall (rules with their counters),
// /api/v1/config (the running configuration, secrets redacted) and
// /api/v1/series (the plots' history: series sampled from the metrics
// every 10 s, kept in memory at 10 s for an hour, 1 min for a day and
// 10 min for a week), POST /api/v1/firewall/test (which rule a described
// packet meets: the one POST a viewer may make, as it changes nothing),
// /api/v1/dns/top (Gateway DNS's top names, blocked names and users over
// the last 5 to 10 minutes) and /api/v1/enroll/link (the enrollment
// page's link on the host the console was reached by, with its QR code).
//
// The configuration editor: /api/v1/config/source is the file as on
// disk with its secrets replaced in place (so lines and columns are the
// file's); POST …/check validates a proposed file exactly as a reload
// does and diffs it against the running one; POST …/apply (admin)
// writes it and reloads, the SIGHUP path, putting the old file back if
// the reload fails; a secret sent back REDACTED keeps the running value
// at the same place. The last 20 applied files are kept (0600) in
// <state_dir>/admin/config-history, with POST
// /api/v1/config/history/{id}/rollback. Applies and rollbacks are
// audited.
//
// Tokens (Create, list, revoke over the API; `edgegw admin token`) have a
// role: a viewer may GET, an admin may do everything. Only a SHA-256 of each
// is stored, in <state_dir>/admin/tokens.json.
//
// Every admin action (device revoke, token create and revoke, reload) is an
// audit Event: a log line and a record handed to Options.Audit, which the
// gateway sends to the audit_logs Logpush datasets.
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
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/gateway/console"
	"github.com/edgegw/edgegw/gateway/selfsign"
)

// API paths.
const (
	PathStatus  = "/api/v1/status"
	PathLogpush = "/api/v1/logpush"
	PathDevices = "/api/v1/devices"
	PathTokens  = "/api/v1/tokens"
	PathReload  = "/api/v1/reload"
	PathFlows   = "/api/v1/flows"
)

// Options are what the server serves, from the gateway.
type Options struct {
	Logger *slog.Logger
	// StateDir holds the token store (<StateDir>/admin/tokens.json).
	StateDir string
	// Metrics is the registry /metrics serves.
	Metrics *prometheus.Registry
	// Ready lists why the gateway is not ready (none: ready).
	Ready func() []string
	// Status and Logpush are the bodies of GET /api/v1/status and
	// /api/v1/logpush.
	Status  func() any
	Logpush func() any
	// Routes returns the site-to-site routing table for
	// GET /api/v1/routes; nil answers 404.
	Routes func() (RoutesView, error)
	// Devices serves /api/v1/devices (list, show, POST …/revoke).
	Devices http.Handler
	// Flows serves GET /api/v1/flows (the flow analytics query) and the
	// paths under it (…/alerts); nil answers 404.
	Flows http.Handler
	// Reload reads the configuration again and applies it
	// (POST /api/v1/reload), returning the file it read; nil answers 404.
	Reload func(context.Context) (string, error)
	// Audit receives every audit event after it is logged; nil: log only.
	Audit func(Event)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// HTTPClient reaches the console's identity provider; nil: the
	// console's own (15 s timeout).
	HTTPClient *http.Client
	// StreamEvery is how often GET /api/v1/status/events sends the
	// status (default 2 s).
	StreamEvery time.Duration
	// RunningConfig returns the file and the configuration running now
	// (the whole typed tree, defaults filled in) for GET /api/v1/config,
	// which shows it as YAML with secrets redacted; nil answers 404.
	RunningConfig func() (file string, cfg any)
	// Config edits the configuration file: GET /api/v1/config/source,
	// POST …/check and …/apply, and the history of applied files
	// (<StateDir>/admin/config-history) with rollback; nil answers 404.
	Config ConfigEditor
	// Firewall returns the rules with their counters for
	// GET /api/v1/firewall; nil answers 404.
	Firewall func() (FirewallView, error)
	// Egress returns who leaves from where for GET /api/v1/egress; nil
	// answers 404.
	Egress func() (EgressView, error)
	// FirewallTest evaluates a described packet against the running rules
	// for POST /api/v1/firewall/test, as `edgegw firewall test` does; an
	// error wrapping ErrBadPacket is the description's fault, answered as
	// the result's Error; nil answers 404.
	FirewallTest func(packet string) (FirewallTestResult, error)
	// DNSTop returns Gateway DNS's top names and users for
	// GET /api/v1/dns/top (n of each; user "" all); false or nil: 404.
	DNSTop func(n int, user string) (any, bool)
	// EnrollPort returns the port of the Access listener that serves
	// /enroll, false when enrollment is off, for GET /api/v1/enroll/link;
	// nil answers 404.
	EnrollPort func() (port string, ok bool)
	// EnrollURL returns tunnels.wireguard.enrollment.url, the public
	// address the link names instead of the console's host; "" or nil:
	// none configured.
	EnrollURL func() string
	// Geofeed returns the path the TCP listener serves the egress
	// geofeed at, open to all, and its CSV; path "" or nil: not served.
	Geofeed func() (path string, csv []byte)
	// Certificates gives the TCP listener's certificate with admin.tls.acme
	// (the gateway's ACME certificates), asked on every handshake; nil, nil
	// or an error falls back to admin.tls.cert_file.
	Certificates func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Server is the admin plane. Set binds its listeners; Run owns their
// serving goroutines.
type Server struct {
	opts    Options
	log     *slog.Logger
	tokens  *tokens
	mux     *http.ServeMux
	console *console.Console
	results *prometheus.CounterVec
	audits  *prometheus.CounterVec
	// sessions is the number of console sessions.
	sessions prometheus.GaugeFunc
	denied   logLimiter
	// auditLog is the recent audit trail, for GET /api/v1/audit.
	auditLog auditRing
	// history keeps the configuration files applied through the API.
	history *configHistory
	// series is the plots' history, sampled from Metrics by Run.
	series  *seriesStore
	sampler *sampler

	policy atomic.Pointer[policy]

	mu     sync.Mutex
	tcp    *listener
	unix   *listener
	wg     sync.WaitGroup // serving goroutines
	closed bool
}

// policy is the part of the configuration requests are checked against,
// swapped whole on Set.
type policy struct {
	hosts        []string
	metricsToken bool
	metricsAllow []netip.Prefix
}

type listener struct {
	addr     string // as configured (TCP) or the socket path
	ln       net.Listener
	srv      *http.Server
	unix     bool
	loopback bool
	// cert is the TLS certificate; nil serves plain HTTP (loopback only).
	cert atomic.Pointer[tls.Certificate]
	// acme is admin.tls.acme: handshakes ask Options.Certificates first.
	acme atomic.Bool
}

// New opens the token store and builds the handlers; nothing listens
// until Set.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Ready == nil {
		opts.Ready = func() []string { return nil }
	}
	toks, err := openTokens(filepath.Join(opts.StateDir, "admin"), opts.Now)
	if err != nil {
		return nil, err
	}
	hist, err := openHistory(filepath.Join(opts.StateDir, "admin", "config-history"))
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		tokens:  toks,
		history: hist,
		series:  newSeriesStore(),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_admin_requests_total",
			Help: "Requests to the admin listeners, by result: ok, unauthenticated (no or an unknown token), forbidden (the role or the socket peer may not), misdirected (a Host header that does not name the listener).",
		}, []string{"result"}),
		audits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_admin_audit_events_total",
			Help: "Audited admin actions, by action and result (success, failure).",
		}, []string{"action", "result"}),
		denied: logLimiter{every: time.Second, burst: 10},
	}
	for _, r := range []string{resultOK, resultUnauthenticated, resultForbidden, resultMisdirected} {
		s.results.WithLabelValues(r)
	}
	if opts.Metrics != nil {
		s.sampler = &sampler{reg: opts.Metrics, store: s.series}
	}
	s.policy.Store(&policy{})
	s.mux = s.routes()
	s.console, err = console.New(console.Options{
		Tokens: consoleTokens{toks}, Logger: opts.Logger.With("component", "console"), Audit: s.auditConsole, Now: opts.Now,
		HTTPClient: opts.HTTPClient,
	})
	if err != nil {
		return nil, fmt.Errorf("admin console: %w", err)
	}
	s.sessions = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgegw_admin_console_sessions",
		Help: "Console sessions held in memory (logged in, not yet logged out, expired or ended by a token's revocation).",
	}, func() float64 { return float64(s.console.Sessions()) })
	return s, nil
}

// Results of edgegw_admin_requests_total.
const (
	resultOK              = "ok"
	resultUnauthenticated = "unauthenticated"
	resultForbidden       = "forbidden"
	resultMisdirected     = "misdirected"
)

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	s.results.Describe(ch)
	s.audits.Describe(ch)
	s.sessions.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	s.results.Collect(ch)
	s.audits.Collect(ch)
	s.sessions.Collect(ch)
}

// loadCert reads admin.tls's certificate, or with acme and no cert_file
// makes (or loads the kept) self-signed one for admin.hosts and the
// listen address, in <StateDir>/admin: the listener's certificate until
// ACME has one for the hello.
func (s *Server) loadCert(cfg Config) (tls.Certificate, error) {
	if cfg.TLS.CertFile != "" || !cfg.TLS.ACME {
		return tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	}
	hosts := slices.Clone(cfg.Hosts)
	if ap, err := netip.ParseAddrPort(cfg.Listen); err == nil && !ap.Addr().IsUnspecified() {
		hosts = append(hosts, ap.Addr().String())
	}
	base := ""
	if s.opts.StateDir != "" {
		base = filepath.Join(s.opts.StateDir, "admin", "selfsigned")
	}
	c, made, err := selfsign.Load(base, "edgegw admin", hosts, s.opts.Now())
	if made && err == nil {
		s.log.Info("admin: made a self-signed certificate, served until ACME has one", "hosts", hosts)
	}
	return c, err
}

// Set applies the admin section: it re-reads the TLS certificate (so a
// rotated one takes effect), swaps the host and metrics policy, and binds
// the socket and the TCP listener where their addresses changed — the new
// one first, then the old one is shut down, so a failed bind leaves the
// old one serving and Set returns the error.
func (s *Server) Set(cfg Config) error {
	var cert *tls.Certificate
	if cfg.TLS != nil {
		c, err := s.loadCert(cfg)
		if err != nil {
			return fmt.Errorf("admin.tls: %w", err)
		}
		cert = &c
	}
	if !Loopback(cfg.Listen) && cert == nil {
		// Validation refuses this; a caller that skipped it must not open
		// the API to the network in the clear.
		return fmt.Errorf("admin.listen %s is not a loopback address and has no admin.tls", cfg.Listen)
	}
	sso, err := consoleOIDC(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("admin: server stopped")
	}
	prevPolicy := s.policy.Swap(&policy{hosts: cfg.Hosts, metricsToken: cfg.Metrics.Token, metricsAllow: cfg.Metrics.Allow})
	var oldUnix, oldTCP *listener
	if s.unix == nil || s.unix.addr != cfg.Socket {
		l, err := s.bindUnix(cfg.Socket)
		if err != nil {
			s.policy.Store(prevPolicy)
			return err
		}
		oldUnix, s.unix = s.unix, l
	}
	if s.tcp == nil || s.tcp.addr != cfg.Listen {
		l, err := s.bindTCP(cfg.Listen, cert)
		if err != nil {
			s.policy.Store(prevPolicy)
			if oldUnix != nil {
				// Keep the pair as it was: the new socket goes again.
				s.stop(s.unix)
				s.unix = oldUnix
			}
			return err
		}
		oldTCP, s.tcp = s.tcp, l
	} else {
		s.tcp.cert.Store(cert)
	}
	s.tcp.acme.Store(cfg.TLS != nil && cfg.TLS.ACME)
	s.console.SetOIDC(sso)
	// The old listeners stop in the background: a reload asked over one of
	// them is still being answered on it.
	for _, l := range []*listener{oldUnix, oldTCP} {
		if l != nil {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.stop(l)
			}()
		}
	}
	return nil
}

// Run owns the serving goroutines and the token store's last-used
// writes: it returns after ctx ends and every listener has stopped.
func (s *Server) Run(ctx context.Context) error {
	tick := time.NewTicker(lastUsedEvery)
	defer tick.Stop()
	// The plots' sampler runs here too: one goroutine, owned by Run.
	sample := time.NewTicker(sampleEvery)
	defer sample.Stop()
	s.sample()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-sample.C:
			s.sample()
			continue
		case <-tick.C:
		}
		if err := s.tokens.flush(); err != nil {
			s.log.Warn("admin tokens: could not record last-used times", "err", err)
		}
	}
	s.mu.Lock()
	s.closed = true
	ls := []*listener{s.tcp, s.unix}
	s.mu.Unlock()
	for _, l := range ls {
		if l != nil {
			s.stop(l)
		}
	}
	s.wg.Wait()
	return nil
}

// sample adds a point to every series of the console's plots.
func (s *Server) sample() {
	if s.sampler == nil {
		return
	}
	if err := s.sampler.sample(s.opts.Now()); err != nil {
		s.log.Warn("admin: sample the metrics for the console's plots", "err", err)
	}
}

// Addr is the TCP listener's bound address.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcp == nil {
		return ""
	}
	return s.tcp.ln.Addr().String()
}

// Socket is the bound socket's path.
func (s *Server) Socket() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unix == nil {
		return ""
	}
	return s.unix.addr
}

// Audit logs an event and hands it to Options.Audit. The gateway calls it
// for actions that do not come through the API (a SIGHUP reload).
func (s *Server) Audit(e Event) {
	if e.ID == "" {
		e.ID = newEventID()
	}
	if e.When.IsZero() {
		e.When = s.opts.Now()
	}
	s.audits.WithLabelValues(e.Action, e.ResultString()).Inc()
	s.auditLog.add(e)
	attrs := []any{
		"id", e.ID, "action", e.Action, "result", e.ResultString(),
		"resource_type", e.ResourceType, "resource_id", e.ResourceID,
		"actor_type", e.Actor.Type, "actor", e.Actor.ID, "actor_context", e.Actor.Context,
	}
	if e.Actor.IP != "" {
		attrs = append(attrs, "actor_ip", e.Actor.IP)
	}
	if e.Error != "" {
		attrs = append(attrs, "error", e.Error)
	}
	msg := "audit: " + e.Description
	if e.Result {
		s.log.Info(msg, attrs...)
	} else {
		s.log.Warn(msg, attrs...)
	}
	if s.opts.Audit != nil {
		s.opts.Audit(e)
	}
}
