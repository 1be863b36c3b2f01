package access

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
)

// Paths served on every app's host, and header and cookie names.
const (
	PathPrefix   = "/cdn-cgi/access/"
	PathLogin    = PathPrefix + "login"
	PathCallback = PathPrefix + "callback"
	PathLogout   = PathPrefix + "logout"
	PathCerts    = PathPrefix + "certs"
	PathIdentity = PathPrefix + "get-identity"

	// HeaderAssertion carries the signed JWT to the upstream.
	HeaderAssertion = "Edgegw-Access-Jwt-Assertion"
	// HeaderEmail carries the user's email to the upstream, for
	// convenience; upstreams should trust the assertion, not this.
	HeaderEmail = "Edgegw-Access-Authenticated-User-Email"
	// HeaderRayID is the request id, sent both ways and in records.
	HeaderRayID = "Edgegw-Ray"
	// HeaderClientID and HeaderClientSecret carry service tokens; the
	// Cf-Access-Client-* spellings are accepted too.
	HeaderClientID     = "Edgegw-Access-Client-Id"
	HeaderClientSecret = "Edgegw-Access-Client-Secret"

	// CookieSession holds the sealed app token, one per app host. The
	// __Host- prefix makes browsers take it only when Secure, Path=/ and
	// without a Domain, so no sibling host can set or shadow it.
	CookieSession = "__Host-EDGEGW_Authorization"
	// cookieLogin prefixes the per-login state cookie.
	cookieLogin = "__Host-EDGEGW_Login_"
)

// strippedHeaders are the headers a client may not send upstream, in
// normalised form (normHeader): identity is only what edgegw asserts, and
// the client address only what the proxy sets (X-Forwarded-For, from the
// connection). Every spelling goes: nginx, CGI and many frameworks treat
// "Cf_Access_Jwt_Assertion" as "Cf-Access-Jwt-Assertion", so an
// underscore copy would otherwise reach the app as the real header.
var strippedHeaders = func() map[string]bool {
	m := map[string]bool{}
	for _, h := range []string{
		HeaderAssertion, HeaderEmail, HeaderClientID, HeaderClientSecret, HeaderRayID,
		"Cf-Access-Jwt-Assertion", "Cf-Access-Authenticated-User-Email",
		"Cf-Access-Client-Id", "Cf-Access-Client-Secret", "Cf-Access-Token",
		"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups",
		"X-Forwarded-Preferred-Username", "X-Forwarded-Access-Token",
		"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups",
		"X-Auth-Request-Preferred-Username", "X-Auth-Request-Access-Token",
		"Remote-User", "Remote-Email", "Remote-Groups", "X-Remote-User",
		// Client addresses: only the proxy's own X-Forwarded-For counts.
		"X-Real-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Client-Ip", "X-Cluster-Client-Ip",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded",
	} {
		m[normHeader(h)] = true
	}
	return m
}()

// normHeader folds the spellings that upstreams treat alike: case, and
// '_' for '-'.
func normHeader(k string) string {
	return strings.ReplaceAll(strings.ToLower(k), "_", "-")
}

// request is what the handler learnt about one request.
type request struct {
	w       http.ResponseWriter
	r       *http.Request
	snap    *snapshot
	app     *appState
	ray     string
	addr    netip.Addr
	net     policy.Network
	tokenID string // client id of a presented service token
	// devOwner is the subject of the enrolled device at the source
	// address, when there is one (devOK).
	devOwner string
	devOK    bool
}

// deviceOf tells whether the device at the source address is one the
// user issuer/sub enrolled: a device proves nothing about anyone else.
func (q *request) deviceOf(issuer, sub string) bool {
	return q.devOK && issuer != "" && sub != "" && q.devOwner == identity.SubjectOf(issuer, sub)
}

// sessionIssuer is the issuer of the provider a session came from.
func (q *request) sessionIssuer(cl *tokenClaims) string {
	if p := q.snap.providers[cl.IdP]; p != nil {
		return p.cfg.Issuer
	}
	return ""
}

// ServeHTTP is the proxy's handler: it routes by host name, serves the
// Access endpoints, and decides every other request before proxying it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	snap := s.snap.Load()
	app := snap.app(r.Host)
	if app == nil && s.opts.Local != nil {
		s.opts.Local.ServeHTTP(w, r)
		return
	}
	if app == nil {
		http.Error(w, "No application is configured for this host name.", http.StatusNotFound)
		return
	}
	q := &request{w: w, r: r, snap: snap, app: app, ray: newRayID()}
	w.Header().Set(HeaderRayID, q.ray)
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		q.addr = ap.Addr().Unmap()
	}
	if strings.HasPrefix(r.URL.Path, PathPrefix) {
		switch r.URL.Path {
		case PathLogin:
			s.serveLogin(q)
		case PathCallback:
			s.serveCallback(q)
		case PathLogout:
			s.serveLogout(q)
		case PathCerts:
			s.serveCerts(q)
		case PathIdentity:
			s.serveIdentity(q)
		default:
			http.NotFound(w, r)
		}
		return
	}
	s.serveApp(q)
}

func newRayID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// network gathers the per-request facts for network selectors, and checks
// a presented service token. ok is false when a token was presented but is
// wrong, which is answered with 401 whatever the policies say.
func (s *Server) network(q *request) (ok bool) {
	q.net.Addr = q.addr
	if c := s.opts.Countries; c != nil && q.addr.IsValid() {
		q.net.Country = c.Country(q.addr) // for geo selectors
	}
	if tls := q.r.TLS; tls != nil && len(tls.VerifiedChains) > 0 && len(tls.VerifiedChains[0]) > 0 {
		q.net.Certificate = true
		q.net.CommonName = tls.VerifiedChains[0][0].Subject.CommonName
	}
	if d := s.opts.Devices; d != nil && q.addr.IsValid() {
		q.devOwner, q.devOK = d.DeviceOwner(q.addr)
		if pl, ok := d.(PostureLookup); ok && q.devOK {
			q.net.DevicePosture = pl.DeviceCompliant(q.addr)
		}
		if pa, ok := d.(PostureAttributes); ok && q.devOK {
			if p, ok := pa.DevicePostureAttributes(q.addr); ok {
				q.net.Posture = &p
			}
		}
	}
	h := q.r.Header
	id, secret := h.Get(HeaderClientID), h.Get(HeaderClientSecret)
	if id == "" {
		id, secret = h.Get("Cf-Access-Client-Id"), h.Get("Cf-Access-Client-Secret")
	}
	if id == "" && secret == "" {
		return true
	}
	q.tokenID = id
	t := q.snap.tokens[id]
	sum := sha256.Sum256([]byte(secret))
	want := sum // compare against itself when the id is unknown, to keep timing flat
	if t != nil {
		want = t.secret
	}
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || t == nil {
		return false
	}
	q.net.ServiceToken = t.name
	return true
}

func (s *Server) serveApp(q *request) {
	r, w, app := q.r, q.w, q.app
	if !s.network(q) {
		stripHeaders(r)
		s.record(q, ActionRequest, false, "", "service_token", "", q.tokenID)
		s.metrics.requests.WithLabelValues(app.cfg.Name, decUnauthorized).Inc()
		http.Error(w, "The service token was not accepted.", http.StatusUnauthorized)
		return
	}
	stripHeaders(r)
	sess := s.session(q)
	in := policy.Input{Network: q.net}
	if sess != nil {
		in.Identity = &policy.Identity{Email: sess.claims.Email, Groups: sess.claims.Groups, Claims: sess.claims.Custom}
		in.Network.Device = q.deviceOf(q.sessionIssuer(sess.claims), sess.claims.Subject)
	}
	// device_posture also needs the device to be the user's (Device).
	in.Network.DevicePosture = in.Network.DevicePosture && in.Network.Device
	d := app.policies.Evaluate(in)
	switch {
	case d.Allowed && d.Action == policy.Bypass:
		s.metrics.requests.WithLabelValues(app.cfg.Name, decBypass).Inc()
	case d.Allowed && d.Action == policy.ServiceAuth:
		raw, err := s.serviceAssertion(q)
		if err != nil {
			s.log.Error("signing service assertion failed", "err", err)
			http.Error(w, "Internal error.", http.StatusInternalServerError)
			return
		}
		r.Header.Set(HeaderAssertion, raw)
		s.metrics.requests.WithLabelValues(app.cfg.Name, decServiceAuth).Inc()
		conn, uid := "service_token", q.net.ServiceToken
		if uid == "" {
			conn, uid = "certificate", q.net.CommonName
		}
		s.record(q, ActionRequest, true, d.Policy, conn, "", uid)
	case d.Allowed:
		r.Header.Set(HeaderAssertion, sess.raw)
		if sess.claims.Email != "" {
			r.Header.Set(HeaderEmail, sess.claims.Email)
		}
		s.metrics.requests.WithLabelValues(app.cfg.Name, decAllow).Inc()
		s.record(q, ActionRequest, true, d.Policy, sess.claims.IdP, sess.claims.Email, sess.claims.Subject)
	case sess == nil:
		if isAPIClient(r) || q.tokenID != "" {
			s.metrics.requests.WithLabelValues(app.cfg.Name, decUnauthorized).Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgegw-access"`)
			http.Error(w, "Authentication required.", http.StatusUnauthorized)
			return
		}
		s.metrics.requests.WithLabelValues(app.cfg.Name, decLogin).Inc()
		u := url.URL{Path: PathLogin, RawQuery: url.Values{"redirect_url": {r.URL.RequestURI()}}.Encode()}
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	default:
		dec := decDeny
		if d.Action == policy.Block {
			dec = decBlock
		}
		s.metrics.requests.WithLabelValues(app.cfg.Name, dec).Inc()
		s.record(q, ActionRequest, false, d.Policy, sess.claims.IdP, sess.claims.Email, sess.claims.Subject)
		http.Error(w, "You do not have access to this application.", http.StatusForbidden)
		return
	}
	r.Header.Set(HeaderRayID, q.ray)
	removeAccessCookies(r)
	if d.Allowed && d.Action == policy.Allow && sess != nil && isUpgrade(r) {
		s.proxyUpgrade(q, sess)
		return
	}
	app.proxy.ServeHTTP(w, r)
}

// stripHeaders removes strippedHeaders in every spelling.
func stripHeaders(r *http.Request) {
	for k := range r.Header {
		if strippedHeaders[normHeader(k)] {
			delete(r.Header, k)
		}
	}
}

// isAccessCookie tells edgegw's cookies by name: the current ones, the
// names before the __Host- prefix, and any case or prefix variant, so
// neither the client nor the upstream can pass one off as another.
func isAccessCookie(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "__host-")
	n = strings.TrimPrefix(n, "__secure-")
	return strings.HasPrefix(n, "edgegw_")
}

// removeAccessCookies keeps edgegw's own cookies from the upstream.
func removeAccessCookies(r *http.Request) {
	cs := r.Cookies()
	if len(cs) == 0 {
		return
	}
	var keep []string
	drop := false
	for _, c := range cs {
		if isAccessCookie(c.Name) {
			drop = true
			continue
		}
		keep = append(keep, c.Name+"="+c.Value)
	}
	if !drop {
		return
	}
	r.Header.Del("Cookie")
	if len(keep) > 0 {
		r.Header.Set("Cookie", strings.Join(keep, "; "))
	}
}

func isAPIClient(r *http.Request) bool {
	if strings.EqualFold(r.Header.Get("X-Requested-With"), "XMLHttpRequest") {
		return true
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

// session returns the request's verified session for its app, or nil. A
// cookie that does not verify is cleared; one signed with a retired key is
// re-signed with the current key.
func (s *Server) session(q *request) *cachedSession {
	c, err := q.r.Cookie(CookieSession)
	if err != nil || c.Value == "" {
		return nil
	}
	now := s.now()
	cs := s.cache.get(c.Value, q.app.cfg.Name)
	if cs == nil {
		cs, err = s.openSession(c.Value, q.app, now)
		if err != nil {
			s.log.Debug("session cookie refused", "app", q.app.cfg.Name, "err", err)
			s.clearCookie(q.w, CookieSession, "/")
			return nil
		}
		s.cache.put(c.Value, cs)
	}
	cl := cs.claims
	if !slices.Contains(q.app.providers, cl.IdP) { // the app no longer takes this provider
		s.clearCookie(q.w, CookieSession, "/")
		return nil
	}
	if cl.Expiry.Time().Add(tokenLeeway).Before(now) || (cl.NotBefore != nil && cl.NotBefore.Time().After(now.Add(tokenLeeway))) {
		s.clearCookie(q.w, CookieSession, "/")
		return nil
	}
	if s.revokedAt(userKey(cl.IdP, cl.Subject), cl.AuthMillis) || s.revokedAt(emailKey(cl.Email), cl.AuthMillis) {
		s.clearCookie(q.w, CookieSession, "/")
		return nil
	}
	if ks := s.keys.set.Load(); ks.current != nil && cs.kid != ks.current.ID {
		if ns, v, err := s.issueSession(ks, cl); err == nil {
			s.setSessionCookie(q.w, v, cl.Expiry.Time())
			cs = ns
		}
	}
	return cs
}

func (s *Server) openSession(v string, app *appState, now time.Time) (*cachedSession, error) {
	raw, err := s.cookies.Load().session.open(v)
	if err != nil {
		return nil, err
	}
	cl, kid, err := s.keys.set.Load().verify(string(raw), s.issuer(), app.cfg.Audience, now)
	if err != nil {
		return nil, err
	}
	if cl.Type != tokenApp {
		return nil, errBadToken
	}
	return &cachedSession{claims: cl, raw: string(raw), kid: kid, app: app.cfg.Name}, nil
}

func (s *Server) issuer() string { return s.snap.Load().cfg.Signing.Issuer }

// issueSession signs claims with the current key and seals them into a
// cookie value.
func (s *Server) issueSession(ks *keySet, cl *tokenClaims) (*cachedSession, string, error) {
	raw, err := ks.sign(cl)
	if err != nil {
		return nil, "", err
	}
	v, err := s.cookies.Load().session.seal([]byte(raw))
	if err != nil {
		return nil, "", err
	}
	return &cachedSession{claims: cl, raw: raw, kid: ks.current.ID}, v, nil
}

func (s *Server) setSessionCookie(w http.ResponseWriter, v string, exp time.Time) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieSession, Value: v, Path: "/", Expires: exp,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) clearCookie(w http.ResponseWriter, name, path string) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: "", Path: path, MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode,
	})
}

// serviceAssertion returns a short-lived token naming the service token
// (or client certificate), as Cloudflare does: common_name is the client id
// and sub is empty. Tokens are reused until a minute before they expire.
func (s *Server) serviceAssertion(q *request) (string, error) {
	cn := q.tokenID
	if cn == "" && q.net.Certificate {
		cn = q.net.CommonName
	}
	now := s.now()
	ks := s.keys.set.Load()
	key := q.app.cfg.Name + "\x00" + cn
	if a, ok := s.svc.get(key); ok && a.kid == ks.current.ID && now.Before(a.exp.Add(-time.Minute)) {
		return a.raw, nil
	}
	cfg := q.snap.cfg
	exp := now.Add(5 * time.Minute)
	cl := &tokenClaims{
		Claims: jwt.Claims{
			Issuer: cfg.Signing.Issuer, Audience: jwt.Audience{q.app.cfg.Audience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-tokenLeeway)),
			Expiry: jwt.NewNumericDate(exp),
		},
		Type:       tokenService,
		CommonName: cn,
	}
	raw, err := ks.sign(cl)
	if err != nil {
		return "", err
	}
	s.svc.put(key, serviceAssertion{raw: raw, kid: ks.current.ID, exp: exp})
	return raw, nil
}

type serviceAssertion struct {
	raw, kid string
	exp      time.Time
}

// assertionCache holds signed service assertions by app and client.
type assertionCache struct {
	mu sync.Mutex
	m  map[string]serviceAssertion
}

func (c *assertionCache) get(k string) (serviceAssertion, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.m[k]
	return a, ok
}

func (c *assertionCache) put(k string, a serviceAssertion) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) > 10000 {
		c.m = map[string]serviceAssertion{}
	}
	c.m[k] = a
}

func (s *Server) record(q *request, action string, allowed bool, pol, conn, email, uid string) {
	sink := s.opts.Sink
	if sink == nil {
		return
	}
	rec := Record{
		Action: action, Allowed: allowed, AppDomain: q.app.cfg.Domain, AppName: q.app.cfg.Name,
		Connection: conn, CreatedAt: s.now().UTC(), Email: email, IPAddress: q.addr,
		RayID: q.ray, PolicyName: pol, UserUID: uid,
	}
	if c := s.opts.Countries; c != nil && q.addr.IsValid() {
		rec.Country = c.Country(q.addr)
	}
	s.recs.push(rec, s.metrics.recsDropped)
}

func (s *Server) serveCerts(q *request) {
	q.w.Header().Set("Content-Type", "application/json")
	q.w.Header().Set("Cache-Control", "public, max-age=300")
	q.w.Write(s.keys.set.Load().jwks)
}
