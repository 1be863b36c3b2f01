package admin

import (
	"context"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/edgegw/edgegw/access/identity"
	accesspolicy "github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/console"
	"github.com/edgegw/edgegw/gateway/dns"
	headless "github.com/edgegw/edgegw/gateway/netlab/testkit/browser"
	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// chromium is headless Chromium on the env's LAN host, reaching the
// listener as https://gw.corp.test:9100 (the test CA's certificate).
type chromium struct {
	t     *testing.T
	netns string // the LAN host's namespace
	shots string // $EDGEGW_SCREENSHOTS
}

const consoleBase = "https://gw.corp.test:9100"

func newChromium(t *testing.T, e *env) *chromium {
	t.Helper()
	return &chromium{t: t, netns: e.lan.Name(), shots: os.Getenv("EDGEGW_SCREENSHOTS")}
}

// session runs a browser of its own (a fresh profile, so a fresh cookie
// jar); done fails the test on any JavaScript exception or console error
// of the console's pages (the provider's pages, which the messages name,
// are not ours to judge),
// except the browser's report of a refused request to a URL containing
// one of refused: a refusal the test provokes.
func (c *chromium) session(name string, refused ...string) (ctx context.Context, done func()) {
	t := c.t
	actx, cancelAlloc := headless.Start(t, headless.Options{Netns: c.netns,
		Hosts: map[string]string{"gw.corp.test": gwAddr}, Width: 1280, Height: 800})
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // start the browser
		cancel()
		cancelAlloc()
		t.Fatal(err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	pageErrors := headless.PageErrors(ctx, func(m chromedp.ConsoleMessage) bool {
		expected := !m.IsException() && strings.HasPrefix(m.String(), "error: Failed to load resource") &&
			slices.ContainsFunc(refused, func(u string) bool { return strings.Contains(m.URL, u) })
		return (m.URL == "" || strings.HasPrefix(m.URL, consoleBase)) && !expected
	})
	return ctx, func() {
		cancelT()
		cancel()
		cancelAlloc()
		for _, p := range pageErrors() {
			t.Errorf("%s's page: %s", name, p)
		}
	}
}

func (c *chromium) screenshot(ctx context.Context, name string) {
	if c.shots == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		c.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.MkdirAll(c.shots, 0o755); err == nil {
		os.WriteFile(filepath.Join(c.shots, "console-"+name+".png"), png, 0o644)
	}
}

// poll waits until expr is true in the page; navigations may end a poll
// on the way, so it polls again until the deadline.
func (c *chromium) poll(ctx context.Context, what, expr string) {
	c.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second)))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			c.t.Fatalf("%s: %v (at %s):\n%.1500s", what, err, loc, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *chromium) text(ctx context.Context, id string) string {
	c.t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		c.t.Fatalf("#%s: %v", id, err)
	}
	return s
}

// cookie returns the browser's cookie of that name for the console.
func (c *chromium) cookie(ctx context.Context, name string) *network.Cookie {
	c.t.Helper()
	res, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{consoleBase + "/console/"}})
	})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, ck := range res.Cookies {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

// groupsBySubject is the zitadel example storage with a groups claim per
// user in userinfo, as a directory-backed provider sends it.
type groupsBySubject struct {
	*storage.Storage
	groups map[string][]string // subject → groups
}

func (s groupsBySubject) SetUserinfoFromToken(ctx context.Context, ui *zoidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	ui.AppendClaims("groups", s.groups[subject])
	return nil
}

// startOP runs an OpenID provider (github.com/zitadel/oidc/v3's example
// OP: a real code flow with a username and password form) on the gateway
// host, where the browser on the LAN and the gateway both reach it. Its
// users: test-user@10.9.0.1 (test-user@zitadel.ch, group netops) and
// test-user2 (test-user2@zitadel.ch, group helpdesk), password
// "verysecure"; the client "console" may come back to the console's
// callback.
func startOP(t *testing.T, e *env) (issuer string) {
	t.Helper()
	ln, err := e.gw.Listen("tcp", gwAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	issuer = "http://" + ln.Addr().String()
	clients := map[string]*storage.Client{
		"console": storage.WebClient("console", "console-secret", consoleBase+console.Prefix+"oidc/callback"),
	}
	st := groupsBySubject{storage.NewStorageWithClients(storage.NewUserStore(issuer), clients),
		map[string][]string{"id1": {"netops", "staff"}, "id2": {"helpdesk", "staff"}}}
	srv := &http.Server{Handler: exampleop.SetupServer(issuer, st, nil, false)}
	go srv.Serve(ln) // owned by the test: closed at cleanup
	t.Cleanup(func() { srv.Close() })
	return issuer
}

// ssoConfig is the admin section with single sign-on through the OP:
// netops are admins, helpdesk viewers, and whoever is in helpdeskBlock's
// place is refused.
func ssoConfig(e *env, issuer string, policies ...RolePolicy) Config {
	secret := filepath.Join(e.dir, "console.secret")
	if err := os.WriteFile(secret, []byte("console-secret\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	cfg := e.cfg
	cfg.OIDC = &OIDC{Provider: "corp", IdP: &identity.Provider{Name: "corp", Issuer: issuer, ClientID: "console", ClientSecretFile: secret}}
	cfg.Policies = policies
	return cfg
}

var (
	netopsAdmins = RolePolicy{Role: "admin", Policy: accesspolicy.Policy{Name: "netops", Action: accesspolicy.Allow,
		Include: []accesspolicy.Selector{{Group: "netops"}}, Require: []accesspolicy.Selector{{IP: "10.9.0.0/24"}}}}
	helpdeskViewers = RolePolicy{Role: "viewer", Policy: accesspolicy.Policy{Name: "helpdesk", Action: accesspolicy.Allow,
		Include: []accesspolicy.Selector{{Group: "helpdesk"}}}}
	helpdeskBlocked = RolePolicy{Policy: accesspolicy.Policy{Name: "no-helpdesk", Action: accesspolicy.Block,
		Include: []accesspolicy.Selector{{Group: "helpdesk"}}}}
)

// TestChromiumConsoleSSO signs in to the console through a real OpenID
// provider in headless Chromium on a LAN host: the login page offers the
// provider; an admin (group netops) signs in with the provider's form,
// gets a __Host- session cookie (HttpOnly, Secure, SameSite=Strict),
// sees the console as admin and revokes a device (audited as the user,
// through the UI); a viewer (group helpdesk) sees no revoke button, and
// the server refuses the revoke its page asks for with its own CSRF
// token; a reload whose policies block helpdesk ends the viewer's session
// at its next poll (the page goes back to the login); logout ends the
// admin's. Any JavaScript error fails the test.
func TestChromiumConsoleSSO(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	var fwCalls atomic.Uint64
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}}, func(e *env, o *Options) {
		// The gateway reaches the provider from its own host's network.
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: e.gw.DialContext}}
		// The gateway's firewall and configuration, as the gateway hands
		// them over: counters that grow by 50 packets a read.
		o.Firewall = func() (FirewallView, error) {
			n := fwCalls.Add(1)
			return FirewallView{
				Rules: []FirewallRule{
					{ID: "wan-no-ssh", Action: "block", Expression: `ingress == "wan" and tcp.dstport == 22`, Packets: 50 * n, Bytes: 3000 * n},
					{ID: "staff-web", Action: "allow", Expression: `identity.groups contains "staff"`, Packets: 7, Bytes: 900},
				},
				Lists: []FirewallList{{Name: "blocked", Entries: 1234}},
			}, nil
		}
		o.RunningConfig = func() (string, any) {
			return "/etc/edgegw/edgegw.yaml", map[string]any{
				"appliance": map[string]any{"name": "branch-office"},
				"identity":  map[string]any{"store": "postgres://edgegw:hunter2@db.corp.example/edgegw?sslmode=verify-full"},
				"tunnels":   map[string]any{"ipsec": []any{map[string]any{"name": "branch", "psk": "s3cr3t-psk"}}},
			}
		}
	})
	issuer := startOP(t, e)
	cfg := ssoConfig(e, issuer, netopsAdmins, helpdeskViewers)
	if err := e.gw.Do(func() error { return e.srv.Set(cfg) }); err != nil {
		t.Fatal(err)
	}
	k, _ := wireguard.GeneratePrivateKey()
	dev, err := e.reg.Enroll(t.Context(), identity.Enrollment{Name: "bob-laptop", Email: "bob@corp.test", Subject: "bob", PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	b := newChromium(t, e)

	signIn := func(ctx context.Context, user string) {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Navigate(consoleBase+"/"),
			chromedp.WaitVisible(chromedp.ID("sso")),
		)
		if err != nil {
			t.Fatalf("login page: %v", err)
		}
		if got := b.text(ctx, "sso"); got != "Sign in with corp" {
			t.Errorf("the sign-in link says %q", got)
		}
		b.screenshot(ctx, "sso-login")
		err = chromedp.Do(ctx,
			chromedp.Click(chromedp.ID("sso")),
			chromedp.WaitVisible(chromedp.ID("username")),
		)
		if err != nil {
			t.Fatalf("the provider's form: %v", err)
		}
		if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.HasPrefix(loc, issuer) {
			t.Fatalf("the sign-in went to %s, not the provider %s", loc, issuer)
		}
		if c := b.cookie(ctx, "__Host-edgegw_console_login"); c == nil || !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteLax {
			t.Errorf("login-binding cookie: %+v", c)
		}
		err = chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.ID("username"), user),
			chromedp.SendKeys(chromedp.ID("password"), "verysecure"),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		)
		if err != nil {
			t.Fatalf("the provider's form: %v", err)
		}
		b.poll(ctx, "the console after signing in as "+user, `!!document.getElementById("updated") && Number(document.getElementById("updated").dataset.polls) >= 1`)
	}

	// The admin.
	actx, adone := b.session("sso-admin")
	defer adone()
	signIn(actx, "test-user@"+gwAddr)
	if got := b.text(actx, "who") + " " + b.text(actx, "role"); got != "test-user@zitadel.ch admin" {
		t.Errorf("signed in as %q", got)
	}
	c := b.cookie(actx, console.CookieSecure)
	if c == nil || !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
		t.Errorf("session cookie: %+v; want __Host-, HttpOnly, Secure, SameSite=Strict, Path=/", c)
	}
	if c := b.cookie(actx, "__Host-edgegw_console_login"); c != nil {
		t.Errorf("the login-binding cookie outlived the sign-in: %+v", c)
	}
	b.screenshot(actx, "sso-overview")
	err = chromedp.Do(actx,
		chromedp.Click(chromedp.ID("nav-devices")),
		chromedp.WaitVisible(chromedp.CSS(`[data-revoke="`+dev.ID+`"]`)),
		chromedp.Click(chromedp.CSS(`[data-revoke="`+dev.ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-confirm="`+dev.ID+`"]`)),
		chromedp.Click(chromedp.CSS(`[data-confirm="`+dev.ID+`"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	b.poll(actx, "the revoke's message", `document.getElementById("device-message").textContent.startsWith("Revoked bob-laptop")`)
	if d, _ := e.reg.Get(t.Context(), dev.ID); !d.Revoked {
		t.Fatal("the registry does not have the device revoked")
	}
	var revoked, signedIn bool
	for _, ev := range e.audit() {
		if ev.Action == "revoke" && ev.ResourceID == dev.ID && ev.Result && ev.Actor.ID == "test-user@zitadel.ch" && ev.Actor.Interface == "UI" && ev.Actor.Role == RoleAdmin {
			revoked = true
		}
		if ev.Action == "login" && ev.Result && ev.Actor.ID == "test-user@zitadel.ch" && ev.Actor.Context == "oidc" {
			signedIn = true
		}
	}
	if !revoked || !signedIn {
		t.Errorf("audit trail: revoke by the signed-in admin %v, its sign-in %v: %+v", revoked, signedIn, e.audit())
	}

	// The DNS, Logpush and Audit pages, from the gateway's status and the
	// audit trail.
	failing := "dial tcp 192.0.2.53:853: i/o timeout"
	e.mu.Lock()
	e.status = func() any {
		return map[string]any{
			"version": "test", "uptime_seconds": 60,
			"dns": dns.Status{
				Listening: []netip.AddrPort{netip.MustParseAddrPort("10.9.0.1:53")}, Policies: 3, CacheEntries: 1234, CacheBytes: 5 << 20,
				Upstreams: []dns.UpstreamStatus{{Upstream: "tls://1.1.1.1", Healthy: true}, {Upstream: "tls://192.0.2.53", Failures: 4, LastError: failing}},
				Lists:     []dns.ListStatus{{Name: "malware", File: "/etc/edgegw/malware.txt", Entries: 48213, LoadedAt: time.Now().Add(-time.Hour)}},
			},
			"logpush": []logpush.JobStatus{{Name: "siem", Dataset: "gateway_dns", Destination: "splunk://hec.corp.example:8088/services/collector/raw?header_Authorization=REDACTED",
				Enabled: true, State: "running", RecordsSent: 98765, SpooledBatches: 2, SpooledBytes: 3 << 20, SpoolLimit: 1 << 30, Dropped: 7}},
		}
	}
	e.mu.Unlock()
	if err := chromedp.Do(actx, chromedp.Click(chromedp.ID("nav-dns")), chromedp.WaitVisible(chromedp.ID("page-dns"))); err != nil {
		t.Fatal(err)
	}
	b.poll(actx, "the DNS page", `document.getElementById("dns-cache").textContent === "1234 answers, 5.0 MiB"`)
	up := b.text(actx, "dns-upstreams")
	for _, want := range []string{"tls://1.1.1.1", "healthy", "tls://192.0.2.53", "failing", failing} {
		if !strings.Contains(up, want) {
			t.Errorf("DNS upstreams lack %q:\n%s", want, up)
		}
	}
	if l := b.text(actx, "dns-lists"); !strings.Contains(l, "malware") || !strings.Contains(l, "48213") {
		t.Errorf("DNS lists:\n%s", l)
	}
	b.screenshot(actx, "dns")
	if err := chromedp.Do(actx, chromedp.Click(chromedp.ID("nav-logpush")), chromedp.WaitVisible(chromedp.ID("page-logpush"))); err != nil {
		t.Fatal(err)
	}
	lp := b.text(actx, "logpush-jobs")
	for _, want := range []string{"siem", "gateway_dns", "header_Authorization=REDACTED", "running", "98765", "2 batches, 3.0 MiB of 1.0 GiB"} {
		if !strings.Contains(lp, want) {
			t.Errorf("Logpush jobs lack %q:\n%s", want, lp)
		}
	}
	b.screenshot(actx, "logpush")
	if err := chromedp.Do(actx, chromedp.Click(chromedp.ID("nav-audit")), chromedp.WaitVisible(chromedp.ID("page-audit"))); err != nil {
		t.Fatal(err)
	}
	b.poll(actx, "the revoke on the Audit page", `document.getElementById("audit").textContent.includes("device `+dev.ID+` revoked")`)
	au := b.text(actx, "audit")
	for _, want := range []string{"test-user@zitadel.ch (admin)", "UI from " + lanAddr, "console sign-in of \"test-user@zitadel.ch\" through corp (admin)", "success"} {
		if !strings.Contains(au, want) {
			t.Errorf("Audit page lacks %q:\n%s", want, au)
		}
	}
	b.screenshot(actx, "audit")

	// Firewall: the rules in order with their counters, a rate and a
	// sparkline from the plots' history (seeded here: the sampler's
	// reading of the rule counters is TestConsoleDNSFirewallTools').
	now := time.Now()
	for i := range 6 {
		e.srv.series.add("firewall.packets_per_second:wan-no-ssh", now.Add(-time.Duration(i)*10*time.Second), float64(5+i))
	}
	if err := chromedp.Do(actx, chromedp.Click(chromedp.ID("nav-firewall")), chromedp.WaitVisible(chromedp.ID("page-firewall"))); err != nil {
		t.Fatal(err)
	}
	b.poll(actx, "the firewall's rate and sparkline", `(() => { const r = document.querySelector('[data-rule="wan-no-ssh"]');
		return !!r && r.cells[6].textContent !== "" && !!r.querySelector("svg polyline") })()`)
	fw := b.text(actx, "firewall-rules")
	if i, j := strings.Index(fw, "wan-no-ssh"), strings.Index(fw, "staff-web"); i < 0 || j < i || !strings.Contains(fw, `tcp.dstport == 22`) {
		t.Errorf("firewall rules, in order:\n%s", fw)
	}
	if l := b.text(actx, "firewall-lists"); !strings.Contains(l, "blocked") || !strings.Contains(l, "1234") {
		t.Errorf("firewall lists:\n%s", l)
	}
	b.screenshot(actx, "firewall")
	// Config: the running configuration, secrets redacted.
	if err := chromedp.Do(actx, chromedp.Click(chromedp.ID("nav-config")), chromedp.WaitVisible(chromedp.ID("page-config"))); err != nil {
		t.Fatal(err)
	}
	b.poll(actx, "the configuration", `document.getElementById("config-yaml").textContent.includes("branch-office")`)
	yml := b.text(actx, "config-yaml")
	if strings.Contains(yml, "hunter2") || strings.Contains(yml, "s3cr3t-psk") || !strings.Contains(yml, "psk: REDACTED") ||
		!strings.Contains(yml, "postgres://edgegw:REDACTED@db.corp.example") {
		t.Errorf("configuration shown:\n%s", yml)
	}
	if f := b.text(actx, "config-source"); f != "/etc/edgegw/edgegw.yaml" {
		t.Errorf("configuration file %q", f)
	}
	b.screenshot(actx, "config")

	// The viewer: no revoke button, and the server refuses a revoke even
	// when its own page asks with its CSRF token.
	k2, _ := wireguard.GeneratePrivateKey()
	dev2, err := e.reg.Enroll(t.Context(), identity.Enrollment{Name: "carol-laptop", Email: "carol@corp.test", Subject: "carol", PublicKey: k2.PublicKey(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// Refusals it provokes: the revoke, the reload and a token's revoke
	// (403), its status stream and the plots' refresh after the policies
	// block it (401, the stream and then the session), signing in again
	// (403).
	vctx, vdone := b.session("sso-viewer", "/revoke", PathReload, console.Prefix+"oidc/callback", PathStatus, PathSeries, console.Prefix+"session")
	defer vdone()
	signIn(vctx, "test-user2")
	if got := b.text(vctx, "who") + " " + b.text(vctx, "role"); got != "test-user2@zitadel.ch viewer" {
		t.Errorf("signed in as %q", got)
	}
	if err := chromedp.Do(vctx, chromedp.Click(chromedp.ID("nav-devices"))); err != nil {
		t.Fatal(err)
	}
	b.poll(vctx, "the device list", `!!document.querySelector('[data-device="`+dev2.ID+`"]')`)
	if n, err := chromedp.Run(vctx, chromedp.Evaluate[int](`document.querySelectorAll("[data-revoke]").length`)); err != nil || n != 0 {
		t.Errorf("a viewer sees %d revoke buttons (%v)", n, err)
	}
	for _, path := range []string{PathDevices + "/" + dev2.ID + "/revoke", PathReload, PathTokens + "/ops/revoke"} {
		status, err := chromedp.Run(vctx, chromedp.Evaluate[int](`fetch("/console/session").then(r => r.json()).then(s =>
			fetch("`+path+`", {method: "POST", headers: {"X-CSRF-Token": s.csrf}})).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if err != nil || status != http.StatusForbidden {
			t.Errorf("a viewer's page posts %s: %d (%v), want 403", path, status, err)
		}
	}
	e.mu.Lock()
	reloads := e.reloads
	e.mu.Unlock()
	if reloads != 0 {
		t.Errorf("a viewer reloaded the configuration %d times", reloads)
	}
	if d, _ := e.reg.Get(t.Context(), dev2.ID); d.Revoked {
		t.Fatal("a viewer revoked a device")
	}
	b.screenshot(vctx, "sso-viewer-devices")

	// A reload that blocks helpdesk ends the viewer's session at its next
	// request: the open page goes back to the login.
	if err := e.gw.Do(func() error { return e.srv.Set(ssoConfig(e, issuer, helpdeskBlocked, netopsAdmins)) }); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(vctx, chromedp.Click(chromedp.ID("nav-overview"))); err != nil {
		t.Fatal(err)
	}
	b.poll(vctx, "the blocked viewer back at the login", `!!document.getElementById("sso") && location.pathname === "/console/login"`)
	// Signing in again is refused with a reason.
	err = chromedp.Do(vctx,
		chromedp.Click(chromedp.ID("sso")),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "test-user2"),
		chromedp.SendKeys(chromedp.ID("password"), "verysecure"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	b.poll(vctx, "the refusal", `!!document.getElementById("error") && document.getElementById("error").textContent.includes("no policy lets you use this console")`)
	b.screenshot(vctx, "sso-refused")

	// The admin's session survived the reload; logout ends it.
	if n := e.srv.console.Sessions(); n != 1 {
		t.Errorf("%d sessions, want the admin's only", n)
	}
	err = chromedp.Do(actx, chromedp.Click(chromedp.ID("nav-overview")), chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("sso")))
	if err != nil {
		t.Fatal(err)
	}
	if n := e.srv.console.Sessions(); n != 0 {
		t.Errorf("%d sessions after logout, want 0", n)
	}
}
