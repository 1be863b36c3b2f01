package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/gateway/netlab/testkit/browser"
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
	s.adminOnLAN()
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
	pageErrors := browser.PageErrors(ctx, nil)
	defer func() {
		cancelT()
		for _, p := range pageErrors() {
			t.Errorf("page error: %s", p)
		}
	}()
	poll := func(what, expr string) { t.Helper(); consolePoll(t, ctx, what, expr) }
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
		return lanAdmin(ra.GWLANAddr, certFile, keyFile) + "  oidc:\n    provider: corp-sso\n  policies:\n" + policies
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
		pageErrors := browser.PageErrors(ctx, func(m chromedp.ConsoleMessage) bool {
			provoked := !m.IsException() && strings.HasPrefix(m.String(), "error: Failed to load resource") &&
				slices.ContainsFunc(refused, func(u string) bool { return strings.Contains(m.URL, u) })
			return (m.URL == "" || strings.HasPrefix(m.URL, "https://gw.corp.example:9100/")) && !provoked
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
	consolePoll(t, actx, "the console after signing in", `!!document.getElementById("role") && document.getElementById("role").textContent === "admin" && document.getElementById("reload-result").textContent !== ""`)
	if who := text(actx, "who"); who != "test-user@zitadel.ch" {
		t.Errorf("signed in as %q", who)
	}

	// helpdesk has no policy yet: refused, with the reason.
	vctx, vdone := browser("helpdesk", "/console/oidc/callback")
	defer vdone()
	signIn(vctx, "test-user2")
	consolePoll(t, vctx, "the refusal", `!!document.getElementById("error") && document.getElementById("error").textContent.includes("no policy lets you use this console")`)

	// A reload adds the viewer policy: the open admin console shows it,
	// and helpdesk signs in as a viewer.
	must(t, os.WriteFile(s.cfg, []byte(strings.Replace(base, "  listen: 127.0.0.1:9100\n", adminSection(netops+helpdesk), 1)), 0o600))
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	consolePoll(t, actx, "the reload on the admin's overview", `document.getElementById("reload-result").textContent === "applied"`)
	signIn(vctx, "test-user2")
	consolePoll(t, vctx, "helpdesk as a viewer", `!!document.getElementById("role") && document.getElementById("role").textContent === "viewer"`)
	if who := text(vctx, "who"); who != "test-user2@zitadel.ch" {
		t.Errorf("signed in as %q", who)
	}
}

// consoleTab opens a tab of a fresh headless Chromium on the office LAN
// host, reaching the gateway's admin listener as gw.corp.example; done
// fails the test on any JavaScript exception or console error of the
// console's pages.
func consoleTab(t *testing.T, s *site) (ctx context.Context, done func()) {
	t.Helper()
	actx, stop := browser.Start(t, browser.Options{
		Netns: s.ra.LAN.Name(), Hosts: map[string]string{"gw.corp.example": s.ra.GWLANAddr.String()}, Width: 1280, Height: 800,
	})
	ctx, cancel := chromedp.NewContext(actx)
	must(t, chromedp.Do(ctx))
	ctx, cancelT := context.WithTimeout(ctx, 150*time.Second)
	pageErrors := browser.PageErrors(ctx, nil)
	return ctx, func() {
		cancelT()
		cancel()
		stop()
		for _, p := range pageErrors() {
			t.Errorf("page error: %s", p)
		}
	}
}

// consolePoll waits for a JavaScript condition on the page.
func consolePoll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second)))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("%s: %v\n%.2500s", what, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consoleShot saves a screenshot of the page as
// $EDGEGW_SCREENSHOTS/gateway-<name>.png, when that is set.
func consoleShot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("EDGEGW_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil && os.MkdirAll(dir, 0o755) == nil {
		err = os.WriteFile(filepath.Join(dir, "gateway-"+name+".png"), png, 0o644)
	}
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
}

// lastReload is the status's last reload, read over the admin socket.
func (s *site) lastReload() (at time.Time, ok bool, appliance string) {
	s.t.Helper()
	var st struct {
		Appliance string `json:"appliance"`
		Config    struct {
			LastReload time.Time `json:"last_reload"`
			OK         bool      `json:"last_reload_successful"`
		} `json:"config"`
	}
	must(s.t, json.Unmarshal([]byte(s.get("/api/v1/status")), &st))
	return st.Config.LastReload, st.Config.OK, st.Appliance
}

// TestConsoleConfigEditor edits the configuration of a running edgegw
// from the console in headless Chromium on the office LAN, as an admin
// logged in with a token. The Config page shows the file as it is on
// disk; a file with an error (a port that is not a number) is refused
// with the error at its line and column, marked in the text, and changes
// nothing (the file on disk, the last reload); a good file (a new
// appliance name) shows its diff, applies through the reload, and the
// open Overview shows the new reload and name with no page reload; the
// history keeps the file that ran before and the applied one, and a
// rollback puts the first back. A viewer's token is refused the check,
// the apply and the rollback by the server, and the file stays. Any
// JavaScript error fails the test; screenshots go to $EDGEGW_SCREENSHOTS.
func TestConsoleConfigEditor(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	s.writeConfig()
	original, pool := s.adminOnLAN()
	s.start()
	opsTok, _, _ := strings.Cut(run(t, ra.GW, binary, "admin", "token", "create", "ops", "--role", "admin", "--socket", s.socket()), "\n")
	nocTok, _, _ := strings.Cut(run(t, ra.GW, binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", s.socket()), "\n")
	startedReload, _, _ := s.lastReload()

	// A viewer's token, over the network: every change refused by the
	// server, the file untouched.
	lanClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return ra.LAN.DialContext(ctx, network, ra.GWLANAddr.String()+":9100")
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gw.corp.example"},
	}}
	good := strings.Replace(original, "  name: e2e\n", "  name: e2e-console\n", 1)
	for _, path := range []string{"/api/v1/config/check", "/api/v1/config/apply", "/api/v1/config/history/1/rollback"} {
		body, _ := json.Marshal(map[string]string{"yaml": good})
		req, err := http.NewRequest(http.MethodPost, "https://gw.corp.example:9100"+path, bytes.NewReader(body))
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+nocTok)
		resp, err := lanClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a viewer's POST %s: %s, want 403", path, resp.Status)
		}
	}
	if b, _ := os.ReadFile(s.cfg); string(b) != original {
		t.Fatalf("a viewer changed the file:\n%s", b)
	}
	// The refused apply and rollback are in the audit trail, as failures.
	var trail []struct {
		Action string `json:"action"`
		Result bool   `json:"result"`
		Actor  struct {
			ID string `json:"id"`
		} `json:"actor"`
	}
	must(t, json.Unmarshal([]byte(s.get("/api/v1/audit")), &trail))
	refused := map[string]bool{}
	for _, e := range trail {
		if e.Actor.ID == "noc" && !e.Result {
			refused[e.Action] = true
		}
	}
	if !refused["apply"] || !refused["rollback"] {
		t.Errorf("the viewer's refused changes in the audit trail: %+v", trail)
	}
	// The server refuses a bad file even when a client skips the check.
	bad := strings.Replace(original, "listen_port: 51820", "listen_port: lots", 1)
	badLine := 1 + strings.Count(bad[:strings.Index(bad, "listen_port: lots")], "\n")
	{
		body, _ := json.Marshal(map[string]string{"yaml": bad})
		req, err := http.NewRequest(http.MethodPost, "https://gw.corp.example:9100/api/v1/config/apply", bytes.NewReader(body))
		must(t, err)
		req.Header.Set("Authorization", "Bearer "+opsTok)
		resp, err := lanClient.Do(req)
		must(t, err)
		var res struct {
			Applied  bool `json:"applied"`
			Problems []struct {
				Line, Column int
				Field        string
			} `json:"problems"`
		}
		must(t, json.NewDecoder(resp.Body).Decode(&res))
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity || res.Applied || len(res.Problems) != 1 || res.Problems[0].Line != badLine || res.Problems[0].Column != 18 {
			t.Errorf("apply of a bad file over the API: %s %+v, want 422 with one problem at %d:18", resp.Status, res, badLine)
		}
	}
	if b, _ := os.ReadFile(s.cfg); string(b) != original {
		t.Fatalf("a refused file was written:\n%s", b)
	}
	if at, _, _ := s.lastReload(); !at.Equal(startedReload) {
		t.Fatalf("a refused file reloaded (last reload %v, started %v)", at, startedReload)
	}

	ctx, done := consoleTab(t, s)
	defer done()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate("https://gw.corp.example:9100/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), opsTok),
		chromedp.Click(chromedp.ID("login")),
	))
	consolePoll(t, ctx, "the overview", `!!document.getElementById("role") && document.getElementById("role").textContent === "admin" && document.getElementById("appliance").textContent === "e2e"`)
	reloadBefore, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("reload-at")))
	must(t, err)

	// The file as it is on disk, in the editor.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-config")), chromedp.WaitVisible(chromedp.ID("config-edit"))))
	consolePoll(t, ctx, "the file in the editor", `document.getElementById("config-edit").value.includes("listen_port: 51820")`)
	shown, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("config-edit")))
	must(t, err)
	if shown != original {
		t.Errorf("the editor shows:\n%s\nthe file is:\n%s", shown, original)
	}

	// A bad file: the error at its line, marked in the text; nothing
	// applied.
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("config-edit"), bad), chromedp.Click(chromedp.ID("config-apply"))))
	consolePoll(t, ctx, "the error at its line", fmt.Sprintf(
		`!!document.querySelector('#config-problems li[data-line="%d"]') && !!document.querySelector('#config-annotated .bad[data-line="%d"]')`, badLine, badLine))
	probs, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("config-problems")))
	must(t, err)
	result, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("config-result")))
	must(t, err)
	if want := fmt.Sprintf("line %d, column 18: tunnels.wireguard.listen_port:", badLine); !strings.Contains(probs, want) || !strings.Contains(result, "nothing changed") {
		t.Errorf("problems %q (want %q), result %q", probs, want, result)
	}
	consoleShot(t, ctx, "config-error")
	if b, _ := os.ReadFile(s.cfg); string(b) != original {
		t.Fatalf("the refused file was written:\n%s", b)
	}
	if at, _, _ := s.lastReload(); !at.Equal(startedReload) {
		t.Fatalf("the refused file reloaded")
	}

	// A good file: its diff, then applied through the reload.
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("config-edit"), good), chromedp.Click(chromedp.ID("config-check"))))
	consolePoll(t, ctx, "the diff", `document.getElementById("config-diff").textContent.includes("+   name: e2e-console") && document.getElementById("config-diff").textContent.includes("-   name: e2e")`)
	consoleShot(t, ctx, "config-diff")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("config-apply"))))
	consolePoll(t, ctx, "applied", `document.getElementById("config-result").textContent.startsWith("Applied at")`)
	if b, _ := os.ReadFile(s.cfg); string(b) != good {
		t.Errorf("the file after apply:\n%s", b)
	}
	at, ok, name := s.lastReload()
	if !at.After(startedReload) || !ok || name != "e2e-console" {
		t.Errorf("after apply: last reload %v (ok %v), appliance %q", at, ok, name)
	}
	consolePoll(t, ctx, "the history", `document.querySelectorAll("#config-history tr[data-history]").length === 2`)
	consoleShot(t, ctx, "config-history")

	// The open overview shows the new reload and the new name.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-overview")), chromedp.WaitVisible(chromedp.ID("page-overview"))))
	consolePoll(t, ctx, "the reload on the overview", fmt.Sprintf(
		`document.getElementById("appliance").textContent === "e2e-console" && document.getElementById("reload-result").textContent === "applied" && document.getElementById("reload-at").textContent !== %q`, reloadBefore))
	consoleShot(t, ctx, "overview-after-apply")

	// Roll back to the file that ran first.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-config")), chromedp.WaitVisible(chromedp.ID("config-history"))))
	consolePoll(t, ctx, "the base entry", `!!document.querySelector('button[data-rollback="1"]')`)
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-rollback="1"]`))))
	consolePoll(t, ctx, "the confirmation", `!!document.querySelector('button[data-confirm-rollback="1"]')`)
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-confirm-rollback="1"]`))))
	consolePoll(t, ctx, "rolled back", `document.getElementById("config-result").textContent.startsWith("Applied at") && document.querySelectorAll("#config-history tr[data-history]").length === 3`)
	if b, _ := os.ReadFile(s.cfg); string(b) != original {
		t.Errorf("the file after the rollback:\n%s", b)
	}
	if _, _, name := s.lastReload(); name != "e2e" {
		t.Errorf("after the rollback the appliance is %q", name)
	}
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-audit")), chromedp.WaitVisible(chromedp.ID("page-audit"))))
	consolePoll(t, ctx, "the audit trail", `document.getElementById("audit").textContent.includes("configuration rolled back to history entry 1") && document.getElementById("audit").textContent.includes("configuration applied")`)
	consoleShot(t, ctx, "audit-config")

	// An edit on disk and a SIGHUP join the history too, as the
	// signal's reload; a SIGHUP that changes nothing adds nothing.
	hup := strings.Replace(original, "  name: e2e\n", "  name: e2e-hup\n", 1)
	must(t, os.WriteFile(s.cfg, []byte(hup), 0o600))
	s.signal(syscall.SIGHUP)
	testkit.Eventually(t, 30*time.Second, "the SIGHUP reload", func() error {
		if _, ok, name := s.lastReload(); !ok || name != "e2e-hup" {
			return fmt.Errorf("appliance %q after the SIGHUP", name)
		}
		return nil
	})
	type entry struct{ ID, Actor, Action, SHA256 string }
	history := func() []entry {
		var h []entry
		must(t, json.Unmarshal([]byte(s.get("/api/v1/config/history")), &h))
		return h
	}
	sum := sha256.Sum256([]byte(hup))
	if h := history(); len(h) != 4 || h[0].Action != "reload" || h[0].Actor != "SIGHUP" || h[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("the history after an edit and a SIGHUP (newest first): %+v", h)
	}
	s.signal(syscall.SIGHUP)
	testkit.Eventually(t, 30*time.Second, "the second SIGHUP audited", func() error {
		var trail []struct {
			Action string `json:"action"`
			Actor  struct {
				ID string `json:"id"`
			} `json:"actor"`
		}
		must(t, json.Unmarshal([]byte(s.get("/api/v1/audit")), &trail))
		n := 0
		for _, e := range trail {
			if e.Action == "reload" && e.Actor.ID == "SIGHUP" {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d SIGHUP reloads audited", n)
		}
		return nil
	})
	if h := history(); len(h) != 4 {
		t.Errorf("a SIGHUP with the file unchanged added to the history: %+v", h)
	}
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-config")), chromedp.WaitVisible(chromedp.ID("config-history"))))
	consolePoll(t, ctx, "the reload in the history", `document.querySelectorAll("#config-history tr[data-history]").length === 4 && document.getElementById("config-history").textContent.includes("edited on disk, reloaded")`)

	// Columns of bytes sort by the number behind the unit, not the
	// text ("2.0 KiB" would come before "10 B").
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		const g = window.edgegw, t = document.createElement("table");
		t.id = "sort-probe";
		t.innerHTML = "<thead><tr><th>Size</th></tr></thead><tbody></tbody>";
		document.body.append(t);
		g.rows(t.tBodies[0], [10, 2048, 300], (n) => g.row(g.bytesCell(n)), "none");
		return true;
	})()`))
	must(t, err)
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#sort-probe th"))))
	sorted, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#sort-probe tbody td")].map((td) => td.textContent).join(",")`))
	must(t, err)
	if sorted != "10 B,300 B,2.0 KiB" {
		t.Errorf("a column of bytes sorted: %s", sorted)
	}
}

// TestConsoleRevokeStopsTraffic: an admin revokes, from the console's
// Devices page in headless Chromium on the office LAN, an enrolled laptop
// whose stock WireGuard (wg-quick, wireguard-go) is reaching the office
// server through the gateway; the laptop's pings stop, its key leaves the
// WireGuard interface, the page shows it revoked and the Audit page names
// the admin and the console as who did it.
func TestConsoleRevokeStopsTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needStockWireGuard(t)
	s := newSite(t)
	ra := s.ra
	op := startProvider(t, ra.GW, ra.User)
	webSecret := writeWebSecret(t, s)
	certFile, keyFile, _ := writeAdminCert(t, s.dir, ra.GWLANAddr)
	cfg := fmt.Sprintf(`appliance:
  name: e2e
  state_dir: %[1]s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: %[5]s:9100
  hosts: [gw.corp.example]
  tls:
    cert_file: %[6]s
    key_file: %[7]s
  socket: %[1]s/admin.sock
log:
  level: debug
identity:
  providers:
    - name: corp
      issuer: %[2]s
      client_id: edgegw-web
      client_secret_file: %[3]s
      device_client_id: edgegw-cli
access:
  listen: 0.0.0.0:8443
tunnels:
  wireguard:
    interface: %[4]s
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
`, s.dir, op.Issuer, webSecret, s.wgIf, ra.GWLANAddr, certFile, keyFile)
	must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	s.start()
	gwURL := "https://" + ra.GWWANAddr.String() + ":8443"
	out, err := enrollCmd(t, ra.User, op, op.Username(), gwURL, "alice-laptop", filepath.Join(s.dir, "alice.conf"))
	if err != nil {
		t.Fatalf("edgegw enroll: %v\n%s\ngateway log:\n%s", err, out, s.proc.Output())
	}
	conf, err := os.ReadFile(filepath.Join(s.dir, "alice.conf"))
	must(t, err)
	s.upClient(ra.User, s.lab.ID()+"u", strings.Replace(string(conf), "DNS = ", "# DNS = ", 1), "")
	var devs []struct {
		ID        string `json:"id"`
		PublicKey string `json:"public_key"`
		Status    string `json:"status"`
	}
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	dev := devs[0]
	netlab.Eventually(t, 15*time.Second, "the laptop reaches the office through its tunnel", func() error {
		return ra.User.Ping(ra.ServerAddr.String())
	})
	opsTok, _, _ := strings.Cut(run(t, ra.GW, binary, "admin", "token", "create", "ops", "--role", "admin", "--socket", s.socket()), "\n")

	ctx, done := consoleTab(t, s)
	defer done()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate("https://gw.corp.example:9100/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), opsTok),
		chromedp.Click(chromedp.ID("login")),
	))
	consolePoll(t, ctx, "the overview", `!!document.getElementById("role") && document.getElementById("role").textContent === "admin"`)
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-devices")), chromedp.WaitVisible(chromedp.ID("page-devices"))))
	row := fmt.Sprintf(`#devices tr[data-device=%q]`, dev.ID)
	consolePoll(t, ctx, "the laptop in the list", fmt.Sprintf(`!!document.querySelector('%s button[data-revoke]')`, row))
	// Still reaching the office right before the click.
	must(t, ra.User.Ping(ra.ServerAddr.String()))
	consoleShot(t, ctx, "devices-before-revoke")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" button[data-revoke]"))))
	consolePoll(t, ctx, "the confirmation", fmt.Sprintf(`!!document.querySelector('%s button[data-confirm]')`, row))
	start := time.Now()
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" button[data-confirm]"))))
	netlab.Eventually(t, 10*time.Second, "the laptop's traffic stops after the revoke", func() error {
		if ra.User.Ping(ra.ServerAddr.String()) == nil {
			return fmt.Errorf("ping still passes")
		}
		return nil
	})
	t.Logf("revoked from the console: ping stopped %s after the click", time.Since(start).Round(time.Millisecond))
	consolePoll(t, ctx, "revoked in the list", fmt.Sprintf(`document.querySelector('%s').textContent.includes("revoked") && document.getElementById("device-message").textContent.startsWith("Revoked alice-laptop")`, row))
	consoleShot(t, ctx, "devices-after-revoke")
	if dump := run(t, ra.GW, "wg", "show", s.wgIf, "dump"); strings.Contains(dump, dev.PublicKey) {
		t.Errorf("the revoked device's key is still a WireGuard peer:\n%s", dump)
	}
	must(t, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
	if len(devs) != 1 || devs[0].Status != "revoked" {
		t.Errorf("devices after the revoke: %+v", devs)
	}
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-audit")), chromedp.WaitVisible(chromedp.ID("page-audit"))))
	consolePoll(t, ctx, "the revoke in the audit trail", fmt.Sprintf(
		`[...document.querySelectorAll("#audit tbody tr")].some((r) => r.textContent.includes("device %s revoked") && r.textContent.includes("ops (admin)") && r.textContent.includes("UI"))`, dev.ID))
}

// TestConsoleFlowsAndPlots: a running edgegw samples every packet into
// its flow analytics while a remote user's stock WireGuard fetches from
// the office web server; the console's Flows page (headless Chromium on
// the office LAN, a viewer's token) shows the user's tunnel address and
// her address on the internet among the top talkers, port 80 and TCP,
// over the last hour; the Overview plots
// the throughput from the in-process history (/api/v1/series, sampled
// every 10 s), which has a point above zero for the traffic; the user's
// queries to Gateway DNS on the tunnel address (repeated: cache hits)
// show on the DNS page's queries-per-second and cache-hit plots.
func TestConsoleFlowsAndPlots(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	s.addPeer("alice", alicePub, "100.96.0.10/32")
	testkit.NeedTool(t, "dig", "bind9-dnsutils")
	upstreamAnswers(t, ra.LAN, "10.0.0.5:53", "192.0.2.99")
	s.writeFlowConfig(`  analytics:
    retention: 1h
firewall:
  rules:
    - id: office-web
      expression: tcp.dstport == 80
      action: allow
gateway:
  dns:
    listen: [100.96.0.1:53]
    upstreams: [10.0.0.5:53]
`)
	s.adminOnLAN()
	s.start()
	echoServer(t, ra.LAN, ":80")
	s.client(ra.User, s.lab.ID()+"u", "alice", aliceKey)
	netlab.Eventually(t, 15*time.Second, "alice's handshake", func() error { return ra.User.Ping("100.96.0.1") })
	nocTok, _, _ := strings.Cut(run(t, ra.GW, binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", s.socket()), "\n")

	// Traffic through the tunnel until the history has a throughput point
	// above zero (the sampler's rate needs two samples 10 s apart).
	fetch := func() error {
		c, err := ra.User.DialContext(context.Background(), "tcp", "10.0.0.5:80")
		if err != nil {
			return err
		}
		defer c.Close()
		must(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		line := strings.Repeat("x", 1000)
		r := bufio.NewReader(c)
		for range 50 {
			echo(t, c, r, line)
		}
		return nil
	}
	// Queries for one name: the first from the upstream, the rest cached.
	dig := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for range 5 {
			out, err := ra.User.Exec(ctx, "dig", "+short", "+tries=2", "+time=2", "@100.96.0.1", "www.example.com", "A")
			if err != nil || strings.TrimSpace(string(out)) != "192.0.2.99" {
				return fmt.Errorf("dig: %v %s", err, out)
			}
		}
		return nil
	}
	netlab.Eventually(t, 60*time.Second, "throughput and DNS points above zero", func() error {
		if err := fetch(); err != nil {
			return err
		}
		if err := dig(); err != nil {
			return err
		}
		var ans struct {
			Series []struct {
				Name   string     `json:"name"`
				Values []*float64 `json:"values"`
			} `json:"series"`
		}
		must(t, json.Unmarshal([]byte(s.get("/api/v1/series?name=throughput.,dns.&window=1h")), &ans))
		above := map[string]bool{}
		for _, sr := range ans.Series {
			for _, v := range sr.Values {
				if v != nil && *v > 0 {
					above[sr.Name] = true
				}
			}
		}
		for _, name := range []string{"throughput.in_bps", "throughput.out_bps", "dns.queries_per_second", "dns.cache_hit_percent"} {
			if !above[name] {
				return fmt.Errorf("no point above zero in %s yet (%v)", name, above)
			}
		}
		return nil
	})

	ctx, done := consoleTab(t, s)
	defer done()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate("https://gw.corp.example:9100/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), nocTok),
		chromedp.Click(chromedp.ID("login")),
	))
	consolePoll(t, ctx, "the throughput plot", `!!document.querySelector("#chart-throughput figure") && Number(document.querySelector("#chart-throughput figure").dataset.samples) >= 1 && !!document.querySelector("#chart-throughput polyline, #chart-throughput circle")`)
	if axis, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("chart-throughput"))); err != nil || !strings.Contains(axis, "bit/s") {
		t.Errorf("the throughput plot's axis: %q %v", axis, err)
	}
	consoleShot(t, ctx, "overview-throughput")

	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-dns")), chromedp.WaitVisible(chromedp.ID("page-dns"))))
	consolePoll(t, ctx, "the DNS plots", `[...document.querySelectorAll("#dns-charts figure")].filter((f) => Number(f.dataset.samples) >= 1).length === 2`)
	if txt, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("dns-charts"))); err != nil || !strings.Contains(txt, "Queries per second") || !strings.Contains(txt, "/s") || !strings.Contains(txt, "Cache hit rate") || !strings.Contains(txt, " %") {
		t.Errorf("DNS plots: %q %v", txt, err)
	}
	consoleShot(t, ctx, "dns-plots")

	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-flows")), chromedp.WaitVisible(chromedp.ID("page-flows"))))
	consolePoll(t, ctx, "alice as the top talker", `!!document.querySelector('#flows-talkers tr[data-key="100.96.0.10"]') && !!document.querySelector('#flows-ports tr[data-key="80"]') && !!document.querySelector('#flows-protocols tr[data-key="TCP"]')`)
	// Alice's inner address, and her outer one (the WireGuard datagrams
	// from the internet side).
	for _, key := range []string{"100.96.0.10", ra.UserAddr.String()} {
		if tr, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#flows-talkers tr[data-key="`+key+`"]`))); err != nil || !strings.Contains(tr, "bit/s") || !strings.Contains(tr, "iB") {
			t.Errorf("talker %s: %q %v", key, tr, err)
		}
	}
	consolePoll(t, ctx, "the flows plot", `Number(document.querySelector("#chart-flows figure").dataset.samples) >= 1`)
	consoleShot(t, ctx, "flows")
}

// TestConsoleTunnelPlots joins two offices with GRE, both ends running
// edgegw with health checks, and opens the office gateway's console in
// headless Chromium on the office LAN: the Tunnels page plots the
// tunnel's round trip (ms) and probe loss (%) from the in-process
// history, live (the page is not reloaded while the history fills), and
// the week's view answers at its 10-minute resolution.
func TestConsoleTunnelPlots(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	lab, ns := siteLab(t)
	dir := t.TempDir()
	certFile, keyFile, _ := writeAdminCert(t, dir, netip.MustParseAddr("10.0.0.1"))
	tun := lab.ID() + "t"
	startGRESite(t, ns["ogw"], dir, officeSite(tun,
		lanAdmin(netip.MustParseAddr("10.0.0.1"), certFile, keyFile),
		greRoute("10.20.0.0/16", tun)))
	startGRESite(t, ns["bgw"], dir, branchSite(tun, greRoute("10.0.0.0/24", tun)))
	netlab.Eventually(t, 15*time.Second, "ping across the GRE tunnel", func() error {
		return ns["olan"].Ping("10.20.0.5")
	})
	tok, _, _ := strings.Cut(run(t, ns["ogw"], binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", filepath.Join(dir, "office.sock")), "\n")

	actx, stop := browser.Start(t, browser.Options{Netns: ns["olan"].Name(), Hosts: map[string]string{"gw.corp.example": "10.0.0.1"}, Width: 1280, Height: 800})
	defer stop()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	defer cancelT()
	pageErrors := browser.PageErrors(ctx, nil)
	defer func() {
		cancelT()
		for _, p := range pageErrors() {
			t.Errorf("page error: %s", p)
		}
	}()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate("https://gw.corp.example:9100/#tunnels"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), tok),
		chromedp.Click(chromedp.ID("login")),
	))
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("nav-tunnels")), chromedp.Click(chromedp.ID("nav-tunnels")), chromedp.WaitVisible(chromedp.ID("page-tunnels"))))
	// The loss needs two samples of the probe counters, 10 s apart; the
	// page refreshes its plots by itself.
	plot := func(kind string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#tunnel-charts figure[data-tunnel=%q]')].some((f) => f.dataset.title.endsWith(%q) && Number(f.dataset.samples) >= 1)`, tun, kind)
	}
	consolePoll(t, ctx, "the tunnel's RTT and loss plots", plot("round trip")+" && "+plot("probe loss"))
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("tunnel-charts")))
	must(t, err)
	for _, want := range []string{tun + ": round trip", " ms", tun + ": probe loss", " %"} {
		if !strings.Contains(text, want) {
			t.Errorf("tunnel plots lack %q:\n%s", want, text)
		}
	}
	consoleShot(t, ctx, "tunnels-plots")
	// The week's view: the same series at 10-minute steps.
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("tunnel-window"), "7d")))
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("tunnel-window").dispatchEvent(new Event("change"))`))
	must(t, err)
	consolePoll(t, ctx, "the week's plot", plot("round trip")+` && /(Mon|Tue|Wed|Thu|Fri|Sat|Sun)/.test(document.querySelector('#tunnel-charts figure').textContent)`)
}
