package access

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

func jwksKids(t *testing.T, e *env) []string {
	t.Helper()
	_, body := e.get(e.client(false), e.url("wiki.test", PathCerts))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatal("JWKS holds a private key")
		}
		kids = append(kids, k.KeyID)
	}
	return kids
}

func assertionKid(t *testing.T, body string) string {
	t.Helper()
	raw := decodeEcho(t, body).Headers.Get(HeaderAssertion)
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Headers[0].KeyID
}

func TestKeyRotationGrace(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	_, body := e.get(c, e.url("wiki.test", "/"))
	k1 := assertionKid(t, body)
	if kids := jwksKids(t, e); len(kids) != 1 || kids[0] != k1 {
		t.Fatalf("JWKS %v, assertion kid %s", kids, k1)
	}
	if err := e.srv.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	kids := jwksKids(t, e)
	if len(kids) != 2 || kids[1] != k1 {
		t.Fatalf("after rotation JWKS %v", kids)
	}
	// The old session still works and is re-signed with the new key.
	resp, body := e.get(c, e.url("wiki.test", "/"))
	if resp.StatusCode != 200 || cookieOf(resp, CookieSession) == nil {
		t.Fatalf("after rotation: %d", resp.StatusCode)
	}
	if k2 := assertionKid(t, body); k2 != kids[0] {
		t.Fatalf("assertion kid %s, want %s", k2, kids[0])
	}
	// Keys survive a restart of the keyring from the state dir.
	kr, err := newKeyring(filepath.Join(e.dir, "access"))
	if err != nil || len(kr.set.Load().byID) != 2 {
		t.Fatalf("reloaded keyring: %v", err)
	}
	// After the grace period the old key is gone from the JWKS.
	cfg := e.srv.snap.Load().cfg
	if _, err := e.srv.keys.rotate(time.Now().Add(cfg.Signing.Grace+time.Minute), jose.ES256, cfg.Signing.Rotation, cfg.Signing.Grace, false); err != nil {
		t.Fatal(err)
	}
	if kids := jwksKids(t, e); len(kids) != 1 || kids[0] == k1 {
		t.Fatalf("after grace JWKS %v", kids)
	}
}

func TestUnreachableIssuerRetried(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	up := newUpstream(t)
	f := &fakeIdP{issuer: "http://" + addr, clientID: "edgegw-test", secret: "s3cret-s3cret-s3cret"}
	e := &env{t: t}
	srv, err := New(defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, 5*time.Second, "Ready names the failed discovery", func() error {
		err := srv.Ready()
		if err != nil && strings.Contains(err.Error(), "provider corp: discovery at http://"+addr+" failed") {
			return nil
		}
		return fmt.Errorf("Ready() = %v", err)
	})
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	startFakeIdP(t, ln)
	e.waitReady()
}

func TestConfigErrorsNameAppAndPolicy(t *testing.T) {
	dir := t.TempDir()
	f := &fakeIdP{issuer: "http://127.0.0.1:1", clientID: "x", secret: "y"}
	for name, tt := range map[string]struct {
		mod  func(c *Config)
		want string
	}{
		"unknown provider":   {func(c *Config) { c.Apps[0].Providers = []string{"nope"} }, `access.apps[0].providers[0]: "nope" is not a provider in identity.providers (app "wiki")`},
		"no include":         {func(c *Config) { c.Apps[1].Policies[0].Include = nil }, `access.apps[1].policies[0].include: missing: a policy needs at least one include selector (use [{everyone: true}] to mean anyone) (app "docs", policy "eng")`},
		"bad selector":       {func(c *Config) { c.Apps[0].Policies[0].Include[0] = policy.Selector{IP: "10.0.0.300/8"} }, `access.apps[0].policies[0].include[0].ip: "10.0.0.300/8" is not a CIDR such as 10.0.0.0/8 or an address (app "wiki", policy "staff")`},
		"unknown token":      {func(c *Config) { c.Apps[0].Policies[1].Include[0].ServiceToken = "cd" }, `access.apps[0].policies[1].include[0].service_token: "cd" is not a service token defined in access.service_tokens (app "wiki", policy "ci")`},
		"identity in bypass": {func(c *Config) { c.Apps[2].Policies[0].Include[0] = policy.Selector{Group: "x"} }, `bypass policies run without a login`},
		"duplicate domain":   {func(c *Config) { c.Apps[1].Domain = "WIKI.test" }, `access.apps[1].domain: "wiki.test" is served by an earlier app (app "docs")`},
		"bad upstream":       {func(c *Config) { c.Apps[0].Upstream = "10.0.0.5:80" }, `access.apps[0].upstream: "10.0.0.5:80" is not an origin URL`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := defaultConfig(t, "http://127.0.0.1:9", dir)
			tt.mod(&cfg)
			_, err := New(cfg, idpConfig(t, f, dir), Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v\nwant %s", err, tt.want)
			}
		})
	}
	bad := identity.Config{Providers: []identity.Provider{{Name: "a", Issuer: "http://sso.example", ClientID: "x"}, {Name: "a", Issuer: "https://sso.example", ClientID: "x", Scopes: []string{"email"}}}}
	err := Check(&Config{Listen: ":443", Apps: defaultConfig(t, "http://127.0.0.1:9", dir).Apps[2:]}, &bad)
	for _, want := range []string{
		`identity.providers[1].name: "a" is used by an earlier provider`,
		`identity.providers[0].issuer: "http://sso.example" must use https`,
		`identity.providers[1].scopes: must include openid`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nwant %s", err, want)
		}
	}
}

func TestSetReloadsInPlace(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	cfg := e.cfg
	cfg.Apps = append([]App(nil), cfg.Apps...)
	cfg.Apps[0].Policies = []policy.Policy{{Name: "nobody", Action: policy.Allow, Include: []policy.Selector{{Email: "bob@corp.example"}}}}
	if err := e.srv.Set(cfg, e.idp); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("after narrowing the policy: %d", resp.StatusCode)
	}
	// A bad config changes nothing and says why.
	bad := cfg
	bad.Apps = append([]App(nil), cfg.Apps...)
	bad.Apps[0].Policies = []policy.Policy{{Name: "x", Action: "permit", Include: []policy.Selector{{Everyone: yes()}}}}
	if err := e.srv.Set(bad, e.idp); err == nil || !strings.Contains(err.Error(), `"permit" is not one of`) {
		t.Fatalf("Set(bad) = %v", err)
	}
	if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != http.StatusForbidden {
		t.Fatal("bad config was applied")
	}
	if got := testutil.ToFloat64(e.srv.metrics.reloadOK); got != 0 {
		t.Fatalf("reload gauge %v", got)
	}
	if err := e.srv.Set(e.cfg, e.idp); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != 200 {
		t.Fatalf("after restoring: %d", resp.StatusCode)
	}
	moved := e.cfg
	moved.Listen = "127.0.0.1:1"
	if err := e.srv.Set(moved, e.idp); err == nil {
		t.Fatal("listen change accepted while running")
	}
}

func TestMetricsLint(t *testing.T) {
	e, _ := standardEnv(t)
	e.login("wiki.test")
	e.srv.metrics.wsClosed.WithLabelValues("logout").Add(0) // a vector shows once it has a child
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if got := testutil.ToFloat64(e.srv.metrics.requests.WithLabelValues("wiki", decAllow)); got < 1 {
		t.Fatalf("allow count %v", got)
	}
}

func TestStreamingAndWebSocket(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-release
			fmt.Fprint(w, "data: second\n\n")
		case "/ws":
			if r.Header.Get("Upgrade") != "websocket" || r.Header.Get(HeaderAssertion) == "" {
				http.Error(w, "want an upgrade with an assertion", 400)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	f := newFakeIdP(t)
	e := startEnv(t, defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), dir, up)
	c := e.login("wiki.test")

	resp, err := c.Get(e.url("wiki.test", "/events"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "data: first\n" {
		t.Fatalf("first event %q", line)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: second") {
		t.Fatalf("rest %q", rest)
	}

	req, _ := http.NewRequest("GET", e.url("wiki.test", "/ws"), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set(HeaderAssertion, "forged")
	ws := *c
	ws.Timeout = 0 // a timeout wraps the body, hiding its Write
	resp, err = ws.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade: %d %s", resp.StatusCode, b)
	}
	rw := resp.Body.(io.ReadWriteCloser)
	defer rw.Close()
	rw.Write([]byte("hello\n"))
	got, _ := bufio.NewReader(rw).ReadString('\n')
	if got != "echo hello\n" {
		t.Fatalf("websocket echo %q", got)
	}
}

func TestEnrollmentConfig(t *testing.T) {
	var got []string
	e := EnrollmentConfig{Enabled: true}
	e.SetDefaults()
	e.Validate(func(f, m string) { got = append(got, f+": "+m) })
	if e.KeyExpiry != DefaultKeyExpiry || len(got) != 1 || !strings.HasPrefix(got[0], "policies: missing") {
		t.Fatalf("%v %v", e.KeyExpiry, got)
	}
	got = nil
	e.Policies = []policy.Policy{{Name: "staff", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "corp.example"}}}, {Name: "b", Action: policy.Bypass, Include: []policy.Selector{{Everyone: yes()}}}}
	e.Validate(func(f, m string) { got = append(got, f+": "+m) })
	if len(got) != 1 || !strings.HasPrefix(got[0], "policies[1].action: bypass is meaningless") {
		t.Fatalf("%v", got)
	}
	// Posture cannot decide enrollment: the device has none yet.
	got = nil
	e.Policies = []policy.Policy{{Name: "staff", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "corp.example"}}, Require: []policy.Selector{{Posture: "device.posture.disk_encrypted"}}}}
	e.Validate(func(f, m string) { got = append(got, f+": "+m) })
	if len(got) != 1 || !strings.HasPrefix(got[0], "policies[0]: a posture selector cannot decide enrollment") {
		t.Fatalf("%v", got)
	}
	e.Policies = []policy.Policy{{Name: "staff", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "corp.example"}}}}
	if !e.GatewayGrantRequired() {
		t.Fatal("require_gateway_grant defaults to false")
	}
	e.Policies = e.Policies[:1]
	for _, c := range []struct {
		set  func(*EnrollmentConfig)
		want string
	}{
		{func(e *EnrollmentConfig) { e.MaxDevicesPerUser = -1 }, "max_devices_per_user: expected 0"},
		{func(e *EnrollmentConfig) { e.Approval = "manager" }, "approval: \"manager\": expected none or admin"},
		{func(e *EnrollmentConfig) { e.NotifyURL = "ftp://x" }, "notify_url: \"ftp://x\" is not an http(s) URL"},
		{func(e *EnrollmentConfig) { e.NotifyURL = "https://" }, "notify_url: "},
		{func(e *EnrollmentConfig) { e.URL = "http://gw.corp.example" }, "url: \"http://gw.corp.example\" is not an https URL"},
		{func(e *EnrollmentConfig) { e.URL = "https://gw.corp.example/enroll" }, "url: "},
		{func(e *EnrollmentConfig) { e.URL = "https://user@gw.corp.example" }, "url: "},
		{func(e *EnrollmentConfig) { e.URL = "gw.corp.example" }, "url: "},
		{func(e *EnrollmentConfig) {
			e.NotifyEmail = &EnrollmentMail{Server: "smtp.corp.example", From: "gw@corp.example"}
		}, "notify_email: server \"smtp.corp.example\" is not host:port"},
		{func(e *EnrollmentConfig) {
			e.NotifyEmail = &EnrollmentMail{Server: "smtp.corp.example:587", From: "gw@corp.example", Admins: []string{"not an address"}}
		}, "notify_email: admin \"not an address\""},
		{func(e *EnrollmentConfig) {
			no := false
			e.NotifyEmail = &EnrollmentMail{Server: "smtp.corp.example:587", From: "gw@corp.example", User: &no}
		}, "notify_email: no recipients"},
		{func(e *EnrollmentConfig) {
			e.NotifyEmail = &EnrollmentMail{Server: "smtp.corp.example:587", From: "gw@corp.example", Username: "gw"}
		}, "notify_email.password_file: username and password_file go together"},
		{func(e *EnrollmentConfig) { e.GatewayName = "gw\nfake" }, "gateway_name: expected at most 64"},
		{func(e *EnrollmentConfig) { e.GatewayName = strings.Repeat("g", 65) }, "gateway_name: expected at most 64"},
	} {
		got = nil
		ec := e
		c.set(&ec)
		ec.Validate(func(f, m string) { got = append(got, f+": "+m) })
		if len(got) != 1 || !strings.HasPrefix(got[0], c.want) {
			t.Errorf("want %q, got %v", c.want, got)
		}
	}
	no := false
	e.RequireGatewayGrant = &no
	if e.GatewayGrantRequired() {
		t.Fatal("require_gateway_grant: false ignored")
	}
}

func TestStateFilesArePrivate(t *testing.T) {
	e, _ := standardEnv(t)
	e.login("wiki.test")
	for _, name := range []string{"signing-keys.json", "cookie.key", "selfsigned.key"} {
		fi, err := os.Stat(filepath.Join(e.dir, "access", name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v", name, fi.Mode().Perm())
		}
	}
}

func TestHTTP2(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.client(false)
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, _ := e.get(c, e.url("open.test", "/"))
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("status %d over %s", resp.StatusCode, resp.Proto)
	}
}

func TestConfigClone(t *testing.T) {
	c := defaultConfig(t, "http://127.0.0.1:9", t.TempDir())
	d := c.Clone()
	if !c.Equal(&d) {
		t.Fatal("clone differs")
	}
	d.Apps[0].Policies[0].Include[0].EmailDomain = "evil.example"
	d.Apps[0].Providers = append(d.Apps[0].Providers, "x")
	if c.Apps[0].Policies[0].Include[0].EmailDomain != "corp.example" || len(c.Apps[0].Providers) != 0 || c.Equal(&d) {
		t.Fatal("clone shares memory with the original")
	}
}

// TestLogoutAfterRotation: a logout with a cookie signed by the previous
// key must not hand back a re-signed cookie.
func TestLogoutAfterRotation(t *testing.T) {
	e, _ := standardEnv(t)
	c := e.login("wiki.test")
	if err := e.srv.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	resp := e.logout(c, "wiki.test")
	cs := resp.Cookies()
	if len(cs) != 1 || cs[0].Name != CookieSession || cs[0].MaxAge >= 0 {
		t.Fatalf("logout set cookies %+v", cs)
	}
}
