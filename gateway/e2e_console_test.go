package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestConsoleThroughGateway runs the operator console of a running edgegw
// in headless Chromium on a host of the office LAN: the admin listener on
// the LAN address with TLS, a token made with the CLI on the box, a
// remote user connected with stock WireGuard. The browser logs in with
// the token, sees the overview with the gateway's own status (version,
// appliance, readiness), sees the user's peer online on the Tunnels page,
// and, with no reload of the page, sees a SIGHUP reload appear on the
// overview. Any JavaScript or console error fails the test. Screenshots go
// to $EDGEGW_SCREENSHOTS when set.
func TestConsoleThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := testkit.NeedTool(t, "chromium", "chromium")
	s := newSite(t)
	ra := s.ra
	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	s.addPeer("alice", alicePub, "100.96.0.10/32")
	s.writeConfig()
	certFile, keyFile, _ := writeAdminCert(t, s.dir, ra.GWLANAddr)
	cfg, err := os.ReadFile(s.cfg)
	must(t, err)
	admin := fmt.Sprintf("  listen: %s:9100\n  hosts: [gw.corp.example]\n  tls:\n    cert_file: %s\n    key_file: %s\n", ra.GWLANAddr, certFile, keyFile)
	must(t, os.WriteFile(s.cfg, []byte(strings.Replace(string(cfg), "  listen: 127.0.0.1:9100\n", admin, 1)), 0o600))
	s.start()
	userIf := s.lab.ID() + "u"
	s.client(ra.User, userIf, "alice", aliceKey)
	netlab.Eventually(t, 15*time.Second, "alice's handshake", func() error {
		return ra.User.Ping("100.96.0.1")
	})
	out := run(t, ra.GW, binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", s.socket())
	token, _, _ := strings.Cut(out, "\n")
	var status struct {
		Version string `json:"version"`
	}
	must(t, json.Unmarshal([]byte(s.get("/api/v1/status")), &status))

	// Chromium on the office LAN host, reaching the gateway by name.
	wrapper := filepath.Join(t.TempDir(), "chromium-lan")
	must(t, os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ra.LAN.Name(), bin)), 0o755))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(wrapper),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("host-resolver-rules", "MAP gw.corp.example "+ra.GWLANAddr.String()),
		chromedp.Flag("ignore-certificate-errors", true), // the test's own CA
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()
	must(t, chromedp.Do(ctx))
	var mu sync.Mutex
	var problems []string
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() { // ends with ctx
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				mu.Lock()
				problems = append(problems, m.String()+" at "+m.URL)
				mu.Unlock()
			}
		}
	}()
	defer func() {
		cancelT()
		<-done
		for _, p := range problems {
			t.Errorf("page error: %s", p)
		}
	}()
	poll := func(what, expr string) {
		t.Helper()
		// Navigations may end a poll on the way: poll again until the
		// deadline.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second)))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
				t.Fatalf("%s: %v\n%.1500s", what, err, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	text := func(id string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		must(t, err)
		return v
	}
	shot := func(name string) {
		dir := os.Getenv("EDGEGW_SCREENSHOTS")
		if dir == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil && os.MkdirAll(dir, 0o755) == nil {
			os.WriteFile(filepath.Join(dir, "gateway-"+name+".png"), png, 0o644)
		}
	}

	must(t, chromedp.Do(ctx,
		chromedp.Navigate("https://gw.corp.example:9100/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login")),
	))
	poll("the overview after login", `!!document.getElementById("version") && document.getElementById("version").textContent === `+fmt.Sprintf("%q", status.Version))
	for id, want := range map[string]string{"appliance": "e2e", "who": "noc", "role": "viewer", "ready": "ready", "reload-result": "applied"} {
		if got := text(id); !strings.Contains(got, want) {
			t.Errorf("overview #%s = %q, want %q", id, got, want)
		}
	}
	if subs := text("subsystems"); !strings.Contains(subs, s.wgIf) || !strings.Contains(subs, "1 peer,") {
		t.Errorf("subsystems:\n%s", subs)
	}
	shot("overview")

	// The remote user, online through the real tunnel.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-tunnels")), chromedp.WaitVisible(chromedp.ID("page-tunnels"))))
	poll("alice online", `document.getElementById("wireguard").textContent.includes("1 of 1 peer online")`)
	if wg := text("wireguard"); !strings.Contains(wg, "alice@corp.example") || !strings.Contains(wg, "100.96.0.10/32") {
		t.Errorf("WireGuard section:\n%s", wg)
	}
	shot("tunnels")

	// Reloads on the box show on the open overview: a refused one with
	// its error, then a good one.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-overview")), chromedp.WaitVisible(chromedp.ID("page-overview"))))
	good, err := os.ReadFile(s.cfg)
	must(t, err)
	must(t, os.WriteFile(s.cfg, append(good, "not_a_section: true\n"...), 0o600))
	s.signal(syscall.SIGHUP)
	poll("the refused reload on the overview", `document.getElementById("reload-result").textContent === "refused"`)
	if e := text("reload-error"); !strings.Contains(e, "not_a_section") {
		t.Errorf("reload error on the overview: %q", e)
	}
	shot("overview-reload-refused")
	must(t, os.WriteFile(s.cfg, good, 0o600))
	s.signal(syscall.SIGHUP)
	poll("the good reload on the overview", `document.getElementById("reload-result").textContent === "applied" && document.getElementById("reload-error").textContent === ""`)
}

// groupsBySubject is the zitadel example OP's storage with a groups claim
// per user in userinfo, as a directory-backed provider sends it.
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

// TestConsoleSSOThroughGateway signs in to the console of a running
// edgegw through a real OpenID provider (github.com/zitadel/oidc/v3's
// example OP, on the gateway's LAN address) in headless Chromium on the
// office LAN. The configuration names the provider in identity.providers
// and the console's in admin.oidc, and admin.policies makes group netops
// admins: that user signs in with the provider's form and sees the console
// as admin; the other user (group helpdesk, no policy) is refused with a
// reason; a reload that adds a viewer policy for helpdesk lets that user
// in as a viewer, and the open admin console shows the reload. Any
// JavaScript error on the console's pages fails the test.
func TestConsoleSSOThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := testkit.NeedTool(t, "chromium", "chromium")
	s := newSite(t)
	ra := s.ra

	// The provider, on the gateway host (the test's process, in its
	// namespace), where the gateway and the LAN's browser both reach it,
	// over TLS with the admin listener's certificate (which names the
	// LAN address); the gateway trusts it through SSL_CERT_FILE.
	certFile, keyFile, _ := writeAdminCert(t, s.dir, ra.GWLANAddr)
	t.Setenv("SSL_CERT_FILE", certFile)
	ln, err := ra.GW.Listen("tcp", ra.GWLANAddr.String()+":0")
	must(t, err)
	issuer := "https://" + ln.Addr().String()
	clients := map[string]*storage.Client{
		"console": storage.WebClient("console", "console-secret", "https://gw.corp.example:9100/console/oidc/callback"),
	}
	op := &http.Server{Handler: exampleop.SetupServer(issuer, groupsBySubject{storage.NewStorageWithClients(storage.NewUserStore(issuer), clients),
		map[string][]string{"id1": {"netops"}, "id2": {"helpdesk"}}}, nil, false)}
	go op.ServeTLS(ln, certFile, keyFile) // owned by the test: closed at cleanup
	t.Cleanup(func() { op.Close() })
	secret := filepath.Join(s.dir, "console.secret")
	must(t, os.WriteFile(secret, []byte("console-secret\n"), 0o600))

	s.extras = fmt.Sprintf(`identity:
  providers:
    - name: corp-sso
      issuer: %s
      client_id: console
      client_secret_file: %s
`, issuer, secret)
	s.writeConfig()
	cfg, err := os.ReadFile(s.cfg)
	must(t, err)
	adminSection := func(policies string) string {
		return fmt.Sprintf("  listen: %s:9100\n  hosts: [gw.corp.example]\n  tls:\n    cert_file: %s\n    key_file: %s\n  oidc:\n    provider: corp-sso\n  policies:\n%s",
			ra.GWLANAddr, certFile, keyFile, policies)
	}
	netops := "    - name: netops\n      action: allow\n      role: admin\n      include: [{group: netops}]\n"
	helpdesk := "    - name: helpdesk\n      action: allow\n      role: viewer\n      include: [{group: helpdesk}]\n"
	base := string(cfg)
	must(t, os.WriteFile(s.cfg, []byte(strings.Replace(base, "  listen: 127.0.0.1:9100\n", adminSection(netops), 1)), 0o600))
	s.start()

	wrapper := filepath.Join(t.TempDir(), "chromium-lan")
	must(t, os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ra.LAN.Name(), bin)), 0o755))
	// browser runs one Chromium with a fresh profile; done reports the
	// console pages' errors, except refusals the test provokes (a URL
	// containing one of refused).
	browser := func(name string, refused ...string) (context.Context, func()) {
		actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(),
			chromedp.ExecPath(wrapper),
			chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.Flag("host-resolver-rules", "MAP gw.corp.example "+ra.GWLANAddr.String()),
			chromedp.Flag("ignore-certificate-errors", true), // the test's own CA
			chromedp.WindowSize(1280, 800),
			chromedp.UserDataDir(t.TempDir()),
		)
		ctx, cancel := chromedp.NewContext(actx)
		must(t, chromedp.Do(ctx))
		ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
		var mu sync.Mutex
		var problems []string
		msgs := chromedp.Console(ctx)
		done := make(chan struct{})
		go func() { // ends with ctx
			defer close(done)
			for m, err := range msgs {
				if err != nil {
					return
				}
				provoked := !m.IsException() && strings.HasPrefix(m.String(), "error: Failed to load resource") &&
					slices.ContainsFunc(refused, func(u string) bool { return strings.Contains(m.URL, u) })
				if (m.IsException() || m.Type == chromedp.ConsoleError) && (m.URL == "" || strings.HasPrefix(m.URL, "https://gw.corp.example:9100/")) && !provoked {
					mu.Lock()
					problems = append(problems, m.String()+" at "+m.URL)
					mu.Unlock()
				}
			}
		}()
		return ctx, func() {
			cancelT()
			cancel()
			cancelAlloc()
			<-done
			for _, p := range problems {
				t.Errorf("%s's page: %s", name, p)
			}
		}
	}
	poll := func(ctx context.Context, what, expr string) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second)))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
				t.Fatalf("%s: %v\n%.1500s", what, err, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	signIn := func(ctx context.Context, user string) {
		t.Helper()
		must(t, chromedp.Do(ctx,
			chromedp.Navigate("https://gw.corp.example:9100/"),
			chromedp.WaitVisible(chromedp.ID("sso")),
			chromedp.Click(chromedp.ID("sso")),
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), user),
			chromedp.SendKeys(chromedp.ID("password"), "verysecure"),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		))
	}
	text := func(ctx context.Context, id string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		must(t, err)
		return v
	}

	actx, adone := browser("admin")
	defer adone()
	signIn(actx, "test-user@"+ra.GWLANAddr.String())
	poll(actx, "the console after signing in", `!!document.getElementById("role") && document.getElementById("role").textContent === "admin" && document.getElementById("reload-result").textContent !== ""`)
	if who := text(actx, "who"); who != "test-user@zitadel.ch" {
		t.Errorf("signed in as %q", who)
	}

	// helpdesk has no policy yet: refused, with the reason.
	vctx, vdone := browser("helpdesk", "/console/oidc/callback")
	defer vdone()
	signIn(vctx, "test-user2")
	poll(vctx, "the refusal", `!!document.getElementById("error") && document.getElementById("error").textContent.includes("no policy lets you use this console")`)

	// A reload adds the viewer policy: the open admin console shows it,
	// and helpdesk signs in as a viewer.
	must(t, os.WriteFile(s.cfg, []byte(strings.Replace(base, "  listen: 127.0.0.1:9100\n", adminSection(netops+helpdesk), 1)), 0o600))
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	poll(actx, "the reload on the admin's overview", `document.getElementById("reload-result").textContent === "applied"`)
	signIn(vctx, "test-user2")
	poll(vctx, "helpdesk as a viewer", `!!document.getElementById("role") && document.getElementById("role").textContent === "viewer"`)
	if who := text(vctx, "who"); who != "test-user2@zitadel.ch" {
		t.Errorf("signed in as %q", who)
	}
}
