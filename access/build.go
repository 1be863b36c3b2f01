package access

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/edgegw/edgegw/access/acme"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/selfsign"
)

// snapshot is one applied configuration, immutable once published.
type snapshot struct {
	cfg       Config
	idp       identity.Config
	apps      map[string]*appState // by domain
	tokens    map[string]*serviceToken
	providers map[string]*provider
	tls       *tls.Config
	cert      *tls.Certificate // the configured or self-signed one, served unless a CertificateSource has one
}

type appState struct {
	cfg       App
	policies  *policy.Set
	claims    []string // claim names the policies read
	providers []string // provider names a user may log in with, in order
	proxy     *httputil.ReverseProxy
}

type serviceToken struct {
	name     string
	clientID string
	secret   [32]byte // SHA-256 of the secret, compared in constant time
}

// Plan is an Access configuration checked and compiled by [Compile]:
// service-token and client secrets read, policies compiled, upstreams
// parsed, the TLS certificate and client CAs loaded. It is immutable; a
// Server applies it (NewPlan, Commit) without reading a file or compiling
// again.
type Plan struct {
	cfg       Config
	idp       identity.Config
	tokens    map[string]*serviceToken // by client id
	secrets   map[string]string        // provider name → client secret
	apps      []compiledApp
	cert      *tls.Certificate // nil: a self-signed one from the state dir, made at commit
	clientCAs *x509.CertPool
	acme      *acme.Plan // nil: no access.acme

	cookieKey  []byte      // access.cookie_key_file's key; nil: the state dir's
	signingKey *signingKey // access.signing_key_file's key; nil: the node's own ring
}

// ACME is the compiled access.acme section, nil without one. Whoever runs
// it (an [acme.Manager]) hands it to the Server with SetCertificates.
func (p *Plan) ACME() *acme.Plan { return p.acme }

type compiledApp struct {
	cfg      App
	policies *policy.Set
	upstream *url.URL
}

// Compile checks cfg and idp the way the config loader does (Check) and
// compiles them, reading every file they name. It starts and binds
// nothing.
func Compile(cfg Config, idp identity.Config) (*Plan, error) {
	normalize(&cfg, &idp)
	if err := Check(&cfg, &idp); err != nil {
		return nil, err
	}
	p := &Plan{cfg: cfg, idp: idp, tokens: map[string]*serviceToken{}, secrets: map[string]string{}}
	if err := p.readKeyFiles(); err != nil {
		return nil, err
	}
	for _, t := range cfg.ServiceTokens {
		b, err := os.ReadFile(t.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("service token %q: %w", t.Name, err)
		}
		secret := strings.TrimSpace(string(b))
		if len(secret) < 16 {
			return nil, fmt.Errorf("service token %q: the secret in %s is shorter than 16 characters", t.Name, t.ClientSecretFile)
		}
		p.tokens[t.ClientID] = &serviceToken{name: t.Name, clientID: t.ClientID, secret: sha256.Sum256([]byte(secret))}
	}
	for _, pc := range idp.Providers {
		if pc.ClientSecretFile == "" {
			continue
		}
		b, err := os.ReadFile(pc.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("provider %q client secret: %w", pc.Name, err)
		}
		p.secrets[pc.Name] = strings.TrimSpace(string(b))
	}
	for _, a := range cfg.Apps {
		set, err := policy.Compile(a.Policies)
		if err != nil {
			return nil, fmt.Errorf("app %q: %w", a.Name, err)
		}
		up, err := url.Parse(a.Upstream)
		if err != nil {
			return nil, fmt.Errorf("app %q upstream: %w", a.Name, err)
		}
		p.apps = append(p.apps, compiledApp{cfg: a, policies: set, upstream: up})
	}
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("access tls: %w", err)
		}
		p.cert = &cert
	}
	if cfg.ACME != nil {
		ap, err := acme.Compile(*cfg.ACME)
		if err != nil {
			return nil, err
		}
		p.acme = ap
	}
	if cfg.TLS.ClientCAFile != "" {
		b, err := os.ReadFile(cfg.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("access client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("access client CA %s: no PEM certificates", cfg.TLS.ClientCAFile)
		}
		p.clientCAs = pool
	}
	return p, nil
}

// build turns a compiled plan into a snapshot. It reads no file but the
// self-signed certificate of the state dir (made there when missing), and
// changes nothing on the Server.
func (s *Server) build(p *Plan) (*snapshot, error) {
	cfg, idp := p.cfg, p.idp
	snap := &snapshot{
		cfg:       cfg,
		idp:       idp,
		apps:      map[string]*appState{},
		tokens:    p.tokens,
		providers: map[string]*provider{},
	}
	for _, pc := range idp.Providers {
		snap.providers[pc.Name] = newProvider(pc, p.secrets[pc.Name])
	}
	transport := s.transport()
	for _, ca := range p.apps {
		a := ca.cfg
		for _, pol := range a.Policies {
			if pol.Action == policy.Allow && len(pol.Require) == 0 && slices.ContainsFunc(pol.Include, func(sel policy.Selector) bool { return sel.Key() == "everyone" }) {
				s.log.Warn("policy lets in anyone who can log in at any allowed provider; add a require rule if that is not meant",
					"app", a.Name, "policy", pol.Name)
			}
		}
		st := &appState{cfg: a, policies: ca.policies, claims: policy.Claims(a.Policies), providers: a.Providers}
		if len(st.providers) == 0 {
			st.providers = idp.Names()
		}
		st.proxy = s.newProxy(a.Name, ca.upstream, transport)
		snap.apps[a.Domain] = st
	}
	tc, cert, err := s.tlsConfig(p)
	if err != nil {
		return nil, err
	}
	snap.tls, snap.cert = tc, cert
	return snap, nil
}

// sameAs reports whether applying snap instead of old would change
// nothing: the same settings and the same contents of every file read.
func (snap *snapshot) sameAs(old *snapshot) bool {
	if !reflect.DeepEqual(snap.cfg, old.cfg) || !reflect.DeepEqual(snap.idp, old.idp) || len(snap.tokens) != len(old.tokens) {
		return false
	}
	for id, t := range snap.tokens {
		if o := old.tokens[id]; o == nil || *o != *t {
			return false
		}
	}
	for name, p := range snap.providers {
		if !p.same(old.providers[name]) {
			return false
		}
	}
	a, b := snap.tls, old.tls
	if !bytes.Equal(snap.cert.Certificate[0], old.cert.Certificate[0]) || (a.ClientCAs == nil) != (b.ClientCAs == nil) {
		return false
	}
	return a.ClientCAs == nil || a.ClientCAs.Equal(b.ClientCAs)
}

func (s *Server) transport() *http.Transport {
	if old := s.snap.Load(); old != nil {
		for _, a := range old.apps {
			if t, ok := a.proxy.Transport.(*http.Transport); ok {
				return t
			}
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.ForceAttemptHTTP2 = false
	return t
}

// bufferPool recycles the proxies' copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

func (s *Server) newProxy(app string, up *url.URL, t http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:  t,
		BufferPool: &s.buffers,
		ModifyResponse: func(resp *http.Response) error {
			stripAccessSetCookies(resp.Header)
			return nil
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil { // the client went away
				s.log.Debug("client gone before the upstream answered", "app", app, "err", err)
				w.WriteHeader(499)
				return
			}
			s.metrics.upstreamErrs.WithLabelValues(app).Inc()
			s.log.Warn("upstream failed", "app", app, "err", err)
			http.Error(w, "The application's origin could not be reached.", http.StatusBadGateway)
		},
	}
}

func (s *Server) tlsConfig(p *Plan) (*tls.Config, *tls.Certificate, error) {
	var cert tls.Certificate
	if p.cert != nil {
		cert = *p.cert
	} else {
		var domains []string
		for _, a := range p.cfg.Apps {
			domains = append(domains, a.Domain)
		}
		var err error
		cert, err = s.selfSigned(domains)
		if err != nil {
			return nil, nil, fmt.Errorf("access self-signed certificate: %w", err)
		}
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		// A certificate from the source (ACME) when it has one for the
		// hello, else the configured or self-signed one. Not in
		// Certificates: crypto/tls would serve that to every client
		// without SNI (one that dialled an address) without asking.
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if src := s.certs.Load(); src != nil {
				if c, err := (*src).GetCertificate(hello); c != nil || err != nil {
					return c, err
				}
			}
			return &cert, nil
		},
	}
	if p.acme != nil {
		tc.NextProtos = append(tc.NextProtos, p.acme.NextProtos()...)
	}
	if p.clientCAs != nil {
		tc.ClientCAs = p.clientCAs
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, &cert, nil
}

// selfSigned loads the generated certificate from the state dir when it
// still covers domains and is not about to expire, or makes a new one.
func (s *Server) selfSigned(domains []string) (tls.Certificate, error) {
	base := ""
	if s.dir != "" {
		base = filepath.Join(s.dir, "selfsigned")
	}
	c, made, err := selfsign.Load(base, "edgegw access", domains, s.now())
	if made && base != "" {
		s.log.Info("made a self-signed certificate", "path", base+".crt", "domains", domains)
	}
	return c, err
}

func (s *Server) revocationsPath() string {
	if s.dir == "" {
		return ""
	}
	return filepath.Join(s.dir, "logouts.json")
}

func (s *Server) loadRevocations() error {
	path := s.revocationsPath()
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read logouts: %w", err)
	}
	m := map[string]int64{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("parse logouts %s: %w", path, err)
	}
	s.revoked.m = m
	return nil
}

func (s *Server) saveRevocations() {
	path := s.revocationsPath()
	if path == "" {
		return
	}
	s.revoked.mu.RLock()
	b, err := json.Marshal(s.revoked.m)
	s.revoked.mu.RUnlock()
	if err == nil {
		err = writeFileAtomic(path, b, 0o600)
	}
	if err != nil {
		s.log.Error("saving logouts failed", "err", err)
	}
}

// app returns the app serving host (without port), or nil.
func (s *snapshot) app(host string) *appState {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	return s.apps[host]
}

// stripAccessSetCookies removes Set-Cookie headers that would set one of
// edgegw's cookies: an upstream must not be able to log its users in as
// someone else, out, or into a login of its choosing.
func stripAccessSetCookies(h http.Header) {
	for k, vs := range h {
		if normHeader(k) != "set-cookie" {
			continue
		}
		kept := vs[:0]
		for _, v := range vs {
			name, _, _ := strings.Cut(v, "=")
			if !isAccessCookie(name) {
				kept = append(kept, v)
			}
		}
		if len(kept) == 0 {
			delete(h, k)
		} else {
			h[k] = kept
		}
	}
}
