package enroll

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	qrcode "github.com/skip2/go-qrcode"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// The browser path: /enroll → provider login (code flow, PKCE S256, state
// and nonce in a sealed cookie) → /enroll/callback verifies the login and
// the enrollment policies, then shows a page holding a sealed ticket that
// lets this login enroll one device within ticketLifetime.

const (
	loginLifetime  = 10 * time.Minute
	ticketLifetime = 10 * time.Minute
	cookieLogin    = "EDGEGW_Enroll_"
	sealLogin      = "enroll-login"
	sealTicket     = "enroll-ticket"
)

type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Provider string `json:"p"`
	Expires  int64  `json:"e"`
}

type ticket struct {
	ID      string `json:"i"`
	Login   login  `json:"l"`
	Expires int64  `json:"e"`
}

// loginCookie names the sign-in state cookie for a state. Over TLS (always,
// on the Access listener) it has the __Host- prefix, which browsers accept
// only with Secure, Path=/ and no Domain, so no other host under the same
// domain can plant or shadow it.
func loginCookie(r *http.Request, state string) string {
	if r.TLS != nil {
		return "__Host-" + cookieLogin + state[:16]
	}
	return cookieLogin + state[:16]
}

func loginCookiePath(r *http.Request) string {
	if r.TLS != nil {
		return "/"
	}
	return PathCallback
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// securityHeaders lets the page run only its own nonce'd script and style,
// talk only to this gateway, and show only inline (data:) images.
func securityHeaders(w http.ResponseWriter, nonce string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", fmt.Sprintf(
		"default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; connect-src 'self'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'", nonce, nonce))
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func (h *Handler) page(w http.ResponseWriter, status int, name string, data map[string]any) {
	nonce := randomString(16)
	securityHeaders(w, nonce)
	data["Nonce"] = nonce
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		h.log.Error("enroll page", "page", name, "err", err)
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// pageError shows a refusal as a page and logs and counts it as fail does.
func (h *Handler) pageError(w http.ResponseWriter, r *http.Request, l *login, e *apiError) {
	attrs := []any{"via", "browser", "code", e.Code, "remote", r.RemoteAddr}
	if l != nil {
		attrs = append(attrs, "email", l.Email, "provider", l.Provider, "subject", l.Subject)
	}
	if e.cause != nil {
		attrs = append(attrs, "err", e.cause)
	}
	h.log.Warn("enrollment refused", attrs...)
	h.metrics.observe("browser", e.Code, 0)
	h.page(w, e.status, "error", map[string]any{"Code": e.Code, "Message": e.Message})
}

func (h *Handler) serveStart(st *state, w http.ResponseWriter, r *http.Request) {
	if len(st.providers) == 1 {
		u := url.URL{Path: PathBrowserLogin, RawQuery: url.Values{"provider": {st.providers[0].cfg.Name}}.Encode()}
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	type link struct{ Name, URL string }
	var links []link
	for _, p := range st.providers {
		u := url.URL{Path: PathBrowserLogin, RawQuery: url.Values{"provider": {p.cfg.Name}}.Encode()}
		links = append(links, link{p.cfg.Name, u.String()})
	}
	h.page(w, http.StatusOK, "choose", map[string]any{"Links": links})
}

func (h *Handler) serveLogin(st *state, w http.ResponseWriter, r *http.Request) {
	p := st.byName[r.URL.Query().Get("provider")]
	if p == nil {
		h.pageError(w, r, nil, refuse(http.StatusBadRequest, CodeBadRequest, "Unknown identity provider; start again at /enroll.", nil))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	d, err := h.discover(ctx, p)
	if err != nil {
		h.pageError(w, r, nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The identity provider cannot be reached right now; try again shortly.", err))
		return
	}
	ls := &loginState{State: randomString(32), Nonce: randomString(32), Verifier: oauth2.GenerateVerifier(), Provider: p.cfg.Name, Expires: h.now().Add(loginLifetime).Unix()}
	v, err := h.seal.seal(sealLogin, ls)
	if err != nil {
		h.pageError(w, r, nil, refuse(http.StatusInternalServerError, CodeInternal, "Internal error.", err))
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: loginCookie(r, ls.State), Value: v, Path: loginCookiePath(r), MaxAge: int(loginLifetime / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
	})
	cb := baseURL(r) + PathCallback
	http.Redirect(w, r, p.oauth2(d, cb).AuthCodeURL(ls.State, oidc.Nonce(ls.Nonce), oauth2.S256ChallengeOption(ls.Verifier)), http.StatusFound)
}

func (h *Handler) serveCallback(st *state, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(msg string, cause error) {
		h.pageError(w, r, nil, refuse(http.StatusBadRequest, CodeBadRequest, msg+" Start again at /enroll.", cause))
	}
	if e := q.Get("error"); e != "" {
		h.pageError(w, r, nil, refuse(http.StatusUnauthorized, CodeInvalidToken, "The identity provider refused the sign-in.", errors.New("provider error: "+e+": "+q.Get("error_description"))))
		return
	}
	state := q.Get("state")
	if len(state) < 16 {
		bad("The sign-in request is invalid.", errors.New("no state"))
		return
	}
	c, err := r.Cookie(loginCookie(r, state))
	if err != nil {
		bad("The sign-in request is invalid or expired.", errors.New("no login cookie for this state"))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: c.Name, Path: loginCookiePath(r), MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	var ls loginState
	now := h.now()
	switch err := h.seal.open(sealLogin, c.Value, &ls); {
	case err != nil:
		bad("The sign-in request is invalid.", err)
		return
	case subtle.ConstantTimeCompare([]byte(ls.State), []byte(state)) != 1:
		bad("The sign-in request is invalid.", errors.New("state mismatch"))
		return
	case now.Unix() > ls.Expires:
		bad("The sign-in took too long.", errors.New("login state expired"))
		return
	case h.used.Seen(loginUse(ls.Nonce), now):
		// Only looked up here: the nonce is recorded once the provider's
		// ID token for it verified, so forged callbacks record nothing.
		bad("This sign-in was already used.", errors.New("replayed login state"))
		return
	}
	p := st.byName[ls.Provider]
	if p == nil {
		bad("The identity provider is no longer configured.", errors.New("unknown provider "+ls.Provider))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	d, err := h.discover(ctx, p)
	if err != nil {
		h.pageError(w, r, nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The identity provider cannot be reached right now; try again shortly.", err))
		return
	}
	tok, err := p.oauth2(d, baseURL(r)+PathCallback).Exchange(oidc.ClientContext(ctx, h.client), q.Get("code"), oauth2.VerifierOption(ls.Verifier))
	if err != nil {
		h.pageError(w, r, nil, refuse(http.StatusUnauthorized, CodeInvalidToken, "The sign-in could not be completed; start again at /enroll.", fmt.Errorf("code exchange: %w", err)))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	l, err := h.verify(ctx, st, p, d, d.web, raw, tok.AccessToken, ls.Nonce)
	if err != nil {
		h.pageError(w, r, nil, refuse(http.StatusUnauthorized, CodeInvalidToken, "The sign-in could not be verified; start again at /enroll.", err))
		return
	}
	if aerr := h.claim(loginUse(ls.Nonce), time.Unix(ls.Expires, 0).Add(time.Minute), "This sign-in was already used. Start again at /enroll."); aerr != nil {
		h.pageError(w, r, l, aerr)
		return
	}
	// Decide now, so a user who may not enroll is told before making keys;
	// the registration decides again.
	if aerr := h.decide(st, r, l); aerr != nil {
		h.pageError(w, r, l, aerr)
		return
	}
	t, err := h.seal.seal(sealTicket, ticket{ID: randomString(16), Login: *l, Expires: now.Add(ticketLifetime).Unix()})
	if err != nil {
		h.pageError(w, r, l, refuse(http.StatusInternalServerError, CodeInternal, "Internal error.", err))
		return
	}
	h.page(w, http.StatusOK, "enroll", map[string]any{
		"Email": l.Email, "Groups": l.Groups, "Ticket": t, "DevicePath": PathBrowserDevice, "ServerPath": PathBrowserServer,
	})
}

// openTicket checks a ticket from the page and claims it; release gives
// it back when the enrollment did not happen.
func (h *Handler) openTicket(text string) (*ticket, *apiError) {
	var t ticket
	if err := h.seal.open(sealTicket, text, &t); err != nil {
		return nil, refuse(http.StatusUnauthorized, CodeInvalidToken, "This enrollment page is invalid or from before a gateway restart; sign in again at /enroll.", err)
	}
	if h.now().Unix() > t.Expires {
		return nil, refuse(http.StatusUnauthorized, CodeTokenExpired, "This enrollment page has expired; sign in again at /enroll.", errors.New("ticket expired"))
	}
	if aerr := h.claim(ticketUse(t.ID), time.Unix(t.Expires, 0).Add(time.Minute), "This sign-in already enrolled a device; sign in again at /enroll for another."); aerr != nil {
		return nil, aerr
	}
	return &t, nil
}

// loginUse and ticketUse name a browser sign-in's nonce and an enrollment
// ticket in the one-use set.
func loginUse(nonce string) replay.Key { return replay.KeyOf("login", nonce) }
func ticketUse(id string) replay.Key   { return replay.KeyOf("ticket", id) }

// serveBrowserDevice registers a public key the page made with WebCrypto;
// the private key stays in the browser.
func (h *Handler) serveBrowserDevice(st *state, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, refuse(http.StatusMethodNotAllowed, CodeBadRequest, "Use POST.", nil))
		return
	}
	ticketText, pub, name, aerr := parseBrowserDevice(http.MaxBytesReader(w, r.Body, 16<<10))
	if aerr != nil {
		h.fail(w, r, "browser", nil, aerr)
		return
	}
	t, aerr := h.openTicket(ticketText)
	if aerr != nil {
		h.fail(w, r, "browser", nil, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, aerr := h.enroll(ctx, st, r, &t.Login, name, pub)
	if aerr != nil {
		h.used.Remove(ticketUse(t.ID))
		h.fail(w, r, "browser", &t.Login, aerr)
		return
	}
	h.metrics.observe("browser", resultEnrolled, time.Since(start))
	writeJSON(w, http.StatusOK, resp)
}

// browserDevice is the JSON the enrollment page posts to PathBrowserDevice.
type browserDevice struct {
	Ticket    string `json:"ticket"`
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
}

// parseBrowserDevice reads and checks the page's registration request:
// one JSON object, a usable public key, a clean name and a ticket.
func parseBrowserDevice(body io.Reader) (ticket string, pub wgconf.Key, name string, aerr *apiError) {
	var req browserDevice
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return "", pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "The request is not the expected JSON.", err)
	}
	if dec.More() {
		return "", pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "The request has data after its JSON object.", nil)
	}
	if pub, name, aerr = checkDevice(req.PublicKey, req.Name); aerr != nil {
		return "", pub, "", aerr
	}
	if req.Ticket == "" {
		return "", pub, "", refuse(http.StatusUnauthorized, CodeInvalidToken, "This enrollment page is invalid; sign in again at /enroll.", nil)
	}
	return req.Ticket, pub, name, nil
}

// serveServerKey is for devices that cannot run the page's key generation
// or that scan a QR code: the gateway makes the key pair, puts the private
// key in this one response and keeps nothing of it.
func (h *Handler) serveServerKey(st *state, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		h.pageError(w, r, nil, refuse(http.StatusMethodNotAllowed, CodeBadRequest, "Use the button on the enrollment page.", nil))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	priv, err := wgconf.GeneratePrivateKey()
	if err != nil {
		h.pageError(w, r, nil, refuse(http.StatusInternalServerError, CodeInternal, "Internal error.", err))
		return
	}
	_, name, aerr := checkDevice(priv.PublicKey().String(), r.PostFormValue("name"))
	if aerr != nil {
		h.pageError(w, r, nil, aerr)
		return
	}
	t, aerr := h.openTicket(r.PostFormValue("ticket"))
	if aerr != nil {
		h.pageError(w, r, nil, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	resp, aerr := h.enroll(ctx, st, r, &t.Login, name, priv.PublicKey())
	if aerr != nil {
		h.used.Remove(ticketUse(t.ID))
		h.pageError(w, r, &t.Login, aerr)
		return
	}
	var conf bytes.Buffer
	if err := wgconf.WriteClientConfig(&conf, resp.ClientConfig(priv)); err != nil {
		h.pageError(w, r, &t.Login, refuse(http.StatusInternalServerError, CodeInternal, "The device was enrolled but its configuration could not be written; ask the administrator to revoke device "+resp.Device.ID+".", err))
		return
	}
	png, err := qrcode.Encode(conf.String(), qrcode.Medium, 384)
	if err != nil {
		h.log.Warn("enroll: QR code", "device", resp.Device.ID, "err", err)
	}
	h.metrics.observe("browser", resultEnrolled, time.Since(start))
	h.page(w, http.StatusOK, "server-key", map[string]any{
		"Device": resp.Device, "Config": conf.String(),
		"Download": template.URL("data:text/plain;charset=utf-8;base64," + base64.StdEncoding.EncodeToString(conf.Bytes())),
		"QR":       template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)),
		"HasQR":    err == nil,
	})
}
