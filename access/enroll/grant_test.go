package enroll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/gateway/netlab/testkit/browser"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// gatewayOnly turns the client-token path off, as require_gateway_grant
// does.
func gatewayOnly(o *Options) { o.ClientTokens = false }

// secondGateway is another gateway (its own handler, registry and
// name) in front of the same provider and clients as e.
func secondGateway(t *testing.T, e *env) (*Handler, *enrolltest.Registry, *httptest.Server) {
	t.Helper()
	opts := e.opts
	reg := enrolltest.NewRegistry(netip.MustParseAddr("100.97.0.2"), 8)
	opts.Registry, opts.GatewayName, opts.Changed = reg, "gw-two.test", nil
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return h, reg, srv
}

func newKey(t testing.TB) wgconf.Key {
	t.Helper()
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// pollUntil polls the gateway until it answers other than pending.
func pollUntil(t *testing.T, c *Client, d *Discovery, handle string, pub wgconf.Key, name string) (*Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		r, wait, err := c.PollGrant(ctx, d, handle, pub, name)
		if err != nil || r != nil {
			return r, err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still pending after 30 s")
		case <-time.After(time.Duration(wait) * time.Second):
		}
	}
}

func remoteCode(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

// TestGatewayGrant: the gateway starts the grant, the user approves it at
// the provider, and polling with the handle enrolls exactly the key and
// name the grant started with; the handle is then spent.
func TestGatewayGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, gatewayOnly)
	c := e.client()
	ctx := t.Context()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.StartEndpoint != e.srv.URL+PathStart || d.PollEndpoint != e.srv.URL+PathPoll || d.Gateway != "gw-one.test" {
		t.Fatalf("discovery %+v", d)
	}
	pub := newKey(t)
	sr, err := c.StartGrant(ctx, d, pub, "alice laptop")
	if err != nil {
		t.Fatal(err)
	}
	if sr.Gateway != "gw-one.test" || !strings.HasPrefix(sr.VerificationURI, e.srv.URL+PathApprove+"?code=") || sr.ExpiresIn <= 0 || sr.Interval < 1 {
		t.Fatalf("start answer %+v", sr)
	}
	// Before approval: pending, without an enrollment.
	if r, wait, err := c.PollGrant(ctx, d, sr.Handle, pub, "alice laptop"); err != nil || r != nil || wait < 1 {
		t.Fatalf("before approval: %v %v %d", r, err, wait)
	}
	// Another key or name cannot ride on the grant.
	if _, _, err := c.PollGrant(ctx, d, sr.Handle, newKey(t), "alice laptop"); remoteCode(err) != CodeGrantUnknown {
		t.Fatalf("poll with another key: %v", err)
	}
	if _, _, err := c.PollGrant(ctx, d, sr.Handle, pub, "mallory box"); remoteCode(err) != CodeGrantUnknown {
		t.Fatalf("poll with another name: %v", err)
	}
	if err := e.op.Approve(ctx, sr.UserCode, e.op.Username(), true); err != nil {
		t.Fatal(err)
	}
	r, err := pollUntil(t, c, d, sr.Handle, pub, "alice laptop")
	if err != nil {
		t.Fatal(err)
	}
	if r.Device.PublicKey != pub || r.Device.Name != "alice laptop" || r.Device.Email != "test-user@zitadel.ch" {
		t.Fatalf("enrolled %+v", r.Device)
	}
	if dev, err := e.reg.Get(ctx, r.Device.ID); err != nil || dev.PublicKey != pub {
		t.Fatalf("registry: %+v %v", dev, err)
	}
	// A replayed handle is refused and enrolls nothing more.
	if _, _, err := c.PollGrant(ctx, d, sr.Handle, pub, "alice laptop"); remoteCode(err) != CodeTokenReused {
		t.Fatalf("replayed handle: %v", err)
	}
	if devs, _ := e.reg.List(ctx); len(devs) != 1 {
		t.Fatalf("%d devices after a replay", len(devs))
	}
	// A handle nobody issued.
	if _, _, err := c.PollGrant(ctx, d, randomString(32), pub, "alice laptop"); remoteCode(err) != CodeGrantUnknown {
		t.Fatalf("made-up handle: %v", err)
	}
}

// TestGatewayGrantNotRedeemableElsewhere: a device code started by one
// gateway and approved by the user cannot be redeemed at another gateway,
// neither with the handle nor with an ID token brought by a client; the
// gateway that started it still enrolls.
func TestGatewayGrantNotRedeemableElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, gatewayOnly)
	_, reg2, srv2 := secondGateway(t, e)
	ctx := t.Context()
	c1 := e.client()
	d1, err := c1.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2 := &Client{Gateway: srv2.URL, HTTPClient: srv2.Client()}
	d2, err := c2.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Gateway != "gw-two.test" {
		t.Fatalf("second gateway's name %q", d2.Gateway)
	}
	pub := newKey(t)
	sr, err := c1.StartGrant(ctx, d1, pub, "phished laptop")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.op.Approve(ctx, sr.UserCode, e.op.Username(), true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c2.PollGrant(ctx, d2, sr.Handle, pub, "phished laptop"); remoteCode(err) != CodeGrantUnknown {
		t.Fatalf("handle redeemed at the other gateway: %v", err)
	}
	// The other gateway's approval page does not know the code either.
	resp, err := srv2.Client().Get(srv2.URL + PathApprove + "?code=" + sr.UserCode)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "was not started by the gateway gw-two.test") {
		t.Fatalf("other gateway's approval page: %s\n%s", resp.Status, body)
	}
	// A client that did its own device grant gets a valid ID token, but
	// the gateway only takes sign-ins it started.
	tok := e.signIn(t, e.op.Username(), 1)[0]
	if _, err := c2.Register(ctx, d2, "", tok, newKey(t), "own grant"); remoteCode(err) != CodeClientTokens {
		t.Fatalf("client token at gw-two: %v", err)
	}
	if devs, _ := reg2.List(ctx); len(devs) != 0 {
		t.Fatalf("the second gateway registered %d devices", len(devs))
	}
	if r, err := pollUntil(t, c1, d1, sr.Handle, pub, "phished laptop"); err != nil || r.Device.PublicKey != pub {
		t.Fatalf("the starting gateway: %v %v", r, err)
	}
}

// TestGatewayGrantExpiry: a grant not approved before the provider's code
// expires ends with grant_expired and registers nothing; the approval
// page no longer shows it.
func TestGatewayGrantExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{DeviceLifetime: 2 * time.Second}, gatewayOnly)
	c := e.client()
	ctx := t.Context()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := newKey(t)
	sr, err := c.StartGrant(ctx, d, pub, "slow laptop")
	if err != nil {
		t.Fatal(err)
	}
	if sr.ExpiresIn > 2 {
		t.Fatalf("expires_in %d, the provider's code lives 2 s", sr.ExpiresIn)
	}
	if _, err := pollUntil(t, c, d, sr.Handle, pub, "slow laptop"); remoteCode(err) != CodeGrantExpired {
		t.Fatalf("after expiry: %v", err)
	}
	resp, err := e.srv.Client().Get(sr.VerificationURIComplete)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("approval page of an expired code: %s", resp.Status)
	}
	if devs, _ := e.reg.List(ctx); len(devs) != 0 {
		t.Fatalf("%d devices registered", len(devs))
	}
}

// TestGatewayGrantDenied: a user who denies at the provider ends the
// grant with grant_denied.
func TestGatewayGrantDenied(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, gatewayOnly)
	c := e.client()
	ctx := t.Context()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := newKey(t)
	sr, err := c.StartGrant(ctx, d, pub, "unknown box")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.op.Approve(ctx, sr.UserCode, e.op.Username(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := pollUntil(t, c, d, sr.Handle, pub, "unknown box"); remoteCode(err) != CodeGrantDenied {
		t.Fatalf("denied: %v", err)
	}
}

// TestClientEnrollUsesGatewayGrant: Client.Enroll (edgegw enroll) takes
// the gateway-started grant when discovery offers it, and the prompt shows
// the gateway's approval page.
func TestClientEnrollUsesGatewayGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, gatewayOnly)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	shown := make(chan string, 1)
	var approveErr error
	done := make(chan struct{})
	priv, r, err := e.client().Enroll(ctx, "cli laptop", false, func(da *oauth2.DeviceAuthResponse, _ string) {
		shown <- da.VerificationURI
		go func() {
			defer close(done)
			approveErr = e.op.Approve(ctx, da.UserCode, e.op.Username(), true)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if approveErr != nil {
		t.Fatal(approveErr)
	}
	if uri := <-shown; !strings.HasPrefix(uri, e.srv.URL+PathApprove) {
		t.Fatalf("prompt showed %q, not the gateway's approval page", uri)
	}
	if r.Device.PublicKey != priv.PublicKey() || r.Device.Name != "cli laptop" {
		t.Fatalf("enrolled %+v", r.Device)
	}
	if !strings.Contains(e.logs.String(), "device grant started") {
		t.Fatalf("no log of the grant:\n%s", e.logs.String())
	}
}

// TestApprovePageChromium: headless Chromium opens the verification URI
// the client shows, sees the gateway's and the device's names, follows the
// link to the provider and approves; the gateway then enrolls the device.
// It needs Debian's chromium and fails without it (skips in -short mode).
func TestApprovePageChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, gatewayOnly)
	c := e.client()
	d, err := c.Discover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pub := newKey(t)
	sr, err := c.StartGrant(t.Context(), d, pub, "bob's <laptop>")
	if err != nil {
		t.Fatal(err)
	}
	ctx := browser.New(t, browser.Options{}, 90*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate(sr.VerificationURIComplete), chromedp.WaitVisible(chromedp.ID("continue"))); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"gateway": "gw-one.test", "device": "bob's <laptop>", "user-code": sr.UserCode} {
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("#%s shows %q, want %q", id, got, want)
		}
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("continue")),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), e.op.Username()),
		chromedp.SendKeys(chromedp.ID("password"), enrolltest.Password),
		chromedp.Click(chromedp.CSS(`button[value="allow"]`)),
	)
	if err != nil {
		t.Fatalf("at the provider's device form: %v", err)
	}
	r, err := pollUntil(t, c, d, sr.Handle, pub, "bob's <laptop>")
	if err != nil {
		t.Fatal(err)
	}
	if r.Device.Name != "bob's <laptop>" || r.Device.PublicKey != pub {
		t.Fatalf("enrolled %+v", r.Device)
	}
	testkit.Eventually(t, 5*time.Second, "the grant removed after enrolling", func() error {
		if n := e.h.grants.Len(); n != 0 {
			return fmt.Errorf("%d grants in progress", n)
		}
		return nil
	})
}

// TestGrantsBounded: the grants in progress are bounded; past the bound a
// start is refused rather than an older grant forgotten, and expired
// grants make room.
func TestGrantsBounded(t *testing.T) {
	g := newGrants()
	now := time.Unix(1_800_000_000, 0)
	mk := func(i int, exp time.Time) *grant {
		return &grant{handle: fmt.Sprint("h", i), auth: &oauth2.DeviceAuthResponse{UserCode: fmt.Sprint("C-", i)}, expires: exp}
	}
	for i := range maxGrants {
		exp := now.Add(time.Minute)
		if i == 7 {
			exp = now.Add(time.Second)
		}
		if err := g.add(mk(i, exp), now); err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
	if err := g.add(mk(maxGrants, now.Add(time.Minute)), now); err == nil {
		t.Fatal("a grant past the bound was accepted")
	}
	if g.byUserCode("c1", now) == nil || g.byUserCode("C-1", now) == nil {
		t.Fatal("user codes are not found regardless of case and dash")
	}
	later := now.Add(2 * time.Second) // grant 7 expired
	if g.byUserCode("C-7", later) != nil {
		t.Fatal("an expired grant is still shown")
	}
	if err := g.add(mk(maxGrants, later.Add(time.Minute)), later); err != nil {
		t.Fatalf("no room after an expiry: %v", err)
	}
	if g.Len() != maxGrants {
		t.Fatalf("%d grants", g.Len())
	}
}
