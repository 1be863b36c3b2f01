package enroll

import (
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// env is a gateway's enrollment handler on a TLS listener, in front of a
// real OpenID provider and an in-memory registry.
type env struct {
	op      *enrolltest.OP
	reg     *enrolltest.Registry
	h       *Handler
	srv     *httptest.Server
	gwKey   wireguard.Key
	logs    *testkit.Buffer
	changed chan string
	caFile  string
	opts    Options // as given to New
	// tunnelDown makes the Tunnel option fail, as before the WireGuard
	// device is up.
	tunnelDown atomic.Bool
}

// staffOnly lets zitadel.ch accounts in the staff group enroll.
var staffOnly = []policy.Policy{{
	Name: "staff", Action: policy.Allow,
	Include: []policy.Selector{{EmailDomain: "zitadel.ch"}},
	Require: []policy.Selector{{Group: "staff"}},
}}

const (
	webClient    = "edgegw-web"
	webSecret    = "web-secret"
	deviceClient = "edgegw-cli"
)

func newEnv(t testing.TB, opOpts enrolltest.Options, tweak func(*Options)) *env {
	t.Helper()
	e := &env{
		op:      enrolltest.Start(t, opOpts),
		reg:     enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 8),
		logs:    &testkit.Buffer{},
		changed: make(chan string, 16),
	}
	var err error
	if e.gwKey, err = wireguard.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(webSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Policies:  staffOnly,
		KeyExpiry: 24 * time.Hour,
		Registry:  e.reg,
		Tunnel: func(context.Context) (Tunnel, error) {
			if e.tunnelDown.Load() {
				return Tunnel{}, errors.New("wireguard device wg0 not up")
			}
			return Tunnel{
				PublicKey: e.gwKey.PublicKey(), ListenPort: 51820,
				DNS:                 []netip.Addr{netip.MustParseAddr("100.96.0.1")},
				AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12"), netip.MustParsePrefix("10.0.0.0/24")},
				MTU:                 1420,
				PersistentKeepalive: 25 * time.Second,
			}, nil
		},
		Changed: func(_ context.Context, d identity.Device) { e.changed <- d.ID },
		Logger:  slog.New(slog.NewTextHandler(e.logs, nil)),
		// Most tests here exercise the client-token path (PathAPI);
		// grant_test.go turns it off.
		ClientTokens: true,
		GatewayName:  "gw-one.test",
	}
	opts.Providers = []Provider{{DeviceClientID: deviceClient}}
	opts.Providers[0].Name = "test-op"
	opts.Providers[0].Issuer = e.op.Issuer
	opts.Providers[0].ClientID = webClient
	opts.Providers[0].ClientSecretFile = secret
	opts.Providers[0].Scopes = []string{"openid", "email", "profile"}
	if tweak != nil {
		tweak(&opts)
	}
	e.opts = opts
	if e.h, err = New(opts); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(e.h)
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	e.op.AddDeviceClient(deviceClient)
	e.op.AddWebClient(webClient, webSecret, e.srv.URL+PathCallback, "https://enroll.test:"+e.srv.URL[len("https://127.0.0.1:"):]+PathCallback)
	e.caFile = filepath.Join(dir, "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw})
	if err := os.WriteFile(e.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// client is an enrollment client that trusts the test gateway.
func (e *env) client() *Client {
	return &Client{Gateway: e.srv.URL, HTTPClient: e.srv.Client()}
}

// signIn runs n device grants for username at once (the provider makes
// each wait one poll interval) and returns their tokens.
func (e *env) signIn(t testing.TB, username string, n int) []*Tokens {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := e.client()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*Tokens, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := c.StartSignIn(ctx, d)
			if err != nil {
				errs[i] = err
				return
			}
			if err := e.op.Approve(ctx, f.Auth.UserCode, username, true); err != nil {
				errs[i] = err
				return
			}
			out[i], errs[i] = f.Wait(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}
