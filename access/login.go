package access

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/access/policy"
)

// safeReturn accepts only a path on the same host: it must start with one
// slash, and carry no scheme, host, backslash or control character, so a
// login cannot be turned into an open redirect.
func safeReturn(v string) string {
	if v == "" || v[0] != '/' || len(v) > 2048 {
		return "/"
	}
	if strings.HasPrefix(v, "//") || strings.ContainsAny(v, "\\") {
		return "/"
	}
	for _, c := range v {
		if c < 0x20 || c == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, PathPrefix) {
		return "/"
	}
	return v
}

var chooserPage = template.Must(template.New("choose").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in to {{.App}}</title></head>
<body><h1>Sign in to {{.App}}</h1><ul>
{{range .Links}}<li><a href="{{.URL}}">{{.Name}}</a></li>
{{end}}</ul></body></html>
`))

func (s *Server) serveLogin(q *request) {
	r, w, app := q.r, q.w, q.app
	ret := safeReturn(r.URL.Query().Get("redirect_url"))
	name := r.URL.Query().Get("provider")
	if name == "" {
		switch len(app.providers) {
		case 0:
			http.Error(w, "No identity provider is configured for this application.", http.StatusServiceUnavailable)
			return
		case 1:
			name = app.providers[0]
		default:
			type link struct{ Name, URL string }
			var links []link
			for _, p := range app.providers {
				u := url.URL{Path: PathLogin, RawQuery: url.Values{"provider": {p}, "redirect_url": {ret}}.Encode()}
				links = append(links, link{p, u.String()})
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Content-Security-Policy", "default-src 'none'")
			w.Header().Set("X-Frame-Options", "DENY")
			chooserPage.Execute(w, struct {
				App   string
				Links []link
			}{app.cfg.Name, links})
			return
		}
	}
	if !slices.Contains(app.providers, name) {
		http.Error(w, "That identity provider may not be used for this application.", http.StatusBadRequest)
		return
	}
	p := q.snap.providers[name]
	d := p.disc.Load()
	if d == nil {
		s.log.Warn("login with an unavailable provider", "provider", name, "err", p.ready())
		http.Error(w, "The identity provider is not available yet; try again shortly.", http.StatusServiceUnavailable)
		return
	}
	st := &loginState{
		State: randomString(32), Nonce: randomString(32), Verifier: oauth2.GenerateVerifier(),
		Provider: name, App: app.cfg.Name, Return: ret, Expires: s.now().Add(loginTimeout).Unix(),
	}
	v, err := s.sealLogin(st)
	if err != nil {
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	// Path=/ because the __Host- prefix requires it; the proxy keeps the
	// cookie from the upstream like the session cookie.
	http.SetCookie(w, &http.Cookie{
		Name: cookieLogin + st.State[:16], Value: v, Path: "/", MaxAge: int(loginTimeout / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	authURL := p.oauth2(d, callbackURL(r)).AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier))
	http.Redirect(w, r, authURL, http.StatusFound)
}

// callbackURL is the redirect URI on the host the user reached, which the
// host-routing already matched to an app.
func callbackURL(r *http.Request) string {
	return (&url.URL{Scheme: "https", Host: r.Host, Path: PathCallback}).String()
}

func (s *Server) serveCallback(q *request) {
	r, w, app := q.r, q.w, q.app
	w.Header().Set("Cache-Control", "no-store")
	qv := r.URL.Query()
	fail := func(code int, user, why string) {
		s.log.Info("login refused", "app", app.cfg.Name, "why", why, "ray", q.ray)
		s.metrics.logins.WithLabelValues(app.cfg.Name, "", "error").Inc()
		http.Error(w, user, code)
	}
	if e := qv.Get("error"); e != "" {
		fail(http.StatusUnauthorized, "The identity provider refused the login.", "provider error: "+e)
		return
	}
	state := qv.Get("state")
	if len(state) < 16 {
		fail(http.StatusBadRequest, "The login request is invalid; start again.", "no state")
		return
	}
	c, err := r.Cookie(cookieLogin + state[:16])
	if err != nil {
		fail(http.StatusBadRequest, "The login request is invalid or expired; start again.", "no login cookie for this state")
		return
	}
	s.clearCookie(w, c.Name, "/")
	st, err := s.openLogin(c.Value)
	now := s.now()
	switch {
	case err != nil:
		fail(http.StatusBadRequest, "The login request is invalid; start again.", err.Error())
		return
	case subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1:
		fail(http.StatusBadRequest, "The login request is invalid; start again.", "state mismatch")
		return
	case now.Unix() > st.Expires:
		fail(http.StatusBadRequest, "The login took too long; start again.", "login state expired")
		return
	case st.App != app.cfg.Name:
		fail(http.StatusBadRequest, "The login request is invalid; start again.", "login state for another app")
		return
	case s.used.Seen(replay.KeyOf("login", st.Nonce), now):
		// Only looked up here: the nonce is recorded once the provider's ID
		// token for it verified, so forged callbacks cannot fill the set.
		fail(http.StatusBadRequest, "This login was already used; start again.", "replayed login state and nonce")
		return
	}
	p := q.snap.providers[st.Provider]
	if p == nil || !slices.Contains(app.providers, st.Provider) {
		fail(http.StatusBadRequest, "The login request is invalid; start again.", "unknown provider")
		return
	}
	d := p.disc.Load()
	if d == nil {
		fail(http.StatusServiceUnavailable, "The identity provider is not available.", "provider not discovered")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	login, err := s.exchange(ctx, p, d, callbackURL(r), qv.Get("code"), st, app.claims)
	if err != nil {
		fail(http.StatusUnauthorized, "The login could not be verified.", err.Error())
		return
	}
	switch err := s.used.Add(replay.KeyOf("login", st.Nonce), now, time.Unix(st.Expires, 0).Add(time.Minute)); {
	case errors.Is(err, replay.ErrReplayed):
		fail(http.StatusBadRequest, "This login was already used; start again.", "replayed login state and nonce")
		return
	case err != nil:
		s.metrics.replayFull.Inc()
		fail(http.StatusServiceUnavailable, "Too many logins are in progress; try again in a few minutes.", err.Error())
		return
	}
	if !s.network(q) {
		fail(http.StatusUnauthorized, "The service token was not accepted.", "bad service token at login")
		return
	}
	if f := s.opts.SignedIn; f != nil {
		// The provider just vouched for these groups: a device's groups
		// follow each sign-in (identity.max_group_age).
		f(ctx, p.cfg.Issuer, login.Subject, login.Groups)
	}
	id := &policy.Identity{Email: login.Email, Groups: login.Groups, Claims: login.Custom}
	q.net.Device = q.deviceOf(p.cfg.Issuer, login.Subject)
	dec := app.policies.Evaluate(policy.Input{Identity: id, Network: q.net})
	if !dec.Allowed {
		s.metrics.logins.WithLabelValues(app.cfg.Name, p.cfg.Name, "denied").Inc()
		s.record(q, ActionLogin, false, dec.Policy, p.cfg.Name, login.Email, login.Subject)
		http.Error(w, "That account does not have access to this application.", http.StatusForbidden)
		return
	}
	exp := now.Add(app.cfg.SessionDuration)
	cl := &tokenClaims{
		Claims: jwt.Claims{
			Issuer: q.snap.cfg.Signing.Issuer, Subject: login.Subject, Audience: jwt.Audience{app.cfg.Audience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
			ID: randomString(12),
		},
		Type: tokenApp, Email: login.Email, Groups: login.Groups, IdP: p.cfg.Name, AuthMillis: now.UnixMilli(),
	}
	if len(login.Custom) > 0 {
		cl.Custom = login.Custom
	}
	if c := s.opts.Countries; c != nil && q.addr.IsValid() {
		cl.Country = c.Country(q.addr)
	}
	_, v, err := s.issueSession(s.keys.set.Load(), cl)
	if err != nil {
		s.log.Error("issuing a session failed", "err", err)
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	if len(v) > 4000 {
		fail(http.StatusForbidden, "The account has too many groups to fit in a session cookie.", "session cookie too large")
		return
	}
	s.setSessionCookie(w, v, exp)
	s.metrics.logins.WithLabelValues(app.cfg.Name, p.cfg.Name, "allowed").Inc()
	s.record(q, ActionLogin, true, dec.Policy, p.cfg.Name, login.Email, login.Subject)
	s.log.Info("login", "app", app.cfg.Name, "provider", p.cfg.Name, "email", login.Email, "policy", dec.Policy, "ray", q.ray)
	http.Redirect(w, r, st.Return, http.StatusFound)
}

var logoutPage = template.Must(template.New("logout").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Log out</title></head>
<body><h1>Log out</h1>
<form method="post" action="{{.Path}}">
<input type="hidden" name="csrf" value="{{.Token}}">
<button type="submit">Log out of every application</button>
</form></body></html>
`))

// logoutToken is the CSRF token of the logout form: an HMAC of the
// session cookie, so only a page that could read this browser's cookie
// (edgegw's own form) can post a valid one. Without a session the token
// is empty; a logout then has nothing to end.
func (s *Server) logoutToken(r *http.Request) string {
	c, err := r.Cookie(CookieSession)
	if err != nil || c.Value == "" {
		return ""
	}
	m := hmac.New(sha256.New, s.cookies.Load().csrf)
	m.Write([]byte(c.Value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// serveLogout shows a logout form on GET and logs out on POST: it ends the
// user's sessions on every app (tokens issued to the same provider subject
// before now are refused from here on) and closes their WebSockets. A GET
// changes nothing, so a link or an image on another site cannot log
// anyone out; the POST must carry the form's CSRF token and, when the
// browser says where it came from, come from this host.
func (s *Server) serveLogout(q *request) {
	w, r := q.w, q.r
	w.Header().Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Frame-Options", "DENY")
		logoutPage.Execute(w, struct{ Path, Token string }{PathLogout, s.logoutToken(r)})
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "Use the logout form.", http.StatusMethodNotAllowed)
		return
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		http.Error(w, "The logout came from another site.", http.StatusForbidden)
		return
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		http.Error(w, "The logout came from another site.", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	want := s.logoutToken(r)
	if want != "" && !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(want)) {
		http.Error(w, "The logout form is invalid or stale; open the logout page again.", http.StatusForbidden)
		return
	}
	cs := s.session(q)
	w.Header().Del("Set-Cookie") // session may have re-issued it
	s.clearCookie(w, CookieSession, "/")
	if cs != nil {
		now := s.now()
		key := userKey(cs.claims.IdP, cs.claims.Subject)
		s.revoked.revoke(key, now)
		s.saveRevocations()
		s.nudgeLogouts()
		if n := s.ws.revoke(key, now.UnixMilli()); n > 0 {
			s.metrics.wsClosed.WithLabelValues("logout").Add(float64(n))
		}
		s.record(q, ActionLogout, true, "", cs.claims.IdP, cs.claims.Email, cs.claims.Subject)
		s.log.Info("logout", "app", q.app.cfg.Name, "email", cs.claims.Email, "ray", q.ray)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("You are logged out of every application.\n"))
}

// serveIdentity tells the logged-in user who edgegw thinks they are.
func (s *Server) serveIdentity(q *request) {
	q.w.Header().Set("Cache-Control", "no-store")
	cs := s.session(q)
	if cs == nil {
		http.Error(q.w, "Authentication required.", http.StatusUnauthorized)
		return
	}
	c := cs.claims
	q.w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(q.w).Encode(map[string]any{
		"email": c.Email, "groups": c.Groups, "idp": c.IdP, "sub": c.Subject,
		"iat": c.IssuedAt, "exp": c.Expiry, "custom": c.Custom,
	})
}
