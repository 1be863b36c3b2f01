package admin

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/health"
	"github.com/edgegw/edgegw/tunnel/site"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// consoleStatus has the JSON shape of the gateway's GET /api/v1/status
// (gateway.Status, which this package cannot import), over the tunnel
// packages' own status types.
type consoleStatus struct {
	Version       string         `json:"version"`
	Appliance     string         `json:"appliance"`
	StartedAt     time.Time      `json:"started_at"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Config        map[string]any `json:"config"`
	Ready         bool           `json:"ready"`
	NotReady      []string       `json:"not_ready,omitempty"`
	Tunnels       []any          `json:"tunnels"`
	Devices       int            `json:"devices"`
	Routes        []string       `json:"routes,omitempty"`
}

// TestChromiumConsole drives the console in headless Chromium on a host
// of the LAN (Chromium runs in the lan namespace and reaches the listener
// by name over TLS): a viewer logs in with its token and sees the overview
// and the tunnels, live (the uptime moves with no reload), and no revoke
// button; an admin searches the devices, revokes one after confirming, and
// the registry and the audit trail show it; logout ends the session. Any
// JavaScript error or console error fails the test. Screenshots go to
// $EDGEGW_SCREENSHOTS when set. It needs Debian's chromium and skips
// without it.
func TestChromiumConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	e := newEnv(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}})
	started := time.Now().Add(-90 * time.Minute)
	var devs []identity.Device
	for i := range 60 {
		k, _ := wireguard.GeneratePrivateKey()
		d, err := e.reg.Enroll(t.Context(), identity.Enrollment{
			Name: fmt.Sprintf("laptop-%02d", i), Email: fmt.Sprintf("user%02d@corp.test", i), Subject: fmt.Sprint("s", i),
			Groups: []string{"staff"}, PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	target := devs[42]
	peerKey, _ := wireguard.GeneratePrivateKey()
	e.mu.Lock()
	e.status = func() any {
		return consoleStatus{
			Version: "1.4.2-console-test", Appliance: "branch-office", StartedAt: started,
			UptimeSeconds: time.Since(started).Seconds(),
			Config: map[string]any{"file": "/etc/edgegw/edgegw.yaml", "last_reload": started.Add(time.Hour),
				"last_reload_successful": false, "last_reload_error": "edgegw.yaml:12:5: firewall.rules[3].action: \"alow\" is not allow or block"},
			Ready: false, NotReady: []string{"dns: no healthy upstream"},
			Tunnels: []any{
				map[string]any{"name": "wg0", "kind": "wireguard", "state": "up", "wireguard": wireguard.Status{
					Interface: "wg0", ListenPort: 51820,
					Peers: []wireguard.PeerStatus{{Name: "alice-laptop", Email: "alice@corp.test", PublicKey: peerKey.PublicKey(),
						Endpoint: "198.51.100.7:40000", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.96.0.2/32")},
						LastHandshake: time.Now().Add(-10 * time.Second), RxBytes: 123456, TxBytes: 654321}},
				}},
				map[string]any{"name": "branch-b", "kind": "gre", "state": "degraded", "site": site.TunnelStatus{
					Status: gre.Status{Name: "branch-b", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("203.0.113.9")},
					Kind:   "gre", Health: &health.Status{State: tunnel.Degraded, LastRTT: 12500 * time.Microsecond, Sent: 100, Failed: 7},
				}},
			},
			Devices: len(devs),
			Routes:  []string{"10.20.0.0/16 dev branch-b metric 500100"},
		}
	}
	e.mu.Unlock()
	viewerTok := e.createToken("noc", RoleViewer)
	adminTok := e.createToken("ops", RoleAdmin)

	// Chromium runs on the LAN host, a browser of its own per session.
	b := newChromium(t, e)
	base := consoleBase
	session := func(name string) (context.Context, func()) { return b.session(name) }
	screenshot := b.screenshot

	login := func(ctx context.Context, token string) {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), token),
			chromedp.Click(chromedp.ID("login")),
		)
		if err != nil {
			t.Fatalf("at the login form: %v", err)
		}
		// Wait for the console's first status poll to land; the login's
		// redirects may end a poll on the way, so poll again until the
		// deadline.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := chromedp.Run(ctx, chromedp.Poll[bool](`!!document.getElementById("updated") && Number(document.getElementById("updated").dataset.polls) >= 1`,
				chromedp.WithPollingTimeout(10*time.Second)))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				loc, _ := chromedp.Run(ctx, chromedp.Location())
				body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
				t.Fatalf("no console after login: %v (at %s): %.500s", err, loc, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	text := func(ctx context.Context, id string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("#%s: %v", id, err)
		}
		return s
	}

	// A viewer: the overview, live.
	vctx, vdone := session("viewer")
	login(vctx, viewerTok)
	if got := text(vctx, "who") + " " + text(vctx, "role"); got != "noc viewer" {
		t.Errorf("logged in as %q", got)
	}
	for id, want := range map[string]string{
		"version": "1.4.2-console-test", "appliance": "branch-office", "ready": "not ready", "not-ready": "dns: no healthy upstream",
		"reload-result": "refused", "reload-error": "edgegw.yaml:12:5", "config-file": "/etc/edgegw/edgegw.yaml", "devices-count": "60",
	} {
		if got := text(vctx, id); !strings.Contains(got, want) {
			t.Errorf("overview #%s = %q, want %q", id, got, want)
		}
	}
	subs := text(vctx, "subsystems")
	for _, want := range []string{"wg0", "branch-b", "degraded", "1 peer,"} {
		if !strings.Contains(subs, want) {
			t.Errorf("subsystems table lacks %q:\n%s", want, subs)
		}
	}
	// Live: the uptime moves and polls land without a reload.
	up := text(vctx, "uptime")
	if _, err := chromedp.Run(vctx, chromedp.Poll[bool](`document.getElementById("uptime").textContent !== `+jsString(up)+
		` && Number(document.getElementById("updated").dataset.polls) >= 3`, chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		t.Errorf("the overview is not live (uptime stayed %q): %v", up, err)
	}
	if !strings.Contains(text(vctx, "uptime"), "1 h 30 min") {
		t.Errorf("uptime %q, want about 1 h 30 min", text(vctx, "uptime"))
	}
	screenshot(vctx, "overview")
	// The page load as the browser timed it (a benchmark's number, not an
	// assertion: CI machines are loaded).
	if ms, err := chromedp.Run(vctx, chromedp.Evaluate[float64](`performance.getEntriesByType("navigation")[0].duration`)); err == nil {
		t.Logf("console page load (navigation to load event, TLS, on a veth link): %.1f ms", ms)
	}

	// Tunnels.
	if err := chromedp.Do(vctx, chromedp.Click(chromedp.ID("nav-tunnels")), chromedp.WaitVisible(chromedp.ID("page-tunnels"))); err != nil {
		t.Fatal(err)
	}
	wg := text(vctx, "wireguard")
	for _, want := range []string{"1 of 1 peer online", "alice-laptop", "alice@corp.test", "198.51.100.7:40000", "100.96.0.2/32", "online"} {
		if !strings.Contains(wg, want) {
			t.Errorf("WireGuard section lacks %q:\n%s", want, wg)
		}
	}
	st := text(vctx, "site-tunnels")
	for _, want := range []string{"branch-b", "gre", "degraded", "203.0.113.9", "12.50 ms", "100 / 7"} {
		if !strings.Contains(st, want) {
			t.Errorf("site tunnels lack %q:\n%s", want, st)
		}
	}
	if r := text(vctx, "routes"); !strings.Contains(r, "10.20.0.0/16 dev branch-b") {
		t.Errorf("routes: %s", r)
	}
	screenshot(vctx, "tunnels")

	// Devices: the viewer sees them and no revoke button.
	if err := chromedp.Do(vctx, chromedp.Click(chromedp.ID("nav-devices")), chromedp.WaitVisible(chromedp.ID("page-devices"))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(vctx, chromedp.Poll[bool](`document.getElementById("device-range").textContent === "1–50 of 60"`)); err != nil {
		t.Errorf("device pager: %q (%v)", text(vctx, "device-range"), err)
	}
	if n, err := chromedp.Run(vctx, chromedp.Evaluate[int](`document.querySelectorAll("[data-revoke]").length`)); err != nil || n != 0 {
		t.Errorf("a viewer sees %d revoke buttons (%v)", n, err)
	}
	vdone()

	// An admin: search, page, revoke with a confirmation.
	actx2, adone := session("admin")
	defer adone()
	login(actx2, adminTok)
	err := chromedp.Do(actx2,
		chromedp.Click(chromedp.ID("nav-devices")),
		chromedp.WaitVisible(chromedp.ID("page-devices")),
		chromedp.Click(chromedp.ID("device-next")),
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(actx2, chromedp.Poll[bool](`document.getElementById("device-range").textContent === "51–60 of 60"`)); err != nil {
		t.Errorf("second page: %q (%v)", text(actx2, "device-range"), err)
	}
	err = chromedp.Do(actx2,
		chromedp.SendKeys(chromedp.ID("device-q"), target.Email),
		chromedp.Click(chromedp.ID("device-go")),
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(actx2, chromedp.Poll[bool](`document.getElementById("device-range").textContent === "1–1 of 1"`)); err != nil {
		t.Fatalf("search for %s: %q (%v)", target.Email, text(actx2, "device-range"), err)
	}
	err = chromedp.Do(actx2,
		chromedp.Click(chromedp.CSS(`[data-revoke="`+target.ID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-confirm="`+target.ID+`"]`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := e.reg.Get(t.Context(), target.ID); d.Revoked {
		t.Fatal("revoked before the confirmation")
	}
	screenshot(actx2, "devices-confirm")
	if err := chromedp.Do(actx2, chromedp.Click(chromedp.CSS(`[data-confirm="`+target.ID+`"]`))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(actx2, chromedp.Poll[bool](`document.getElementById("device-message").textContent.startsWith("Revoked laptop-42")`)); err != nil {
		t.Fatalf("revoke message: %q (%v)", text(actx2, "device-message"), err)
	}
	if d, _ := e.reg.Get(t.Context(), target.ID); !d.Revoked {
		t.Fatal("the registry does not have the device revoked")
	}
	var audited bool
	for _, ev := range e.audit() {
		if ev.Action == "revoke" && ev.ResourceType == "device" && ev.ResourceID == target.ID && ev.Result && ev.Actor.ID == "ops" && ev.Actor.Interface == "UI" {
			audited = true
		}
	}
	if !audited {
		t.Errorf("no audit event for the console's revoke: %+v", e.audit())
	}
	if _, err := chromedp.Run(actx2, chromedp.Poll[bool](`document.querySelector('[data-device="`+target.ID+`"]') && document.querySelector('[data-device="`+target.ID+`"]').textContent.includes("revoked")`)); err != nil {
		t.Errorf("the list does not show the device revoked: %v", err)
	}
	screenshot(actx2, "devices")

	// Logout: back at the login form, and the session is gone.
	err = chromedp.Do(actx2, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	if err != nil {
		t.Fatal(err)
	}
	if n := e.srv.console.Sessions(); n != 1 { // the viewer's is still there
		t.Errorf("%d sessions after the admin's logout, want 1", n)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return "\"" + strings.NewReplacer("\\", "\\\\", "\"", "\\\"", "\n", "\\n").Replace(s) + "\""
}
