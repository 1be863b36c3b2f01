// Package access is edgegw's identity-aware reverse proxy, modelled on
// Cloudflare Access self-hosted applications. It serves the configured apps
// by host name over HTTPS (WebSockets and streamed responses pass through),
// logs users in with OIDC (authorization code flow with PKCE S256, state and
// nonce, ID tokens verified by go-oidc), decides with Access policies
// (package access/policy), keeps sessions in sealed cookies, and hands each
// upstream a JWT assertion signed with keys published at a JWKS endpoint.
//
// Every app host also serves, under /cdn-cgi/access/: login (provider choice
// when several fit), callback, logout (a form on GET; a POST with its CSRF
// token ends the user's sessions on every app and closes their
// WebSockets), certs (the JWKS: the current key and the previous one for
// its grace period) and get-identity.
//
// Upstreams receive Edgegw-Access-Jwt-Assertion (ES256 or RS256 with a kid;
// aud is the app's audience, by default its domain) and should verify it
// against the certs endpoint; copies of that and other identity and
// client-address headers sent by clients are removed in every spelling
// (case, '_' for '-'), as are edgegw's cookies, and an upstream's
// Set-Cookie for edgegw's cookies is dropped. WebSockets live no longer
// than their session. The `device` selector matches only a device the
// session's own user enrolled. Machines authenticate
// with service tokens in Edgegw-Access-Client-Id/-Secret (or the
// Cf-Access-Client-* spellings) through service_auth policies. API clients
// (X-Requested-With: XMLHttpRequest, or Accept: application/json) get 401
// rather than a redirect to the login.
//
// The session cookie, __Host-EDGEGW_Authorization, is per app host: a JWE
// (direct AES-256-GCM) around the same signed token the upstream gets,
// HttpOnly, Secure, SameSite=Lax, Path=/ and no Domain. Login nonces are
// one-use, recorded only once their ID token verified, in a bounded set;
// unknown JWKS key ids are refetched at most every 10 s. Records reach the
// sink through a bounded queue, so a slow Logpush never holds a request. Access keeps its signing keys, the cookie key, the
// logouts and a generated certificate in StateDir/access. An HA pair gives
// both nodes the same cookie_key_file and signing_key_file instead, so a
// session cookie and an upstream's cached JWKS outlive a failover; a file
// signing key is never rotated by the node (the admin replaces the file on
// both and reloads; the previous key stays published for signing.grace).
//
// The composition root builds a Server with New, runs it with Run, reloads
// it with Set and asks Ready for /readyz.
package access

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/internal/replay"
)

// Options are the Server's collaborators; all are optional.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	StateDir   string // the appliance state dir; Access keeps its files in StateDir/access
	Sink       RecordSink
	Countries  CountryLookup
	Devices    DeviceLookup
	// Logouts, when set, shares logouts with the other appliances that
	// serve these users (an HA pair); without it they are this node's.
	Logouts LogoutStore
	// Local serves the gateway's own endpoints (device enrollment, DNS over
	// HTTPS) on the Access listener, for every host name that is not an
	// app's: users reach them at https://GATEWAY/.
	Local http.Handler
	// HTTPClient talks to identity providers; default a client with a 30s
	// timeout and the system roots.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// SignedIn, when set, is told of every sign-in the provider confirmed
	// (whatever the app's policy then decided), with the groups the
	// provider just gave: the gateway refreshes the user's devices' groups
	// from it when no SCIM does. It must not block for long.
	SignedIn func(ctx context.Context, issuer, subject string, groups []string)
}

// Server is the Access proxy. Its methods are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	opts    Options
	dir     string
	now     func() time.Time
	metrics *metrics
	keys    *keyring
	ws      wsTracker
	revoked revocations
	// logoutNudge wakes shareLogouts after a logout (capacity 1).
	logoutNudge chan struct{}
	used        *replay.Set // login nonces, recorded once their ID token verified
	cache       sessionCache
	buffers     bufferPool
	svc         assertionCache
	recs        *recordQueue

	cookies atomic.Pointer[cookieKeys] // session, login and logout keys; swapped when cookie_key_file changes
	// dirCookieKey is the state dir's cookie key, read when a plan names
	// no cookie_key_file; guarded by mu once the Server is published.
	dirCookieKey []byte

	snap  atomic.Pointer[snapshot]
	certs atomic.Pointer[CertificateSource] // nil: the snapshot's certificate only

	mu        sync.Mutex // guards the fields below and serialises Set
	providers map[string]*provider
	runCtx    context.Context // set while Run runs
	running   bool
	wg        sync.WaitGroup
	listening atomic.Pointer[net.Addr]
	stopped   atomic.Bool
}

// New compiles the configuration (Compile) and prepares a Server for it
// (NewPlan).
func New(cfg Config, idp identity.Config, opts Options) (*Server, error) {
	p, err := Compile(cfg, idp)
	if err != nil {
		return nil, err
	}
	return NewPlan(p, opts)
}

// NewPlan prepares a Server for a compiled configuration; nothing listens
// and no provider is contacted until Run.
func NewPlan(p *Plan, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	s := &Server{
		log:       opts.Logger.With("component", "access"),
		opts:      opts,
		now:       opts.Now,
		providers: map[string]*provider{},
		used:      replay.New(replay.DefaultMax),
		recs:      newRecordQueue(),

		logoutNudge: make(chan struct{}, 1),
	}
	if opts.StateDir != "" {
		s.dir = filepath.Join(opts.StateDir, "access")
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("access state dir: %w", err)
		}
	}
	var err error
	if s.keys, err = newKeyring(s.dir); err != nil {
		return nil, err
	}
	if err := s.loadRevocations(); err != nil {
		return nil, err
	}
	if _, err := s.useKeys(p); err != nil {
		return nil, err
	}
	snap, err := s.build(p)
	if err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(opts.Registerer); err != nil {
		return nil, fmt.Errorf("access metrics: %w", err)
	}
	s.reconcileProviders(snap)
	s.snap.Store(snap)
	s.metrics.reloadOK.Set(1)
	return s, nil
}

// normalize copies the configs, so the caller's stay untouched, and
// applies the defaults.
func normalize(cfg *Config, idp *identity.Config) {
	*cfg = cfg.Clone()
	idp.Providers = slices.Clone(idp.Providers)
	for i := range idp.Providers {
		idp.Providers[i].Scopes = slices.Clone(idp.Providers[i].Scopes)
	}
	cfg.SetDefaults()
	idp.SetDefaults()
	for i := range idp.Providers {
		idp.Providers[i].SetDefaults()
	}
}

// Check validates both sections the way the config loader does, for callers
// that build configs in code. The error lists every problem.
func Check(cfg *Config, idp *identity.Config) error {
	var errs []error
	rep := func(prefix string) func(field, msg string) {
		return func(field, msg string) {
			p := prefix
			if field != "" {
				if !strings.HasPrefix(field, "[") {
					p += "."
				}
				p += field
			}
			errs = append(errs, fmt.Errorf("%s: %s", p, msg))
		}
	}
	cfg.Validate(rep("access"))
	idp.Validate(rep("identity"))
	for i := range idp.Providers {
		idp.Providers[i].Validate(rep(fmt.Sprintf("identity.providers[%d]", i)))
	}
	CheckProviders(cfg, idp.Names(), rep("access"))
	return errors.Join(errs...)
}

// Set applies a new configuration in place: it checks and builds
// everything first and changes nothing when that fails. The listen address
// cannot change while running.
func (s *Server) Set(cfg Config, idp identity.Config) error {
	p, err := Compile(cfg, idp)
	if err != nil {
		s.metrics.reloadOK.Set(0)
		return err
	}
	return s.Commit(p)
}

// Commit applies a compiled configuration in place, reading and compiling
// nothing; on error nothing changes. The listen address cannot change
// while running.
func (s *Server) Commit(p *Plan) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, idp := p.cfg, p.idp
	old := s.snap.Load()
	fail := func(err error) error {
		s.metrics.reloadOK.Set(0)
		return err
	}
	if s.running && cfg.Listen != old.cfg.Listen {
		return fail(fmt.Errorf("access.listen changed from %s to %s: that needs a restart", old.cfg.Listen, cfg.Listen))
	}
	snap, err := s.build(p)
	if err != nil {
		return fail(err)
	}
	// Before sameAs: a key file's content can change under the same config.
	keysChanged, err := s.useKeys(p)
	if err != nil {
		return fail(err)
	}
	if keysChanged {
		s.cache.reset()
	}
	if snap.sameAs(old) {
		s.metrics.reloadOK.Set(1)
		return nil
	}
	s.reconcileProvidersLocked(snap)
	s.snap.Store(snap)
	s.cache.reset()
	s.metrics.reloadOK.Set(1)
	s.log.Info("configuration applied", "apps", len(cfg.Apps), "providers", len(idp.Providers))
	return nil
}

// Ready returns nil when the proxy listens and every identity provider was
// discovered, or an error saying what is missing.
func (s *Server) Ready() error {
	var errs []error
	if s.listening.Load() == nil {
		errs = append(errs, errors.New("access: not listening yet"))
	}
	for _, p := range s.snap.Load().providers {
		if err := p.ready(); err != nil {
			errs = append(errs, fmt.Errorf("access: provider %s: %w", p.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Addr is the address the proxy listens on, or nil before Run binds it.
func (s *Server) Addr() net.Addr {
	if a := s.listening.Load(); a != nil {
		return *a
	}
	return nil
}

// Run serves until ctx is done, then shuts down gracefully and returns.
// Identity providers that cannot be reached are retried with backoff
// meanwhile; Ready says why they are not usable.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.stopped.Load() {
		s.mu.Unlock()
		return errors.New("access: Run called twice")
	}
	snap := s.snap.Load()
	ln, err := net.Listen("tcp", snap.cfg.Listen)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("access: listen on %s: %w", snap.cfg.Listen, err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = runCtx
	s.running = true
	for _, p := range s.providers {
		s.startDiscovery(p)
	}
	s.mu.Unlock()

	addr := ln.Addr()
	s.listening.Store(&addr)
	s.log.Info("listening", "addr", addr.String())

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.snap.Load().tls, nil },
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.maintain(runCtx)
	}()
	if st := s.opts.Logouts; st != nil {
		s.wg.Go(func() { s.shareLogouts(runCtx, st) })
	}
	// The record queue stops only after the HTTP server shut down (its
	// own context), so the records of the last requests still reach the
	// sink.
	recCtx, stopRecs := context.WithCancel(context.WithoutCancel(ctx))
	recsDone := make(chan struct{})
	go func() {
		defer close(recsDone)
		s.recs.run(recCtx, s.opts.Sink)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()

	var serveErr error
	select {
	case <-runCtx.Done():
	case serveErr = <-errc:
	}
	shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if serveErr == nil {
		serveErr = <-errc
	}
	stopRecs()
	<-recsDone
	s.mu.Lock()
	cancel()
	s.running = false
	s.stopped.Store(true)
	s.mu.Unlock()
	s.wg.Wait()
	s.listening.Store(nil)
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// maintain rotates signing keys and forgets expired logouts and nonces.
func (s *Server) maintain(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg := s.snap.Load().cfg
		changed, err := s.keys.rotate(s.now(), jose.SignatureAlgorithm(cfg.Signing.Algorithm), cfg.Signing.Rotation, cfg.Signing.Grace, false)
		if err != nil {
			s.log.Error("key rotation failed", "err", err)
		} else if changed {
			s.cache.reset()
			s.log.Info("signing keys rotated", "kid", s.keys.set.Load().current.ID)
		}
		s.revoked.expire(s.now().Add(-maxSessionDuration))
	}
}

// RotateKeys makes a new signing key now; the previous one stays published
// for the grace period.
func (s *Server) RotateKeys() error {
	cfg := s.snap.Load().cfg
	_, err := s.keys.rotate(s.now(), jose.SignatureAlgorithm(cfg.Signing.Algorithm), cfg.Signing.Rotation, cfg.Signing.Grace, true)
	s.cache.reset()
	return err
}

// CertificateSource supplies the listener's certificate per handshake
// ([acme.Manager]). GetCertificate returns nil, nil when it has none for
// the hello, and the configured or self-signed certificate is served.
type CertificateSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// SetCertificates makes src the first place handshakes take their
// certificate from, from the next handshake on; nil: none.
func (s *Server) SetCertificates(src CertificateSource) {
	if src == nil {
		s.certs.Store(nil)
		return
	}
	s.certs.Store(&src)
}

// Close unregisters the metrics; call it after Run returned when the Server
// is dropped for good.
func (s *Server) Close() {
	s.metrics.unregister(s.opts.Registerer)
}
