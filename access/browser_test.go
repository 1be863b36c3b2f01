package access

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/gateway/netlab/testkit/browser"
)

// TestBrowserLogin runs the full browser flow in headless Chromium: visit
// the app, get the provider's login form, sign in, land back on the app with
// the upstream seeing the verified identity. It needs Debian's chromium and
// fails without it (skips in -short mode).
func TestBrowserLogin(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	e, z := zitadelEnv(t)
	_, port, _ := net.SplitHostPort(e.srv.Addr().String())

	// The app's name resolves to the proxy on loopback; its certificate
	// is the self-signed one edgegw made.
	ctx := browser.New(t, browser.Options{Hosts: map[string]string{"wiki.test": "127.0.0.1"}}, 60*time.Second)

	err := chromedp.Do(ctx,
		chromedp.Navigate("https://wiki.test:"+port+"/hello?from=browser"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), z.username()),
		chromedp.SendKeys(chromedp.ID("password"), zitadelPassword),
		chromedp.Submit(chromedp.ID("password")),
	)
	if err != nil {
		t.Fatalf("browser at the login form: %v", err)
	}
	// Wait until the browser is back on the app; navigations in between
	// may fail a query, so poll with a deadline.
	var location string
	deadline := time.Now().Add(20 * time.Second)
	for {
		location, err = chromedp.Run(ctx, chromedp.Location())
		if err == nil && strings.HasPrefix(location, "https://wiki.test:") {
			if _, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.readyState === "complete"`)); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("browser did not return to the app: %v (at %s)", err, location)
		}
		time.Sleep(50 * time.Millisecond)
	}
	body, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(location, "/hello?from=browser") {
		t.Fatalf("browser ended at %s: %s", location, body)
	}
	ec := decodeEcho(t, body)
	if got := ec.Headers.Get(HeaderEmail); got != "test-user@zitadel.ch" {
		t.Fatalf("upstream saw email %q", got)
	}
	if ec.Headers.Get(HeaderAssertion) == "" {
		t.Fatal("no assertion upstream")
	}
}
