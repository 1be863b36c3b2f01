package console

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenTable is a token store in a map: the console's side of the
// contract (the admin server's real store is tested with it in
// gateway/admin).
type tokenTable struct {
	mu   sync.Mutex
	keys map[string]Identity // secret → identity
}

func (t *tokenTable) Login(secret string) (Identity, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id, ok := t.keys[secret]
	return id, ok
}

func (t *tokenTable) Check(key string) (Identity, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range t.keys {
		if id.Key == key {
			return id, true
		}
	}
	return Identity{}, false
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestSessionLifetime: a session ends after its idle time, after its
// maximum age however busy, and the oldest one gives way when the table is
// full; a role change of the token shows at once.
func TestSessionLifetime(t *testing.T) {
	clk := &clock{t: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)}
	toks := &tokenTable{keys: map[string]Identity{
		"secret-a": {Name: "a", Role: RoleAdmin, Key: "ka"},
		"secret-b": {Name: "b", Role: RoleViewer, Key: "kb"},
	}}
	c, err := New(Options{Tokens: toks, Now: clk.now, IdleTimeout: 10 * time.Minute, MaxAge: time.Hour, MaxSessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	login := func(secret string) *http.Cookie {
		t.Helper()
		r := httptest.NewRequest("POST", "/console/login", strings.NewReader(url.Values{"token": {secret}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		cs := w.Result().Cookies()
		if w.Code != http.StatusSeeOther || len(cs) != 1 || cs[0].Name != CookiePlain {
			t.Fatalf("login: %d %v", w.Code, cs)
		}
		return cs[0]
	}
	session := func(ck *http.Cookie) (Identity, error) {
		r := httptest.NewRequest("GET", "/api/v1/status", nil)
		r.AddCookie(ck)
		return c.Session(r)
	}

	a := login("secret-a")
	for range 5 { // used every 9 minutes: alive past the idle time
		clk.add(9 * time.Minute)
		if _, err := session(a); err != nil {
			t.Fatalf("busy session ended: %v", err)
		}
	}
	clk.add(10 * time.Minute)
	if _, err := session(a); err != ErrNoSession {
		t.Errorf("after 10 idle minutes: %v, want ErrNoSession", err)
	}

	a = login("secret-a")
	for range 6 {
		clk.add(9 * time.Minute)
		session(a)
	}
	clk.add(7 * time.Minute) // 61 minutes old
	if _, err := session(a); err != ErrNoSession {
		t.Errorf("after the maximum age: %v, want ErrNoSession", err)
	}

	// A full table drops the least recently used session.
	first := login("secret-a")
	clk.add(time.Minute)
	second := login("secret-b")
	clk.add(time.Minute)
	session(first) // now second is the least recently used
	third := login("secret-b")
	if _, err := session(second); err != ErrNoSession {
		t.Errorf("least recently used session: %v, want ended", err)
	}
	for _, ck := range []*http.Cookie{first, third} {
		if _, err := session(ck); err != nil {
			t.Errorf("a recent session ended: %v", err)
		}
	}
	if n := c.Sessions(); n != 2 {
		t.Errorf("%d sessions, want 2", n)
	}

	// The token's role is read again on every request.
	toks.mu.Lock()
	toks.keys["secret-a"] = Identity{Name: "a", Role: RoleViewer, Key: "ka"}
	toks.mu.Unlock()
	if id, err := session(first); err != nil || id.Role != RoleViewer {
		t.Errorf("after the role change: %+v %v", id, err)
	}
	toks.mu.Lock()
	delete(toks.keys, "secret-a")
	toks.mu.Unlock()
	if _, err := session(first); err != ErrTokenRevoked {
		t.Errorf("after the token went: %v, want ErrTokenRevoked", err)
	}
	if _, err := session(first); err != ErrNoSession {
		t.Errorf("the revoked token's session is still there: %v", err)
	}
}

// TestAssetsEmbedded: every page and asset is in the binary, and the
// pages load only their own script and style (no CDN).
func TestAssetsEmbedded(t *testing.T) {
	c, err := New(Options{Tokens: &tokenTable{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.js", "app.css"} {
		if a, ok := c.assets[name]; !ok || len(a.body) == 0 {
			t.Errorf("%s is not embedded", name)
		}
	}
	for _, p := range []string{"ui/index.html", "ui/login.html", "ui/static/app.js", "ui/static/app.css"} {
		b, err := ui.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// The SVG namespace is a name the DOM needs for the sparklines'
		// elements, never fetched (the CSP would refuse it anyway).
		text := strings.ReplaceAll(string(b), `"http://www.w3.org/2000/svg"`, "")
		for _, bad := range []string{"http://", "https://", "//cdn", "innerHTML", "eval("} {
			if strings.Contains(text, bad) {
				t.Errorf("%s contains %q", p, bad)
			}
		}
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest("GET", "/console/static/app.js", nil))
	etag := w.Header().Get("ETag")
	if w.Code != 200 || etag == "" || !strings.Contains(w.Header().Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("app.js: %d %v", w.Code, w.Header())
	}
	r := httptest.NewRequest("GET", "/console/static/app.js", nil)
	r.Header.Set("If-None-Match", etag)
	w = httptest.NewRecorder()
	c.ServeHTTP(w, r)
	if w.Code != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", w.Code)
	}
}
