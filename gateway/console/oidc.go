package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/policy"
)

// OIDC is single sign-on for the console: an OpenID provider (one of the
// gateway's identity.providers) and the policies that make a signed-in
// user an admin or a viewer.
type OIDC struct {
	// Provider is the identity provider's name, shown on the login page
	// and recorded in the audit trail.
	Provider     string
	Issuer       string
	ClientID     string
	ClientSecret string // empty: a public client (PKCE only)
	Scopes       []string
	GroupsClaim  string
	// Policies decide, with Access semantics (first match wins, no match
	// denies, block denies), who may use the console; Roles maps each
	// allow policy's name to the role it grants.
	Policies *policy.Set
	Roles    map[string]string
	// Claims are the ID-token claims the policies read.
	Claims []string
}

// oidcState is the OIDC configuration in force and what discovery learnt
// of its provider. Discovery is lazy (at the first login) and repeated
// after a failure, so an unreachable provider never holds up the admin
// listener and token logins keep working.
type oidcState struct {
	cfg *OIDC

	mu       sync.Mutex
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	failedAt time.Time
	err      error
}

// rediscoverAfter is how long a failed discovery is remembered before a
// login tries again.
const rediscoverAfter = 10 * time.Second

// discover returns the provider's endpoints, asking it at most once per
// rediscoverAfter after a failure.
func (s *oidcState) discover(ctx context.Context, client *http.Client, clock func() time.Time) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.provider != nil {
		return s.provider, s.verifier, nil
	}
	now := clock()
	if s.err != nil && now.Sub(s.failedAt) < rediscoverAfter {
		return nil, nil, s.err
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), s.cfg.Issuer)
	if err != nil {
		s.err, s.failedAt = fmt.Errorf("discovery at %s: %w", s.cfg.Issuer, err), now
		return nil, nil, s.err
	}
	s.provider = p
	s.verifier = p.Verifier(&oidc.Config{ClientID: s.cfg.ClientID, Now: clock})
	s.err = nil
	return p, s.verifier, nil
}

func (s *oidcState) oauth2(p *oidc.Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret,
		Endpoint: p.Endpoint(), RedirectURL: redirect, Scopes: s.cfg.Scopes,
	}
}

// SetOIDC configures (or, with nil, removes) single sign-on. Sessions
// signed in through a provider are judged against the new policies on
// their next request, so a user the new policies refuse is out at once
// and a changed role shows at once.
func (c *Console) SetOIDC(o *OIDC) {
	if o == nil {
		c.oidc.Store(nil)
		return
	}
	if cur := c.oidc.Load(); cur != nil && sameProvider(cur.cfg, o) {
		// Keep what discovery learnt; only the policies changed.
		cur.mu.Lock()
		next := &oidcState{cfg: o, provider: cur.provider, verifier: cur.verifier}
		cur.mu.Unlock()
		c.oidc.Store(next)
		return
	}
	c.oidc.Store(&oidcState{cfg: o})
}

func sameProvider(a, b *OIDC) bool {
	return a.Issuer == b.Issuer && a.ClientID == b.ClientID
}

// pendingLogin is a sign-in between the redirect to the provider and its
// callback.
type pendingLogin struct {
	nonce, verifier string
	// binding is the SHA-256 of the browser's login cookie: the callback
	// must come back to the browser that started the login.
	binding  [sha256.Size]byte
	redirect string
	issuer   string
	expires  time.Time
	// from is the browser's address: one address holds at most
	// maxPendingPerSource sign-ins, so that one host cannot push every
	// other sign-in out of the table.
	from netip.Addr
}

// pendingLogins holds sign-ins in flight, keyed by the SHA-256 of their
// state; each is used once. Bounded: when full, the oldest goes.
type pendingLogins struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*pendingLogin
}

// Limits of sign-ins in flight.
const (
	loginTimeout        = 10 * time.Minute
	maxPending          = 1024
	maxPendingPerSource = 16
)

func (p *pendingLogins) add(state string, l *pendingLogin, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fromSource := 0
	for k, v := range p.m {
		if now.After(v.expires) {
			delete(p.m, k)
		} else if v.from == l.from {
			fromSource++
		}
	}
	// The oldest sign-in gives way: this source's own when it holds its
	// share, else anyone's when the table is full.
	if fromSource >= maxPendingPerSource || len(p.m) >= maxPending {
		var oldest [sha256.Size]byte
		var at time.Time
		for k, v := range p.m {
			if (fromSource < maxPendingPerSource || v.from == l.from) && (at.IsZero() || v.expires.Before(at)) {
				oldest, at = k, v.expires
			}
		}
		delete(p.m, oldest)
	}
	p.m[sha256.Sum256([]byte(state))] = l
}

// take removes and returns the sign-in of a state, if it is live.
func (p *pendingLogins) take(state string, now time.Time) (*pendingLogin, bool) {
	if state == "" || len(state) > 128 {
		return nil, false
	}
	k := sha256.Sum256([]byte(state))
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.m[k]
	delete(p.m, k)
	if !ok || now.After(l.expires) {
		return nil, false
	}
	return l, true
}

// Login-binding cookie names. It must reach the callback, a navigation
// from the provider's site, so it is SameSite=Lax; it only ties the
// callback to the browser that started the sign-in and grants nothing.
const (
	loginCookieSecure = "__Host-edgegw_console_login"
	loginCookiePlain  = "edgegw_console_login"
)

func loginCookieName(r *http.Request) string {
	if r.TLS != nil {
		return loginCookieSecure
	}
	return loginCookiePlain
}

// callbackURL is where the provider sends the browser back: this
// listener, as the browser named it (the admin listener has checked the
// Host header against its own names).
func callbackURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + Prefix + "oidc/callback"
}

// startOIDC sends the browser to the provider with a fresh state, nonce
// and PKCE verifier.
func (c *Console) startOIDC(w http.ResponseWriter, r *http.Request) {
	st := c.oidc.Load()
	if st == nil {
		http.NotFound(w, r)
		return
	}
	p, _, err := st.discover(r.Context(), c.client, c.opts.Now)
	if err != nil {
		c.log.Warn("console sign-in: the identity provider is unreachable", "provider", st.cfg.Provider, "err", err)
		c.renderLogin(w, r, http.StatusBadGateway, "Signing in with "+st.cfg.Provider+" is not possible now: the provider did not answer. Try again, or log in with a token.")
		return
	}
	state, nonce, binding := randomString(), randomString(), randomString()
	verifier := oauth2.GenerateVerifier()
	redirect := callbackURL(r)
	now := c.opts.Now()
	c.pending.add(state, &pendingLogin{
		nonce: nonce, verifier: verifier, binding: sha256.Sum256([]byte(binding)),
		redirect: redirect, issuer: st.cfg.Issuer, expires: now.Add(loginTimeout), from: remoteIP(r),
	}, now)
	http.SetCookie(w, &http.Cookie{
		Name: loginCookieName(r), Value: binding, Path: "/", MaxAge: int(loginTimeout / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	http.Redirect(w, r, st.oauth2(p, redirect).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusSeeOther)
}

// ssoLogin is who the provider says signed in.
type ssoLogin struct {
	subject string
	ident   policy.Identity
}

// finishOIDC is the provider's callback: the state must be one this
// console started, in this browser, not used before; the code is traded
// for tokens with the PKCE verifier; the ID token is verified (signature,
// issuer, audience, expiry, nonce); the policies decide the role.
func (c *Console) finishOIDC(w http.ResponseWriter, r *http.Request) {
	st := c.oidc.Load()
	if st == nil {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	now := c.opts.Now()
	refuse := func(status int, who, reason, msg string) {
		c.audit(Event{Action: "login", Actor: Identity{Name: who, Method: "oidc:" + st.cfg.Provider}, Error: reason, Remote: r.RemoteAddr})
		c.renderLogin(w, r, status, msg)
	}
	pl, ok := c.pending.take(q.Get("state"), now)
	clearLoginCookie := &http.Cookie{Name: loginCookieName(r), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}
	if !ok {
		refuse(http.StatusBadRequest, "", "unknown, used or expired sign-in state", "This sign-in is unknown, was already used or took too long. Sign in again.")
		return
	}
	ck, err := r.Cookie(loginCookieName(r))
	if err != nil || subtle.ConstantTimeCompare(pl.binding[:], hash(ck.Value)) != 1 {
		refuse(http.StatusBadRequest, "", "sign-in finished in another browser", "This sign-in was started in another browser. Sign in again.")
		return
	}
	http.SetCookie(w, clearLoginCookie)
	if e := q.Get("error"); e != "" {
		refuse(http.StatusUnauthorized, "", "provider refused: "+e, "The identity provider refused the sign-in ("+e+").")
		return
	}
	if pl.issuer != st.cfg.Issuer {
		refuse(http.StatusBadRequest, "", "the provider changed during the sign-in", "The identity provider changed during the sign-in. Sign in again.")
		return
	}
	l, err := c.exchange(r.Context(), st, pl, q.Get("code"))
	if err != nil {
		c.log.Warn("console sign-in failed", "provider", st.cfg.Provider, "err", err)
		refuse(http.StatusUnauthorized, "", err.Error(), "The sign-in could not be verified. Sign in again.")
		return
	}
	id, ok := st.decide(l.ident, remoteIP(r))
	if !ok {
		refuse(http.StatusForbidden, l.ident.Email, "no admin.policies allow "+l.ident.Email,
			"You ("+l.ident.Email+") signed in, but no policy lets you use this console.")
		return
	}
	if old := sessionCookie(r); old != "" {
		c.sessions.remove(old)
	}
	cookie, _ := c.sessions.create(id, &l.ident)
	setCookie(w, r, cookie, c.opts.MaxAge)
	c.audit(Event{Action: "login", Actor: id, Result: true, Remote: r.RemoteAddr})
	// Not a redirect: the provider's page started this navigation, and a
	// browser does not send a SameSite=Strict cookie on a redirect chain
	// that began on another site. The page moves on by itself, same-site.
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	continueTmpl.Execute(w, Prefix)
}

var continueTmpl = template.Must(template.New("continue").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{.}}"><title>edgegw console</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/console/static/app.css"></head>
<body class="login"><main><p>Signed in. <a href="{{.}}" id="continue">Continue to the console</a>.</p></main></body></html>
`))

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// exchange trades the code for tokens and reads who signed in, asking
// userinfo for the email or groups the ID token lacks.
func (c *Console) exchange(ctx context.Context, st *oidcState, pl *pendingLogin, code string) (*ssoLogin, error) {
	if code == "" {
		return nil, errors.New("the callback has no code")
	}
	p, v, err := st.discover(ctx, c.client, c.opts.Now)
	if err != nil {
		return nil, err
	}
	ctx = oidc.ClientContext(ctx, c.client)
	tok, err := st.oauth2(p, pl.redirect).Exchange(ctx, code, oauth2.VerifierOption(pl.verifier))
	if err != nil {
		return nil, fmt.Errorf("code exchange: %w", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return nil, errors.New("the provider returned no id_token")
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("id token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(pl.nonce)) != 1 {
		return nil, errors.New("id token: the nonce is not this sign-in's")
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, fmt.Errorf("id token: %w", err)
		}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("id token claims: %w", err)
	}
	_, hasEmail := claims["email"]
	_, hasGroups := claims[st.cfg.GroupsClaim]
	if (!hasEmail || !hasGroups) && p.UserInfoEndpoint() != "" {
		ui, err := p.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, fmt.Errorf("userinfo: %w", err)
		}
		if ui.Subject != idt.Subject {
			return nil, errors.New("userinfo: the subject differs from the id token's")
		}
		extra := map[string]any{}
		if err := ui.Claims(&extra); err == nil {
			for k, v := range extra {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	l := &ssoLogin{subject: idt.Subject, ident: identityFromClaims(claims, st.cfg.GroupsClaim, st.cfg.Claims)}
	if l.ident.Email == "" {
		return nil, errors.New("the provider sent no verified email address")
	}
	return l, nil
}

// identityFromClaims reads the email (unless the provider marks it
// unverified), the groups and the claims the policies read. Claims are
// the provider's JSON: what is not a string or a list of strings is
// ignored.
func identityFromClaims(claims map[string]any, groupsClaim string, want []string) policy.Identity {
	id := policy.Identity{Claims: map[string][]string{}}
	if e, _ := claims["email"].(string); e != "" && claims["email_verified"] != false && claims["email_verified"] != "false" {
		id.Email = strings.ToLower(e)
	}
	id.Groups = policy.ClaimStrings(claims[groupsClaim])
	for _, name := range want {
		if v := policy.ClaimStrings(claims[name]); len(v) > 0 {
			id.Claims[name] = v
		}
	}
	return id
}

// decide runs the policies for a signed-in user at an address: the role
// of the allow policy that matched first, or false.
func (s *oidcState) decide(ident policy.Identity, addr netip.Addr) (Identity, bool) {
	d := s.cfg.Policies.Evaluate(policy.Input{Identity: &ident, Network: policy.Network{Addr: addr}})
	role := s.cfg.Roles[d.Policy]
	if !d.Allowed || (role != RoleAdmin && role != RoleViewer) {
		return Identity{}, false
	}
	return Identity{Name: ident.Email, Role: role, Method: "oidc:" + s.cfg.Provider}, true
}
