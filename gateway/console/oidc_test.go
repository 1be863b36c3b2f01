package console

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/policy"
)

func ssoFor(t *testing.T, issuer string, ps ...policy.Policy) *OIDC {
	t.Helper()
	set, err := policy.Compile(ps)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, p := range ps {
		if p.Action == policy.Allow {
			roles[p.Name] = strings.TrimSuffix(strings.TrimPrefix(p.Name, "role-"), "s")
		}
	}
	return &OIDC{Provider: "corp", Issuer: issuer, ClientID: "console", Policies: set, Roles: roles, GroupsClaim: "groups"}
}

var (
	admins  = policy.Policy{Name: "role-admins", Action: policy.Allow, Include: []policy.Selector{{Group: "netops"}}, Require: []policy.Selector{{IP: "192.0.2.0/24"}}}
	viewers = policy.Policy{Name: "role-viewers", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "corp.example"}}}
	blockB  = policy.Policy{Name: "block-bob", Action: policy.Block, Include: []policy.Selector{{Email: "bob@corp.example"}}}
)

// TestSSOSessionJudgedEveryRequest: a signed-in user's role comes from
// the first matching policy over the identity and the browser's address;
// a reload's new policies apply to live sessions at their next request
// (a new role at once, a blocked user out), and turning single sign-on
// off ends every session it made.
func TestSSOSessionJudgedEveryRequest(t *testing.T) {
	c, err := New(Options{Tokens: &tokenTable{keys: map[string]Identity{}}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetOIDC(ssoFor(t, "https://idp.example", admins, viewers))
	st := c.oidc.Load()
	for _, tt := range []struct {
		name   string
		ident  policy.Identity
		addr   string
		role   string
		denied bool
	}{
		{"netops from the office", policy.Identity{Email: "alice@corp.example", Groups: []string{"netops"}}, "192.0.2.10", RoleAdmin, false},
		{"netops from elsewhere is a viewer", policy.Identity{Email: "alice@corp.example", Groups: []string{"netops"}}, "198.51.100.1", RoleViewer, false},
		{"staff", policy.Identity{Email: "bob@corp.example"}, "192.0.2.10", RoleViewer, false},
		{"outsider", policy.Identity{Email: "eve@evil.example", Groups: []string{"netops"}}, "198.51.100.1", "", true},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.addr + ":5555"
		id, ok := st.decide(tt.ident, remoteIP(r))
		if ok == tt.denied || id.Role != tt.role {
			t.Errorf("%s: %+v %v, want role %q", tt.name, id, ok, tt.role)
		}
		if ok && (id.Name != tt.ident.Email || id.Method != "oidc:corp") {
			t.Errorf("%s: identity %+v", tt.name, id)
		}
	}

	bob := policy.Identity{Email: "bob@corp.example"}
	alice := policy.Identity{Email: "alice@corp.example", Groups: []string{"netops"}}
	bobID, _ := st.decide(bob, remoteIP(&http.Request{RemoteAddr: "192.0.2.10:1"}))
	aliceID, _ := st.decide(alice, remoteIP(&http.Request{RemoteAddr: "192.0.2.10:1"}))
	bobCookie, _ := c.sessions.create(bobID, &bob)
	aliceCookie, _ := c.sessions.create(aliceID, &alice)
	session := func(cookie string) (Identity, error) {
		r := httptest.NewRequest("GET", "/api/v1/status", nil)
		r.RemoteAddr = "192.0.2.10:5555"
		r.AddCookie(&http.Cookie{Name: CookiePlain, Value: cookie})
		return c.Session(r)
	}
	if id, err := session(bobCookie); err != nil || id.Role != RoleViewer {
		t.Fatalf("bob: %+v %v", id, err)
	}
	// A reload: bob blocked, alice's group now only views.
	c.SetOIDC(ssoFor(t, "https://idp.example", blockB, viewers))
	if _, err := session(bobCookie); err != ErrPolicy {
		t.Errorf("blocked bob's session: %v, want ErrPolicy", err)
	}
	if id, err := session(aliceCookie); err != nil || id.Role != RoleViewer {
		t.Errorf("alice after the reload: %+v %v, want viewer", id, err)
	}
	// Single sign-on off: its sessions end; the table is empty.
	c.SetOIDC(nil)
	if _, err := session(aliceCookie); err != ErrPolicy {
		t.Errorf("alice with SSO off: %v", err)
	}
	if n := c.Sessions(); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

// TestSSOCallbackRefusals: the callback refuses a state it did not
// start, one finished in another browser (no or another login-binding
// cookie), and one used before, before it ever asks the provider; with
// single sign-on off the endpoints do not exist.
func TestSSOCallbackRefusals(t *testing.T) {
	var audited []Event
	c, err := New(Options{Tokens: &tokenTable{keys: map[string]Identity{}}, Audit: func(e Event) { audited = append(audited, e) }})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", path, nil)
		for _, ck := range cookies {
			r.AddCookie(ck)
		}
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		return w
	}
	for _, p := range []string{"/console/oidc/login", "/console/oidc/callback?state=x&code=y"} {
		if w := get(p); w.Code != http.StatusNotFound {
			t.Errorf("%s with SSO off: %d", p, w.Code)
		}
	}
	if w := get("/console/login"); strings.Contains(w.Body.String(), `id="sso"`) {
		t.Error("the login page offers single sign-on while it is off")
	}

	c.SetOIDC(ssoFor(t, "https://idp.invalid", viewers))
	if w := get("/console/login"); !strings.Contains(w.Body.String(), "Sign in with corp") {
		t.Errorf("login page: %s", w.Body)
	}
	// A started sign-in, as startOIDC records it (its redirect needs the
	// provider's discovery, which the browser test covers).
	now := time.Now()
	c.pending.add("the-state", &pendingLogin{nonce: "n", verifier: "v", binding: [32]byte(hash("the-binding")),
		redirect: "https://gw/console/oidc/callback", issuer: "https://idp.invalid", expires: now.Add(loginTimeout)}, now)
	binding := &http.Cookie{Name: loginCookiePlain, Value: "the-binding"}
	for _, tt := range []struct {
		name    string
		path    string
		cookies []*http.Cookie
		want    string
	}{
		{"unknown state", "/console/oidc/callback?state=other&code=c", []*http.Cookie{binding}, "unknown"},
		{"no state", "/console/oidc/callback?code=c", []*http.Cookie{binding}, "unknown"},
		{"another browser", "/console/oidc/callback?state=the-state&code=c", []*http.Cookie{{Name: loginCookiePlain, Value: "theirs"}}, "another browser"},
		// The state was used by the refused attempt above: one use only.
		{"replayed", "/console/oidc/callback?state=the-state&code=c", []*http.Cookie{binding}, "unknown"},
	} {
		w := get(tt.path, tt.cookies...)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tt.want) || len(w.Result().Cookies()) > 1 {
			t.Errorf("%s: %d %v %.300s", tt.name, w.Code, w.Result().Cookies(), w.Body)
		}
		for _, ck := range w.Result().Cookies() {
			if ck.Name == CookiePlain {
				t.Errorf("%s: a session cookie was set", tt.name)
			}
		}
	}
	if c.Sessions() != 0 || len(audited) != 4 {
		t.Errorf("%d sessions, %d audited refusals; want 0 and 4", c.Sessions(), len(audited))
	}
	for _, e := range audited {
		if e.Result || e.Action != "login" || e.Actor.Method != "oidc:corp" {
			t.Errorf("audit %+v", e)
		}
	}
}

// TestPendingLoginsBounded: sign-ins in flight expire and never exceed
// maxPending, the oldest giving way; one source holds at most
// maxPendingPerSource of them, so a flood from one host pushes out only
// its own.
func TestPendingLoginsBounded(t *testing.T) {
	p := pendingLogins{m: map[[32]byte]*pendingLogin{}}
	now := time.Now()
	alice := netip.MustParseAddr("192.0.2.1")
	p.add("alice", &pendingLogin{expires: now.Add(loginTimeout), from: alice}, now)
	flooder := netip.MustParseAddr("192.0.2.66")
	for i := range 5000 {
		p.add(fmt.Sprint("flood-", i), &pendingLogin{expires: now.Add(loginTimeout + time.Duration(i)*time.Millisecond), from: flooder}, now)
	}
	if len(p.m) != 1+maxPendingPerSource {
		t.Errorf("%d pending after a flood from one source, want %d", len(p.m), 1+maxPendingPerSource)
	}
	if _, ok := p.take("alice", now); !ok {
		t.Error("a flood from another host pushed alice's sign-in out")
	}
	if _, ok := p.take("flood-4999", now); !ok {
		t.Error("the flooder's newest sign-in is gone")
	}

	p = pendingLogins{m: map[[32]byte]*pendingLogin{}}
	for i := range maxPending + 10 {
		from := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		p.add(url.QueryEscape(time.Duration(i).String()), &pendingLogin{expires: now.Add(time.Duration(i) * time.Millisecond), from: from}, now)
	}
	if len(p.m) != maxPending {
		t.Fatalf("%d pending, want %d", len(p.m), maxPending)
	}
	if _, ok := p.take(time.Duration(0).String(), now); ok {
		t.Error("the oldest did not give way")
	}
	if _, ok := p.take(time.Duration(maxPending+9).String(), now.Add(time.Hour)); ok {
		t.Error("an expired sign-in was taken")
	}
}
