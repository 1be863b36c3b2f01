package enroll

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestClientEnroll is the `edgegw enroll` flow end to end: a key pair made
// locally, the device authorization grant at a real provider with the
// user code approved at its form, registration, and a wg-quick file that
// stock wg-quick accepts and whose key is the registered one.
func TestClientEnroll(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := e.client()
	var shown *oauth2.DeviceAuthResponse
	priv, resp, err := c.Enroll(ctx, "alice-laptop", false, func(da *oauth2.DeviceAuthResponse, _ string) {
		shown = da
		if err := e.op.Approve(ctx, da.UserCode, e.op.Username(), true); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if shown == nil || shown.UserCode == "" || !strings.HasPrefix(shown.VerificationURI, e.srv.URL+PathApprove+"?code=") {
		t.Fatalf("prompt got %+v", shown)
	}
	dev, err := e.reg.Get(ctx, resp.Device.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dev.PublicKey != priv.PublicKey() || dev.Email != "test-user@zitadel.ch" || dev.Name != "alice-laptop" {
		t.Fatalf("registry has %+v", dev)
	}
	// The private key went nowhere: no request body or log line has it.
	if strings.Contains(e.logs.String(), priv.String()) {
		t.Fatal("the private key is in the gateway's log")
	}

	path := filepath.Join(t.TempDir(), "edgegw.conf")
	if err := WriteConfig(path, resp.ClientConfig(priv), false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode %v, %v", fi.Mode(), err)
	}
	conf, _ := os.ReadFile(path)
	for _, want := range []string{
		"PrivateKey = " + priv.String(), "Address = " + dev.Address.String() + "/32", "DNS = 100.96.0.1", "MTU = 1420",
		"PublicKey = " + e.gwKey.PublicKey().String(), "Endpoint = 127.0.0.1:51820",
		"AllowedIPs = 100.96.0.0/12, 10.0.0.0/24", "PersistentKeepalive = 25",
	} {
		if !strings.Contains(string(conf), want+"\n") {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	// A second enrollment does not overwrite the first device's file.
	if err := WriteConfig(path, resp.ClientConfig(priv), false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrite without force: %v", err)
	}
	if err := WriteConfig(path, resp.ClientConfig(priv), true); err != nil {
		t.Fatal(err)
	}
	// Stock wg-quick parses it into what `wg setconf` takes.
	t.Run("wg-quick strip", func(t *testing.T) {
		out, err := exec.Command(testkit.NeedTool(t, "wg-quick", "wireguard-tools"), "strip", path).CombinedOutput()
		if err != nil {
			t.Fatalf("wg-quick strip: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "PrivateKey = "+priv.String()) || strings.Contains(string(out), "Address") {
			t.Fatalf("wg-quick strip:\n%s", out)
		}
	})
}

// TestClientSignInRefusals covers the device grant's bad endings: a code
// nobody approved before it expired (seen by the client's clock and by the
// provider), a denied code, and a code used a second time.
func TestClientSignInRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{DeviceLifetime: 2 * time.Second}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := e.client()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *DeviceFlow {
		t.Helper()
		f, err := c.StartSignIn(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	t.Run("expired on the client's clock", func(t *testing.T) {
		f := start()
		if _, err := f.Wait(ctx); !errors.Is(err, ErrCodeExpired) {
			t.Fatalf("Wait: %v", err)
		}
	})
	t.Run("expired at the provider", func(t *testing.T) {
		f := start()
		// The client forgets the expiry, so only the provider can tell:
		// it answers expired_token once the code's lifetime is over.
		exp := f.Auth.Expiry
		f.Auth.Expiry = time.Time{}
		time.Sleep(time.Until(exp) + 200*time.Millisecond)
		if _, err := f.Wait(ctx); !errors.Is(err, ErrCodeExpired) {
			t.Fatalf("Wait: %v", err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		f := start()
		if err := e.op.Approve(ctx, f.Auth.UserCode, e.op.Username(), false); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(ctx); !errors.Is(err, ErrSignInDenied) {
			t.Fatalf("Wait: %v", err)
		}
	})
	t.Run("reused device code", func(t *testing.T) {
		f := start()
		if err := e.op.Approve(ctx, f.Auth.UserCode, e.op.Username(), true); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		f.Auth.Expiry = time.Now().Add(time.Minute) // not the client's clock: the provider refuses
		if _, err := f.Wait(ctx); !errors.Is(err, ErrSignInDenied) {
			t.Fatalf("second Wait: %v", err)
		}
	})
}

// TestClientGatewayErrors shows the gateway's refusals to the user as
// RemoteError with the gateway's message.
func TestClientGatewayErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := e.client()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := e.signIn(t, e.op.Username(), 1)[0]
	e.reg.SetDown(true)
	_, err = c.Register(ctx, d, "", tok, newPub(t), "laptop")
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != 503 || re.Code != CodeRegistryUnavailable || !strings.Contains(err.Error(), "nothing was registered") {
		t.Fatalf("Register: %v", err)
	}

	// A discovery document pointing the tokens elsewhere is refused.
	bad := *d
	bad.EnrollEndpoint = "https://evil.example/api/v1/enroll"
	if _, err := c.Register(ctx, &bad, "", tok, newPub(t), "laptop"); err == nil || !strings.Contains(err.Error(), "not on") {
		t.Fatalf("Register to another host: %v", err)
	}
	// Not a gateway URL.
	for _, g := range []string{"gw.example.com", "ftp://gw", "https://user@gw"} {
		if _, err := (&Client{Gateway: g}).Discover(ctx); err == nil {
			t.Errorf("Discover(%q) accepted", g)
		}
	}
}

func TestResponseClientConfigGolden(t *testing.T) {
	var priv, gw wireguard.Key
	for i := range priv {
		priv[i], gw[i] = byte(i), byte(100+i)
	}
	r := &Response{
		Device:    DeviceInfo{Name: "alice-laptop"},
		Interface: InterfaceInfo{Addresses: mustPrefixes("100.96.0.3/32"), MTU: 1420},
		Peer:      PeerInfo{PublicKey: gw, Endpoint: "gw.example.com:51820", AllowedIPs: mustPrefixes("100.96.0.0/12", "10.0.0.0/24"), PersistentKeepalive: 25},
	}
	path := filepath.Join(t.TempDir(), "c.conf")
	if err := WriteConfig(path, r.ClientConfig(priv), false); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	golden := filepath.Join("testdata", "client.conf")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, got, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestClientBrowserSignIn enrolls with the loopback-redirect sign-in (RFC
// 8252) instead of the device grant, and refuses a redirect carrying the
// provider's error or another sign-in's state.
func TestClientBrowserSignIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := e.client()
	var page string
	priv, resp, err := c.Enroll(ctx, "desk", true, func(da *oauth2.DeviceAuthResponse, browserURL string) {
		if da != nil || !strings.HasPrefix(browserURL, e.op.Issuer+"/") {
			t.Errorf("prompt got %v %q", da, browserURL)
			return
		}
		// The user's browser: the provider's form, then the redirect to
		// the client's loopback listener.
		jar, _ := cookiejar.New(nil)
		b := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		r, err := b.Get(browserURL)
		if err != nil {
			t.Error(err)
			return
		}
		readAll(t, r)
		form := url.Values{"id": {r.Request.URL.Query().Get("authRequestID")}, "username": {e.op.Username()}, "password": {enrolltest.Password}}
		if r, err = b.PostForm(e.op.Issuer+"/login/username", form); err != nil {
			t.Error(err)
			return
		}
		page = readAll(t, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, "Signed in.") {
		t.Fatalf("the browser ended on %q", page)
	}
	dev, err := e.reg.Get(ctx, resp.Device.ID)
	if err != nil || dev.PublicKey != priv.PublicKey() || dev.Name != "desk" || dev.Email != "test-user@zitadel.ch" {
		t.Fatalf("registry has %+v, %v", dev, err)
	}

	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.StartBrowserSignIn(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := http.Get(f.cfg.RedirectURL + "?state=other&code=x"); err != nil || r.StatusCode != 400 {
		t.Fatalf("foreign state: %v %v", r, err)
	}
	r, err := http.Get(f.cfg.RedirectURL + "?" + url.Values{"state": {f.state}, "error": {"access_denied"}}.Encode())
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("provider error redirect: %v %v", r, err)
	}
	if _, err := f.Wait(ctx); !errors.Is(err, ErrSignInDenied) {
		t.Fatalf("Wait: %v", err)
	}
	if _, err := http.Get(f.cfg.RedirectURL); err == nil {
		t.Fatal("the loopback listener outlived the sign-in")
	}
}
