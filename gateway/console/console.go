// Package console is edgegw's operator console: a web UI the admin
// listener serves under /console/, on the admin API's own authentication.
//
// The console has no API of its own. Its pages are static files embedded
// in the binary (HTML, CSS and one small script; no CDN, no build step);
// the script reads and changes the appliance through the admin API
// (/api/v1/status, /api/v1/devices, …) with the session cookie, so every
// action runs the API's handlers, role check and audit — there is no
// second path to revoke a device.
//
// Login is single sign-on through an OpenID provider when one is set
// (SetOIDC: code flow with PKCE, state and nonce used once, the callback
// bound to the browser that started it), with Access policies deciding
// whether the user is an admin or a viewer; the policies judge the
// session again on every request, so a reload that blocks a user ends
// their session at once. Break-glass is an admin API token pasted into a
// form. Sessions are remembered in memory and map to a name and a role;
// one ends on logout, after an idle time or a maximum age, and as soon as
// its token is revoked (the token store is asked on every request). Every
// change needs the session's CSRF token and a same-origin request
// (Sec-Fetch-Site or Origin).
//
// The Overview and Tunnels pages follow GET /api/v1/status/events
// (server-sent events, the session checked before every event). Plots
// (throughput, each tunnel's RTT and loss, DNS queries and cache hits,
// the sampled flows) are SVG drawn by the script from the history the
// admin API keeps (/api/v1/series) and from /api/v1/flows; the Flows
// page shows the top talkers, ports and protocols over 1 h or 24 h. The
// Config page edits the configuration file: load or paste, check (the
// problems marked at their lines), the diff, apply, and the history of
// applied files with rollback.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"
)

// Prefix is where the console is served.
const Prefix = "/console/"

// Roles, as the admin API names them.
const (
	RoleAdmin  = "admin"
	RoleViewer = "viewer"
)

// Identity is who a session acts as: an admin token's name and role, or
// a signed-in user's email and the role admin.policies gave it.
type Identity struct {
	Name string
	Role string
	// Method is how the session was made: "token", or "oidc:PROVIDER"
	// for a sign-in through that identity provider.
	Method string
	// Key is what Tokens.Check recognises the token by (opaque to the
	// console; the token's hash). A token revoked and made again under
	// the same name is another token, and does not revive the session.
	Key string
}

// Tokens is the admin API's token store, as the console uses it.
type Tokens interface {
	// Login authenticates a token's text.
	Login(secret string) (Identity, bool)
	// Check returns the token's current identity; false once it is
	// revoked.
	Check(key string) (Identity, bool)
}

// Event is a console login or logout, for the audit trail; Result false
// is a refused one.
type Event struct {
	Action string // "login" or "logout"
	Actor  Identity
	Result bool
	Error  string
	// Remote is the browser's address (the request's RemoteAddr).
	Remote string
}

// Options configure the console.
type Options struct {
	Tokens Tokens
	Logger *slog.Logger
	// Audit receives every login and logout, good or bad.
	Audit func(Event)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// IdleTimeout ends a session not used for this long (default 30 min;
	// an open console polls, so it stays alive while open). MaxAge ends
	// any session after this long (default 12 h).
	IdleTimeout, MaxAge time.Duration
	// MaxSessions bounds the session table (default 256); the least
	// recently used session ends when it is full.
	MaxSessions int
	// HTTPClient reaches the identity provider (single sign-on, SetOIDC);
	// nil: a client with a 15 s timeout.
	HTTPClient *http.Client
}

// Console serves the console's pages, login and logout.
type Console struct {
	opts     Options
	log      *slog.Logger
	sessions *sessions
	mux      *http.ServeMux
	login    *template.Template
	assets   map[string]asset
	oidc     atomic.Pointer[oidcState]
	pending  pendingLogins
	client   *http.Client
}

//go:embed ui
var ui embed.FS

// asset is one embedded file with its validator.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// New builds the console.
func New(opts Options) (*Console, error) {
	if opts.Tokens == nil {
		return nil, errors.New("console: no token store")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Minute
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 12 * time.Hour
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 256
	}
	c := &Console{
		opts: opts,
		log:  opts.Logger,
		sessions: &sessions{now: opts.Now, idle: opts.IdleTimeout, maxAge: opts.MaxAge, maxSess: opts.MaxSessions,
			m: map[[sha256.Size]byte]*session{}},
		assets:  map[string]asset{},
		pending: pendingLogins{m: map[[sha256.Size]byte]*pendingLogin{}},
		client:  opts.HTTPClient,
	}
	if c.client == nil {
		c.client = &http.Client{Timeout: 15 * time.Second}
	}
	var err error
	c.login, err = template.ParseFS(ui, "ui/login.html")
	if err != nil {
		return nil, err
	}
	err = fs.WalkDir(ui, "ui/static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := ui.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		c.assets[path.Base(p)] = asset{body: b, ctype: contentType(p), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"{$}", c.app)
	mux.HandleFunc("GET "+Prefix+"login", c.loginPage)
	mux.HandleFunc("POST "+Prefix+"login", c.doLogin)
	mux.HandleFunc("POST "+Prefix+"logout", c.doLogout)
	mux.HandleFunc("GET "+Prefix+"session", c.sessionInfo)
	mux.HandleFunc("GET "+Prefix+"oidc/login", c.startOIDC)
	mux.HandleFunc("GET "+Prefix+"oidc/callback", c.finishOIDC)
	mux.HandleFunc("GET "+Prefix+"static/{file}", c.static)
	c.mux = mux
	return c, nil
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return "text/html; charset=utf-8"
}

// csp lets the pages load their own script and style and nothing else,
// and never be framed.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves everything under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	c.mux.ServeHTTP(w, r)
}

// Session authenticates an admin API request by its console session: the
// cookie must name a live session whose token is still valid, and a
// change (any method but GET, HEAD and OPTIONS) must pass the CSRF check.
// A session whose token was revoked ends here.
func (c *Console) Session(r *http.Request) (Identity, error) {
	sess, _, err := c.current(r)
	if err != nil {
		return Identity{}, err
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if err := checkCSRF(r, sess); err != nil {
			return Identity{}, err
		}
	}
	return sess.id, nil
}

// HasSession reports whether the request carries a console session cookie
// (live or not): the admin listener authenticates such an API request by
// its session rather than refusing it for want of a bearer token.
func HasSession(r *http.Request) bool {
	_, err := r.Cookie(cookieName(r))
	return err == nil
}

// current finds the request's live session and checks its token.
func (c *Console) current(r *http.Request) (*session, string, error) {
	cookie := sessionCookie(r)
	sess, ok := c.sessions.get(cookie)
	if !ok {
		return nil, "", ErrNoSession
	}
	if sess.sso != nil {
		return c.currentSSO(r, sess, cookie)
	}
	id, ok := c.opts.Tokens.Check(sess.id.Key)
	if !ok {
		c.sessions.remove(cookie)
		c.log.Info("console session ended: its token was revoked", "token", sess.id.Name)
		return nil, "", ErrTokenRevoked
	}
	id.Method = sess.id.Method
	if id != sess.id {
		c.sessions.update(cookie, id)
		sess.id = id
	}
	return sess, cookie, nil
}

// currentSSO judges a signed-in user's session against the policies in
// force, from the request's address: a user they no longer allow is out,
// a changed role applies at once.
func (c *Console) currentSSO(r *http.Request, sess *session, cookie string) (*session, string, error) {
	st := c.oidc.Load()
	var id Identity
	ok := false
	if st != nil && "oidc:"+st.cfg.Provider == sess.id.Method {
		id, ok = st.decide(*sess.sso, remoteIP(r))
	}
	if !ok {
		c.sessions.remove(cookie)
		c.log.Info("console session ended: admin.policies no longer allow its user", "user", sess.id.Name)
		return nil, "", ErrPolicy
	}
	if id != sess.id {
		c.sessions.update(cookie, id)
		sess.id = id
	}
	return sess, cookie, nil
}

// app serves the console's page, or sends a browser without a session to
// the login form.
func (c *Console) app(w http.ResponseWriter, r *http.Request) {
	if _, _, err := c.current(r); err != nil {
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
		return
	}
	b, err := ui.ReadFile("ui/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}

func (c *Console) static(w http.ResponseWriter, r *http.Request) {
	a, ok := c.assets[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Revalidated on every load (304 while the binary is the same).
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	w.Header().Set("Content-Type", a.ctype)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

type loginData struct {
	Error  string
	Secure bool
	// SSO names the identity provider to sign in with; "" when single
	// sign-on is off.
	SSO string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, err := c.current(r); err == nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "")
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	var buf bytes.Buffer
	d := loginData{Error: msg, Secure: r.TLS != nil}
	if st := c.oidc.Load(); st != nil {
		d.SSO = st.cfg.Provider
	}
	if err := c.login.Execute(&buf, d); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// doLogin takes a token from the form and starts a session. A login from
// another site's page is refused (login CSRF would sign the victim in as
// the attacker).
func (c *Console) doLogin(w http.ResponseWriter, r *http.Request) {
	if err := crossOrigin.Check(r); err != nil {
		c.audit(Event{Action: "login", Error: "cross-origin login refused", Remote: r.RemoteAddr})
		c.renderLogin(w, r, http.StatusForbidden, "This login came from another site and was refused.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	secret := strings.TrimSpace(r.PostFormValue("token"))
	id, ok := c.opts.Tokens.Login(secret)
	if !ok {
		c.audit(Event{Action: "login", Error: "not a valid admin token", Remote: r.RemoteAddr})
		c.renderLogin(w, r, http.StatusUnauthorized, "That is not a valid admin token.")
		return
	}
	// A session the browser already had ends: one login, one session.
	if old := sessionCookie(r); old != "" {
		c.sessions.remove(old)
	}
	id.Method = "token"
	cookie, _ := c.sessions.create(id, nil)
	setCookie(w, r, cookie, c.opts.MaxAge)
	c.audit(Event{Action: "login", Actor: id, Result: true, Remote: r.RemoteAddr})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// doLogout ends the session; it is a change, so it needs the CSRF token
// (else any page could log the operator out).
func (c *Console) doLogout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	sess, cookie, err := c.current(r)
	if err != nil {
		setCookie(w, r, "", -1)
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
		return
	}
	if err := checkCSRF(r, sess); err != nil {
		c.audit(Event{Action: "logout", Actor: sess.id, Error: err.Error(), Remote: r.RemoteAddr})
		http.Error(w, "Refused: "+err.Error()+".", http.StatusForbidden)
		return
	}
	c.sessions.remove(cookie)
	setCookie(w, r, "", -1)
	c.audit(Event{Action: "logout", Actor: sess.id, Result: true, Remote: r.RemoteAddr})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// SessionInfo answers GET /console/session: who is logged in, and the
// CSRF token the script sends with every change.
type SessionInfo struct {
	Name string `json:"name"`
	Role string `json:"role"`
	CSRF string `json:"csrf"`
}

func (c *Console) sessionInfo(w http.ResponseWriter, r *http.Request) {
	sess, _, err := c.current(r)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthenticated","message":"Log in again."}}` + "\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(SessionInfo{Name: sess.id.Name, Role: sess.id.Role, CSRF: sess.csrf})
}

func (c *Console) audit(e Event) {
	if c.opts.Audit != nil {
		c.opts.Audit(e)
	}
}

// Sessions counts the live sessions (for tests and status).
func (c *Console) Sessions() int { return c.sessions.len() }
