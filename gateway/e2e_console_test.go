package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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
