package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/edgegw/edgegw/access/policy"
)

// Cookie names. A Secure cookie (the listener is TLS) takes the __Host-
// prefix, so the browser keeps it to this host, path / and HTTPS, and no
// sibling subdomain can set or shadow it. A plain-HTTP cookie cannot carry
// that prefix (browsers refuse __Host- without Secure), so on a loopback
// listener without TLS the plain name is used.
const (
	CookieSecure = "__Host-edgegw_console"
	CookiePlain  = "edgegw_console"
)

// HeaderCSRF carries a session's CSRF token on every change the console's
// script asks for; a form sends it as the field FieldCSRF.
const (
	HeaderCSRF = "X-CSRF-Token"
	FieldCSRF  = "csrf"
)

// Errors of Session, which the admin listener answers as 401 or 403.
var (
	// ErrNoSession: no session cookie, or one that names no live session.
	ErrNoSession = errors.New("no console session")
	// ErrTokenRevoked: the session's token was revoked; the session ended.
	ErrTokenRevoked = errors.New("the console session's token was revoked")
	// ErrPolicy: the session was signed in through the identity provider
	// and admin.policies no longer let its user in (or single sign-on was
	// turned off); the session ended.
	ErrPolicy = errors.New("admin.policies no longer allow the console session's user")
	// ErrCSRF: a change without the session's CSRF token, or from another
	// site.
	ErrCSRF = errors.New("cross-site request or missing CSRF token")
)

// session is one logged-in browser.
type session struct {
	id Identity
	// sso is who signed in through the identity provider, judged again
	// by the policies on every request; nil for a token's session.
	sso      *policy.Identity
	csrf     string
	created  time.Time
	lastSeen time.Time
}

// sessions is the in-memory session table, keyed by the SHA-256 of the
// cookie value (so that the table holds nothing a browser could present).
// Sessions do not survive a restart: the operator logs in again.
type sessions struct {
	now     func() time.Time
	idle    time.Duration
	maxAge  time.Duration
	maxSess int

	mu sync.Mutex
	m  map[[sha256.Size]byte]*session
}

func randomString() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session for id and returns its cookie value. When the
// table is full the least recently used session ends.
func (s *sessions) create(id Identity, sso *policy.Identity) (string, *session) {
	cookie := randomString()
	now := s.now()
	sess := &session{id: id, sso: sso, csrf: randomString(), created: now, lastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if s.expired(v, now) {
			delete(s.m, k)
		}
	}
	if len(s.m) >= s.maxSess {
		var oldest [sha256.Size]byte
		var at time.Time
		for k, v := range s.m {
			if at.IsZero() || v.lastSeen.Before(at) {
				oldest, at = k, v.lastSeen
			}
		}
		delete(s.m, oldest)
	}
	s.m[sha256.Sum256([]byte(cookie))] = sess
	return cookie, sess
}

func (s *sessions) expired(v *session, now time.Time) bool {
	return now.Sub(v.lastSeen) >= s.idle || now.Sub(v.created) >= s.maxAge
}

// get returns the live session of a cookie value and marks it used; an
// expired one is deleted.
func (s *sessions) get(cookie string) (*session, bool) {
	if cookie == "" || len(cookie) > 128 {
		return nil, false
	}
	k := sha256.Sum256([]byte(cookie))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	if !ok {
		return nil, false
	}
	if s.expired(v, now) {
		delete(s.m, k)
		return nil, false
	}
	v.lastSeen = now
	cp := *v
	return &cp, true
}

// update replaces a session's identity (its token's role changed).
func (s *sessions) update(cookie string, id Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[sha256.Sum256([]byte(cookie))]; ok {
		v.id = id
	}
}

// remove ends a session.
func (s *sessions) remove(cookie string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(cookie)))
}

// len counts the sessions, expired ones included until swept.
func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// cookieName is the session cookie's name on the request's listener.
func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return CookieSecure
	}
	return CookiePlain
}

// sessionCookie reads the request's session cookie value.
func sessionCookie(r *http.Request) string {
	c, err := r.Cookie(cookieName(r))
	if err != nil {
		return ""
	}
	return c.Value
}

// setCookie sets (maxAge > 0) or clears (maxAge < 0) the session cookie:
// HttpOnly (scripts never see it), SameSite=Strict (no other site's page
// makes the browser send it), Path=/ (the API is outside /console/),
// Secure with the __Host- prefix on TLS.
func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge time.Duration) {
	c := &http.Cookie{
		Name: cookieName(r), Value: value, Path: "/",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
		MaxAge: int(maxAge / time.Second),
	}
	if maxAge < 0 {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// crossOrigin refuses a change from another origin (Sec-Fetch-Site, else
// Origin against Host), as net/http's CrossOriginProtection decides.
var crossOrigin = http.NewCrossOriginProtection()

// checkCSRF passes a change that is same-origin and carries the session's
// CSRF token in HeaderCSRF or the form field FieldCSRF.
func checkCSRF(r *http.Request, sess *session) error {
	if err := crossOrigin.Check(r); err != nil {
		return ErrCSRF
	}
	got := r.Header.Get(HeaderCSRF)
	if got == "" && r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
		got = r.PostFormValue(FieldCSRF)
	}
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
		return ErrCSRF
	}
	return nil
}
