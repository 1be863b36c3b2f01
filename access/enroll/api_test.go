package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

func newPub(t *testing.T) wireguard.Key {
	t.Helper()
	k, err := wireguard.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func (e *env) post(t *testing.T, path string, body []byte) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.srv.Client().Post(e.srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error Error `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	if e.Error.Message == "" {
		t.Fatalf("error without a message: %s", b)
	}
	return e.Error.Code
}

// TestAPI walks the enrollment API through its refusals and successes in
// order, against a real provider's tokens and a registry that can fail.
func TestAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	toks := e.signIn(t, e.op.Username(), 5)
	denied := e.signIn(t, enrolltest.SecondUser, 1)[0]

	key1, foreign, fresh := newPub(t), newPub(t), newPub(t)
	if _, err := e.reg.Enroll(t.Context(), identity.Enrollment{Name: "theirs", Subject: "other#1", PublicKey: foreign}); err != nil {
		t.Fatal(err)
	}
	req := func(tok *Tokens, key wireguard.Key, name string) Request {
		r := Request{PublicKey: key.String(), Name: name}
		if tok != nil {
			r.IDToken, r.AccessToken = tok.IDToken, tok.AccessToken
		}
		return r
	}
	var firstID string
	var firstAddr netip.Addr
	steps := []struct {
		name   string
		req    Request
		raw    string // sent instead of req when set
		before func()
		status int
		code   string
		check  func(*testing.T, *Response)
	}{
		{name: "not json", raw: "{", status: 400, code: CodeBadRequest},
		{name: "unknown field", raw: `{"id_token":"x","public_key":"` + key1.String() + `","name":"a","private_key":"oops"}`, status: 400, code: CodeBadRequest},
		{name: "no token", req: req(nil, key1, "laptop"), status: 401, code: CodeInvalidToken},
		{name: "garbage token", req: Request{IDToken: "a.b.c", PublicKey: key1.String(), Name: "laptop"}, status: 401, code: CodeInvalidToken},
		{name: "bad key", req: Request{IDToken: toks[0].IDToken, PublicKey: "abc", Name: "laptop"}, status: 400, code: CodeBadRequest},
		{name: "low-order key", req: req(toks[0], wireguard.Key{}, "laptop"), status: 400, code: CodeBadRequest},
		{name: "no name", req: req(toks[0], key1, "  "), status: 400, code: CodeBadRequest},
		{name: "control character in name", req: req(toks[0], key1, "a\nb"), status: 400, code: CodeBadRequest},
		{name: "unknown provider", req: func() Request { r := req(toks[0], key1, "laptop"); r.Provider = "nope"; return r }(), status: 400, code: CodeBadRequest},
		{name: "denied by policy", req: req(denied, key1, "laptop"), status: 403, code: CodePolicyDenied},
		{name: "registry down", req: req(toks[0], key1, "laptop"), before: func() { e.reg.SetDown(true) }, status: 503, code: CodeRegistryUnavailable},
		{name: "tunnel not ready", req: req(toks[0], key1, "laptop"), status: 503, code: CodeTunnelUnavailable,
			before: func() { e.reg.SetDown(false); e.tunnelDown.Store(true) }},
		{name: "same sign-in once registry and tunnel are back", req: req(toks[0], key1, "laptop"), before: func() { e.tunnelDown.Store(false) }, status: 200,
			check: func(t *testing.T, r *Response) {
				firstID, firstAddr = r.Device.ID, r.Device.Address
				if r.Device.Email != "test-user@zitadel.ch" || !slices.Equal(r.Device.Groups, []string{"engineering", "staff"}) {
					t.Errorf("identity %q %v", r.Device.Email, r.Device.Groups)
				}
				if r.Device.Address != netip.MustParseAddr("100.96.0.3") { // .2 is the other user's
					t.Errorf("address %s", r.Device.Address)
				}
				if got := r.Interface.Addresses; len(got) != 1 || got[0] != netip.MustParsePrefix("100.96.0.3/32") {
					t.Errorf("interface addresses %v", got)
				}
				if r.Peer.PublicKey != e.gwKey.PublicKey() || r.Peer.Endpoint != "127.0.0.1:51820" || r.Peer.PersistentKeepalive != 25 || len(r.Peer.AllowedIPs) != 2 {
					t.Errorf("peer %+v", r.Peer)
				}
				if d := time.Until(r.Device.Expires); d < 23*time.Hour || d > 25*time.Hour {
					t.Errorf("expires in %s, want key_expiry 24h", d)
				}
				dev, err := e.reg.Get(t.Context(), r.Device.ID)
				if err != nil || dev.Subject != SubjectOf(e.op.Issuer, "id1") || dev.PublicKey != key1 || dev.Name != "laptop" {
					t.Errorf("registry has %+v, %v", dev, err)
				}
				select {
				case id := <-e.changed:
					if id != r.Device.ID {
						t.Errorf("Changed got %s", id)
					}
				default:
					t.Error("Changed was not called")
				}
			}},
		{name: "same sign-in again", req: req(toks[0], fresh, "laptop"), status: 401, code: CodeTokenReused},
		{name: "key of another user", req: req(toks[1], foreign, "laptop"), status: 409, code: CodeKeyInUse},
		{name: "re-enroll the same key", req: req(toks[2], key1, "laptop-renamed"), status: 200,
			check: func(t *testing.T, r *Response) {
				if r.Device.ID != firstID || r.Device.Address != firstAddr || r.Device.Name != "laptop-renamed" {
					t.Errorf("re-enrollment moved the device: %+v", r.Device)
				}
			}},
		{name: "pool exhausted", req: req(toks[3], fresh, "phone"), status: 503, code: CodePoolExhausted,
			before: func() {
				for range 6 { // fill the 8 addresses
					if _, err := e.reg.Enroll(t.Context(), identity.Enrollment{Name: "filler", Subject: "other#2", PublicKey: newPub(t)}); err != nil {
						t.Fatal(err)
					}
				}
			}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before()
			}
			body := []byte(s.raw)
			if s.raw == "" {
				body, _ = json.Marshal(s.req)
			}
			resp, b := e.post(t, PathAPI, body)
			if resp.StatusCode != s.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, s.status, b)
			}
			if s.status != 200 {
				if got := errorCode(t, b); got != s.code {
					t.Fatalf("code %q, want %q: %s", got, s.code, b)
				}
				if s.code == CodeRegistryUnavailable && resp.Header.Get("Retry-After") == "" {
					t.Error("no Retry-After")
				}
				return
			}
			var r Response
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if s.check != nil {
				s.check(t, &r)
			}
		})
	}

	// The admin reads the causes in the log.
	logs := e.logs.String()
	for _, want := range []string{
		`code=policy_denied`, `email=test-user2@zitadel.ch`, `err="no enrollment policy matched"`,
		`code=registry_unavailable`, `device registry unavailable`,
		`code=key_in_use`, `public key already registered to another user`,
		`code=pool_exhausted`, `msg="device enrolled"`, `wireguard device wg0 not up`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// And in the metrics.
	for _, c := range []struct {
		result string
		want   float64
	}{{resultEnrolled, 2}, {CodePolicyDenied, 1}, {CodeKeyInUse, 1}, {CodePoolExhausted, 1}, {CodeRegistryUnavailable, 1}, {CodeTunnelUnavailable, 1}, {CodeTokenReused, 1}, {CodeBadRequest, 7}, {CodeInvalidToken, 2}} {
		if got := testutil.ToFloat64(e.h.metrics.requests.WithLabelValues("device", c.result)); got != c.want {
			t.Errorf("edgegw_enroll_requests_total{via=device,result=%s} = %v, want %v", c.result, got, c.want)
		}
	}
	if problems, err := testutil.CollectAndLint(e.h); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// TestAPITokenTooOld refuses an ID token older than MaxTokenAge even though
// the provider still considers it valid.
func TestAPITokenTooOld(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.MaxTokenAge = time.Nanosecond })
	tok := e.signIn(t, e.op.Username(), 1)[0]
	body, _ := json.Marshal(Request{IDToken: tok.IDToken, AccessToken: tok.AccessToken, PublicKey: newPub(t).String(), Name: "laptop"})
	resp, b := e.post(t, PathAPI, body)
	if resp.StatusCode != 401 || errorCode(t, b) != CodeTokenExpired {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

// TestAPIProviderDown answers 503 when discovery fails, and recovers
// without a restart once the provider is back.
func TestAPIProviderDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.Providers[0].Issuer = "http://127.0.0.1:1" })
	body, _ := json.Marshal(Request{IDToken: "x.y.z", PublicKey: newPub(t).String(), Name: "laptop"})
	resp, b := e.post(t, PathAPI, body)
	if resp.StatusCode != 503 || errorCode(t, b) != CodeProviderUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t, enrolltest.Options{}, nil)
	resp, err := e.srv.Client().Get(e.srv.URL + PathDiscovery)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d Discovery
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	want := Discovery{
		Issuer: e.op.Issuer, ClientID: deviceClient, Scopes: []string{"openid", "email", "profile"}, Provider: "test-op",
		Providers:      []DiscoveryProvider{{Name: "test-op", Issuer: e.op.Issuer, ClientID: deviceClient, Scopes: []string{"openid", "email", "profile"}}},
		EnrollEndpoint: e.srv.URL + PathAPI, BrowserEndpoint: e.srv.URL + PathBrowser,
		StartEndpoint: e.srv.URL + PathStart, PollEndpoint: e.srv.URL + PathPoll, Gateway: "gw-one.test",
	}
	got, _ := json.Marshal(d)
	exp, _ := json.Marshal(want)
	if !bytes.Equal(got, exp) {
		t.Fatalf("discovery\n got %s\nwant %s", got, exp)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Error("discovery is cacheable")
	}
}

func TestNewRefuses(t *testing.T) {
	reg := enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 1)
	tun := func(context.Context) (Tunnel, error) { return Tunnel{}, nil }
	p := Provider{}
	p.Name, p.Issuer, p.ClientID = "a", "https://idp.example", "c"
	for _, c := range []struct {
		name string
		opts Options
		want string
	}{
		{"no registry", Options{Tunnel: tun, Providers: []Provider{p}}, "no device registry"},
		{"no tunnel", Options{Registry: reg, Providers: []Provider{p}}, "no WireGuard tunnel"},
		{"no provider", Options{Registry: reg, Tunnel: tun}, "no identity provider"},
		{"bad policy", Options{Registry: reg, Tunnel: tun, Providers: []Provider{p}, Policies: staffOnly[:1:1]}, ""},
		{"repeated provider", Options{Registry: reg, Tunnel: tun, Providers: []Provider{p, p}}, "repeated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "bad policy" {
				c.opts.Policies = append(c.opts.Policies[:0:0], c.opts.Policies...)
				c.opts.Policies[0].Include = nil
				c.want = "include"
			}
			_, err := New(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestHandles(t *testing.T) {
	for p, want := range map[string]bool{
		PathDiscovery: true, PathAPI: true, PathBrowser: true, PathCallback: true, PathBrowserDevice: true,
		"/enrollment": false, "/api/v1/devices": false, "/": false, "/.well-known/openid-configuration": false,
	} {
		if Handles(p) != want {
			t.Errorf("Handles(%q) = %v", p, !want)
		}
	}
}
