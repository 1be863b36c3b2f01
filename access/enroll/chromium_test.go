package enroll

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/gateway/netlab/testkit/browser"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestChromiumEnroll runs the browser path in headless Chromium: sign in
// at the provider, make the key pair with WebCrypto X25519 in the page,
// register only the public key, and get a wg-quick file identical to what
// the gateway's own writer makes; then the gateway-made key with its QR
// code. It needs Debian's chromium and fails without it (skips in -short
// mode).
func TestChromiumEnroll(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	port := e.srv.URL[strings.LastIndexByte(e.srv.URL, ':')+1:]
	// The gateway's name resolves to the test listener on loopback,
	// whose certificate is httptest's own.
	ctx := browser.New(t, browser.Options{Hosts: map[string]string{"enroll.test": "127.0.0.1"}}, 90*time.Second)
	gw := "https://enroll.test:" + port

	signIn := func() {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Navigate(gw+PathBrowser),
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), e.op.Username()),
			chromedp.SendKeys(chromedp.ID("password"), enrolltest.Password),
			chromedp.Submit(chromedp.ID("password")),
		)
		if err != nil {
			t.Fatalf("at the provider's form: %v", err)
		}
		// Wait for the enrollment page; navigations in between may fail
		// a query, so poll with a deadline.
		deadline := time.Now().Add(20 * time.Second)
		for {
			loc, err := chromedp.Run(ctx, chromedp.Location())
			if err == nil && strings.HasPrefix(loc, gw+PathCallback) {
				if err = chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("make-browser"))); err == nil {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no enrollment page: %v (at %s)", err, loc)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The key made in the browser.
	signIn()
	err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("name"), "chromium laptop"),
		chromedp.Click(chromedp.ID("make-browser")),
	)
	if err != nil {
		t.Fatal(err)
	}
	outcome, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("status").dataset.device || (document.getElementById("error").textContent && "error: " + document.getElementById("error").textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(outcome, "error: ") {
		t.Fatalf("the page failed: %s", outcome)
	}
	conf, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("config")))
	if err != nil {
		t.Fatal(err)
	}
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("download"), "href"))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := e.reg.Get(t.Context(), outcome)
	if err != nil {
		t.Fatal(err)
	}
	priv := privateKeyIn(t, conf)
	if dev.Name != "chromium laptop" || dev.PublicKey != priv.PublicKey() || dev.Email != "test-user@zitadel.ch" {
		t.Fatalf("registry has %+v; the page's private key gives %s", dev, priv.PublicKey())
	}
	if !strings.HasPrefix(href.Value, "blob:") {
		t.Fatalf("download link %q", href.Value)
	}
	var want bytes.Buffer
	err = wireguard.WriteClientConfig(&want, wireguard.ClientConfig{
		Name: "chromium laptop", PrivateKey: priv, Address: []netip.Prefix{netip.PrefixFrom(dev.Address, 32)},
		DNS: []netip.Addr{netip.MustParseAddr("100.96.0.1")}, MTU: 1420,
		GatewayPublicKey: e.gwKey.PublicKey(), Endpoint: "enroll.test:51820",
		AllowedIPs:          mustPrefixes("100.96.0.0/12", "10.0.0.0/24"),
		PersistentKeepalive: 25 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(conf) != strings.TrimSpace(want.String()) {
		t.Fatalf("the page's file differs from the gateway's writer:\n got:\n%s\nwant:\n%s", conf, want.String())
	}

	// The gateway-made key, for a phone.
	signIn()
	err = chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("name"), "chromium phone"),
		chromedp.Click(chromedp.ID("make-server")),
		chromedp.WaitVisible(chromedp.ID("server-made")),
	)
	if err != nil {
		t.Fatal(err)
	}
	qr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("qr"), "src"))
	if err != nil {
		t.Fatal(err)
	}
	if conf, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("config"))); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(qr.Value, "data:image/png;base64,") {
		t.Fatalf("QR image %.40q", qr.Value)
	}
	priv = privateKeyIn(t, conf)
	devs, _ := e.reg.List(t.Context())
	last := devs[len(devs)-1]
	if last.Name != "chromium phone" || last.PublicKey != priv.PublicKey() {
		t.Fatalf("registry's last device %+v does not hold the page's key", last)
	}
}
