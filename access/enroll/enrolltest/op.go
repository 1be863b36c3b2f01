// Package enrolltest runs a real OpenID provider for enrollment tests: the
// github.com/zitadel/oidc/v3 `op` package with the library's in-memory
// example storage, on loopback, with the device authorization grant
// (RFC 8628) and the authorization code flow with PKCE. Its login and
// device-approval pages are minimal HTML forms so tests (and headless
// Chromium) can sign in. It also has Registry, an in-memory stand-in for
// the device registry. Both are for tests only; nothing else imports this
// package.
//
// Users (password "verysecure"):
//   - Username(): email test-user@zitadel.ch, groups engineering, staff
//   - "test-user2": email test-user2@zitadel.ch, group contractors
package enrolltest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Password is every test user's password.
const Password = "verysecure"

// SecondUser is the username of the user outside the engineering group.
const SecondUser = "test-user2"

// Options tune the provider; zero values give 5 minutes and 1 second.
type Options struct {
	DeviceLifetime time.Duration // how long a device code stays valid
	PollInterval   time.Duration // the interval the provider asks clients to poll at
}

// OP is a running provider.
type OP struct {
	Issuer string

	users  storage.UserStore
	store  *store
	prov   *op.Provider
	client *http.Client

	jwksFetches atomic.Int64
}

// JWKSFetches is how many times the provider's key set (/keys) was
// fetched.
func (p *OP) JWKSFetches() int64 { return p.jwksFetches.Load() }

// store is the example storage plus a groups claim in userinfo, public
// (secret-less) device clients, and device codes that can be exchanged
// once, as real providers do.
type store struct {
	*storage.Storage
	groups  map[string][]string // by user id
	clients map[string]*storage.Client

	mu       sync.Mutex
	public   map[string]bool
	consumed map[string]bool // device codes already exchanged for tokens
}

func (s *store) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	if g := s.groups[subject]; len(g) > 0 {
		ui.AppendClaims("groups", g)
	}
	return nil
}

func (s *store) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.public[id] {
		return publicClient{c}, nil
	}
	return c, nil
}

func (s *store) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	st, err := s.Storage.GetDeviceAuthorizatonState(ctx, clientID, deviceCode)
	if err != nil || !st.Done || st.Denied {
		return st, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.consumed[deviceCode] {
		return nil, errors.New("device code already used")
	}
	s.consumed[deviceCode] = true
	return st, nil
}

// publicClient is a native client that authenticates with nothing but its
// id, as a command-line tool on a user's machine must, and may use the
// device grant besides the code flow.
type publicClient struct{ op.Client }

func (publicClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (publicClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c publicClient) GrantTypes() []oidc.GrantType {
	return append(c.Client.GrantTypes(), oidc.GrantTypeDeviceCode)
}

// Start runs a provider on a loopback port until the test ends.
func Start(tb testing.TB, o Options) *OP {
	tb.Helper()
	if o.DeviceLifetime == 0 {
		o.DeviceLifetime = 5 * time.Minute
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	users := storage.NewUserStore(issuer)
	clients := map[string]*storage.Client{}
	st := &store{
		Storage:  storage.NewStorageWithClients(users, clients),
		clients:  clients,
		groups:   map[string][]string{"id1": {"engineering", "staff"}, "id2": {"contractors"}},
		public:   map[string]bool{},
		consumed: map[string]bool{},
	}
	cfg := &op.Config{
		CryptoKey:             sha256.Sum256([]byte("edgegw enroll test op")),
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     o.DeviceLifetime,
			PollInterval: o.PollInterval,
			UserFormPath: "/device",
			UserCode:     op.UserCodeBase20,
		},
	}
	prov, err := op.NewProvider(cfg, st, op.StaticIssuer(issuer), op.WithAllowInsecure(), op.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	p := &OP{Issuer: issuer, users: users, store: st, prov: prov, client: &http.Client{Timeout: 10 * time.Second}}
	intercept := op.NewIssuerInterceptor(prov.IssuerFromRequest)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/username", p.loginForm)
	mux.HandleFunc("POST /login/username", intercept.HandlerFunc(p.login))
	mux.HandleFunc("GET /device", p.deviceForm)
	mux.HandleFunc("POST /device/approve", p.deviceApprove)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keys" {
			p.jwksFetches.Add(1)
		}
		prov.ServeHTTP(w, r)
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
	})
	return p
}

// AddWebClient registers a confidential client for the code flow.
func (p *OP) AddWebClient(id, secret string, redirects ...string) {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	p.addLocked(storage.WebClient(id, secret, redirects...), false)
}

// AddDeviceClient registers a public native client allowed the device
// grant and, for the redirects given (loopback ones match any port, as RFC
// 8252 asks), the code flow with PKCE.
func (p *OP) AddDeviceClient(id string, redirects ...string) {
	p.store.mu.Lock()
	defer p.store.mu.Unlock()
	if len(redirects) == 0 {
		redirects = []string{"http://127.0.0.1/callback"}
	}
	p.addLocked(storage.NativeClient(id, redirects...), true)
}

func (p *OP) addLocked(c *storage.Client, public bool) {
	// The example storage reads clients from the map it was created with.
	p.store.public[c.GetID()] = public
	p.store.clients[c.GetID()] = c
}

// Username is the login name of the first user (the one in the
// engineering group); the example store derives it from the issuer host.
func (p *OP) Username() string {
	u, _ := url.Parse(p.Issuer)
	return "test-user@" + u.Hostname()
}

var page = template.Must(template.New("").Parse(`
{{define "login"}}<!doctype html><html><head><meta charset="utf-8"><title>Test OP sign in</title></head><body>
<h1>Sign in</h1>{{if .Error}}<p id="error">{{.Error}}</p>{{end}}
<form method="post" action="/login/username">
<input type="hidden" name="id" value="{{.ID}}">
<label>Username <input id="username" name="username"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button>
</form></body></html>{{end}}
{{define "device"}}<!doctype html><html><head><meta charset="utf-8"><title>Test OP device</title></head><body>
<h1>Approve a device</h1>{{if .Error}}<p id="error">{{.Error}}</p>{{end}}
<form method="post" action="/device/approve">
<label>Code <input id="user_code" name="user_code" value="{{.ID}}"></label>
<label>Username <input id="username" name="username"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button name="action" value="allow">Allow</button><button name="action" value="deny">Deny</button>
</form></body></html>{{end}}
`))

func (p *OP) loginForm(w http.ResponseWriter, r *http.Request) {
	page.ExecuteTemplate(w, "login", struct{ ID, Error string }{r.URL.Query().Get("authRequestID"), ""})
}

func (p *OP) login(w http.ResponseWriter, r *http.Request) {
	id := r.FormValue("id")
	if err := p.store.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		page.ExecuteTemplate(w, "login", struct{ ID, Error string }{id, err.Error()})
		return
	}
	http.Redirect(w, r, op.AuthCallbackURL(p.prov)(r.Context(), id), http.StatusFound)
}

func (p *OP) deviceForm(w http.ResponseWriter, r *http.Request) {
	page.ExecuteTemplate(w, "device", struct{ ID, Error string }{r.URL.Query().Get("user_code"), ""})
}

func (p *OP) deviceApprove(w http.ResponseWriter, r *http.Request) {
	code, user := r.FormValue("user_code"), r.FormValue("username")
	fail := func(status int, err error) {
		w.WriteHeader(status)
		page.ExecuteTemplate(w, "device", struct{ ID, Error string }{code, err.Error()})
	}
	if err := p.store.CheckUsernamePasswordSimple(user, r.FormValue("password")); err != nil {
		fail(http.StatusUnauthorized, err)
		return
	}
	u := p.users.GetUserByUsername(user)
	if _, err := p.store.GetDeviceAuthorizationByUserCode(r.Context(), code); err != nil {
		fail(http.StatusNotFound, err)
		return
	}
	var err error
	if r.FormValue("action") == "allow" {
		err = p.store.CompleteDeviceAuthorization(r.Context(), code, u.ID)
	} else {
		err = p.store.DenyDeviceAuthorization(r.Context(), code)
	}
	if err != nil {
		fail(http.StatusInternalServerError, err)
		return
	}
	fmt.Fprintf(w, "Device %sed. You can return to your device.\n", r.FormValue("action"))
}

// Approve signs in as username at the device form and allows (or, with
// allow false, denies) the device that shows userCode, as a user at a
// browser would.
func (p *OP) Approve(ctx context.Context, userCode, username string, allow bool) error {
	action := "deny"
	if allow {
		action = "allow"
	}
	form := url.Values{"user_code": {userCode}, "username": {username}, "password": {Password}, "action": {action}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Issuer+"/device/approve", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("device approval: %s", resp.Status)
	}
	return nil
}
