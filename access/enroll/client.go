package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/renameio/v2"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Client is the device side of enrollment: `edgegw enroll`.
type Client struct {
	// Gateway is the gateway's base URL, https://host[:port].
	Gateway string
	// HTTPClient talks to the gateway; default a 30s-timeout client.
	HTTPClient *http.Client
	// ProviderClient talks to the identity provider; default HTTPClient.
	ProviderClient *http.Client
	// Provider picks an identity provider by name; default the gateway's
	// first.
	Provider string
}

// RemoteError is a refusal from the gateway, with the message written for
// the user.
type RemoteError struct {
	Status        int
	Code, Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("the gateway refused the enrollment (%s): %s", e.Code, e.Message)
}

// Errors of the device authorization grant, for callers that branch.
var (
	ErrCodeExpired  = errors.New("the sign-in code expired before it was approved; run edgegw enroll again")
	ErrSignInDenied = errors.New("the identity provider refused the sign-in: it was denied, or the code was already used; run edgegw enroll again")
)

func (c *Client) http() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *Client) providerHTTP() *http.Client {
	if c.ProviderClient != nil {
		return c.ProviderClient
	}
	return c.http()
}

func (c *Client) base() (string, error) {
	u, err := url.Parse(c.Gateway)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil {
		return "", fmt.Errorf("gateway %q is not a URL such as https://gw.example.com", c.Gateway)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Discover reads the gateway's discovery document.
func (c *Client) Discover(ctx context.Context) (*Discovery, error) {
	base, err := c.base()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+PathDiscovery, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the gateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gateway %s: %s: is enrollment enabled there (tunnels.wireguard.enrollment)?", base+PathDiscovery, resp.Status)
	}
	d, err := parseDiscovery(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", base+PathDiscovery, err)
	}
	return d, nil
}

// parseDiscovery reads the gateway's discovery document.
func parseDiscovery(body io.Reader) (*Discovery, error) {
	var d Discovery
	if err := json.NewDecoder(body).Decode(&d); err != nil {
		return nil, fmt.Errorf("bad discovery document: %w", err)
	}
	if d.Issuer == "" || d.ClientID == "" || d.EnrollEndpoint == "" {
		return nil, errors.New("the discovery document lacks the issuer, client id or enroll endpoint")
	}
	return &d, nil
}

// DeviceFlow is a device authorization grant under way.
type DeviceFlow struct {
	Auth     *oauth2.DeviceAuthResponse // show VerificationURI(Complete) and UserCode to the user
	Provider string
	cfg      *oauth2.Config
	http     *http.Client
}

// provider picks the provider to sign in with and reads its endpoints.
func (c *Client) provider(ctx context.Context, d *Discovery) (DiscoveryProvider, oauth2.Endpoint, error) {
	p := DiscoveryProvider{Name: d.Provider, Issuer: d.Issuer, ClientID: d.ClientID, Scopes: d.Scopes}
	if c.Provider != "" && c.Provider != d.Provider {
		found := false
		for _, dp := range d.Providers {
			if dp.Name == c.Provider {
				p, found = dp, true
			}
		}
		if !found {
			return p, oauth2.Endpoint{}, fmt.Errorf("the gateway has no identity provider called %q", c.Provider)
		}
	}
	if len(p.Scopes) == 0 {
		p.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, c.providerHTTP()), p.Issuer)
	if err != nil {
		return p, oauth2.Endpoint{}, fmt.Errorf("identity provider %s: %w", p.Issuer, err)
	}
	ep := op.Endpoint()
	// A public client: the id goes in the form, never a secret.
	ep.AuthStyle = oauth2.AuthStyleInParams
	return p, ep, nil
}

// ErrNoDeviceGrant is returned by StartSignIn when the provider does not
// offer the device authorization grant; StartBrowserSignIn may work.
var ErrNoDeviceGrant = errors.New("the identity provider does not offer the device authorization grant")

// StartSignIn asks the provider chosen from d for a device code.
func (c *Client) StartSignIn(ctx context.Context, d *Discovery) (*DeviceFlow, error) {
	p, ep, err := c.provider(ctx, d)
	if err != nil {
		return nil, err
	}
	if ep.DeviceAuthURL == "" {
		return nil, fmt.Errorf("identity provider %s: %w", p.Issuer, ErrNoDeviceGrant)
	}
	hc := c.providerHTTP()
	cfg := &oauth2.Config{ClientID: p.ClientID, Endpoint: ep, Scopes: p.Scopes}
	da, err := cfg.DeviceAuth(oidc.ClientContext(ctx, hc))
	if err != nil {
		return nil, fmt.Errorf("identity provider %s: start the device sign-in: %w", p.Issuer, err)
	}
	return &DeviceFlow{Auth: da, Provider: p.Name, cfg: cfg, http: hc}, nil
}

// Tokens are what the sign-in produced.
type Tokens struct {
	IDToken     string
	AccessToken string
}

// Wait polls the provider until the user approved (or denied) the code,
// it expired, or ctx ended.
func (f *DeviceFlow) Wait(ctx context.Context) (*Tokens, error) {
	tok, err := f.cfg.DeviceAccessToken(oidc.ClientContext(ctx, f.http), f.Auth)
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "expired_token":
			return nil, ErrCodeExpired
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return nil, ErrSignInDenied
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			// DeviceAccessToken's own deadline: the code's expiry.
			return nil, ErrCodeExpired
		}
		return nil, fmt.Errorf("waiting for the sign-in: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the identity provider returned no ID token (is the openid scope allowed for this client?)")
	}
	return &Tokens{IDToken: raw, AccessToken: tok.AccessToken}, nil
}

// Register sends the public key with the sign-in to the gateway.
func (c *Client) Register(ctx context.Context, d *Discovery, provider string, t *Tokens, pub wgconf.Key, name string) (*Response, error) {
	body, _ := json.Marshal(Request{Provider: provider, IDToken: t.IDToken, AccessToken: t.AccessToken, PublicKey: pub.String(), Name: name})
	// The endpoint must be on the gateway the user named, so a tampered
	// discovery document cannot send the tokens elsewhere.
	base, err := c.base()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(d.EnrollEndpoint, base+"/") {
		return nil, fmt.Errorf("the gateway's enroll endpoint %q is not on %s", d.EnrollEndpoint, base)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.EnrollEndpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the gateway: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the gateway's answer: %w", err)
	}
	return parseRegistration(resp.StatusCode, resp.Status, b, pub)
}

// parseRegistration reads the gateway's answer to a registration of pub:
// the enrollment, or the refusal as a RemoteError. The answer becomes a
// wg-quick file, so what cannot be written into one safely is refused
// here rather than there.
func parseRegistration(status int, statusText string, b []byte, pub wgconf.Key) (*Response, error) {
	if status != http.StatusOK {
		var e struct {
			Error Error `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
			return nil, fmt.Errorf("the gateway answered %s", statusText)
		}
		return nil, &RemoteError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("the gateway's answer is not an enrollment: %w", err)
	}
	if r.Device.PublicKey != pub {
		return nil, errors.New("the gateway's answer is for another key")
	}
	if len(r.Interface.Addresses) == 0 || r.Peer.PublicKey.IsZero() || r.Peer.Endpoint == "" {
		return nil, errors.New("the gateway's answer lacks the device address, the gateway's key or its endpoint")
	}
	if r.Peer.PersistentKeepalive < 0 || r.Peer.PersistentKeepalive > 65535 || r.Interface.MTU < 0 || r.Interface.MTU > 65535 {
		return nil, errors.New("the gateway's answer has an out-of-range keepalive or MTU")
	}
	return &r, nil
}

// Prompt shows the user where to approve the sign-in: for the device grant
// the verification URL and user code, for the browser sign-in (Auth is
// then nil) the URL to open on this machine.
type Prompt func(auth *oauth2.DeviceAuthResponse, browserURL string)

// Enroll runs everything: key pair, discovery, sign-in, registration. It
// returns the private key (never sent anywhere) and the gateway's answer.
// The sign-in is the device grant, or with browser (or a provider without
// the device grant) a browser on this machine with a loopback redirect.
func (c *Client) Enroll(ctx context.Context, name string, browser bool, prompt Prompt) (wgconf.Key, *Response, error) {
	priv, err := wgconf.GeneratePrivateKey()
	if err != nil {
		return priv, nil, err
	}
	d, err := c.Discover(ctx)
	if err != nil {
		return priv, nil, err
	}
	if !browser && d.StartEndpoint != "" {
		resp, err := c.EnrollWithGateway(ctx, d, priv.PublicKey(), name, prompt)
		return priv, resp, err
	}
	var tok *Tokens
	var provider string
	if !browser {
		flow, err := c.StartSignIn(ctx, d)
		switch {
		case errors.Is(err, ErrNoDeviceGrant):
			browser = true
		case err != nil:
			return priv, nil, err
		default:
			prompt(flow.Auth, "")
			if tok, err = flow.Wait(ctx); err != nil {
				return priv, nil, err
			}
			provider = flow.Provider
		}
	}
	if browser {
		flow, err := c.StartBrowserSignIn(ctx, d)
		if err != nil {
			return priv, nil, err
		}
		prompt(nil, flow.AuthURL)
		if tok, err = flow.Wait(ctx); err != nil {
			return priv, nil, err
		}
		provider = flow.Provider
	}
	resp, err := c.Register(ctx, d, provider, tok, priv.PublicKey(), name)
	return priv, resp, err
}

// WriteConfig writes a wg-quick file readable only by its owner. Without
// overwrite an existing file is left alone (it may hold another device's
// key); with it the file is replaced in one rename.
func WriteConfig(path string, cc wgconf.ClientConfig, overwrite bool) error {
	var b bytes.Buffer
	if err := wgconf.WriteClientConfig(&b, cc); err != nil {
		return err
	}
	if !overwrite {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists; choose another file with --out or replace it with --force", path)
			}
			return err
		}
		_, err = f.Write(b.Bytes())
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	if err := renameio.WriteFile(path, b.Bytes(), 0o600, renameio.WithStaticPermissions(0o600), renameio.WithTempDir(filepath.Dir(path))); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// onGateway checks that an endpoint from discovery is on the gateway the
// user named, so a tampered discovery document cannot send the device
// elsewhere.
func (c *Client) onGateway(endpoint string) error {
	base, err := c.base()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(endpoint, base+"/") {
		return fmt.Errorf("the gateway's endpoint %q is not on %s", endpoint, base)
	}
	return nil
}

// post sends v as JSON and returns the status and the body.
func (c *Client) post(ctx context.Context, endpoint string, v any) (int, string, []byte, error) {
	if err := c.onGateway(endpoint); err != nil {
		return 0, "", nil, err
	}
	body, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http().Do(req)
	if err != nil {
		return 0, "", nil, fmt.Errorf("reach the gateway: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", nil, fmt.Errorf("read the gateway's answer: %w", err)
	}
	return resp.StatusCode, resp.Status, b, nil
}

// StartGrant asks the gateway to start a device grant for pub and name.
func (c *Client) StartGrant(ctx context.Context, d *Discovery, pub wgconf.Key, name string) (*StartResponse, error) {
	status, text, b, err := c.post(ctx, d.StartEndpoint, StartRequest{Provider: c.Provider, PublicKey: pub.String(), Name: name})
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		_, err := parseRegistration(status, text, b, pub)
		return nil, err
	}
	return parseStart(b, d)
}

// parseStart reads the gateway's answer to a grant start. The client shows
// the verification URI to the user, so it must be the gateway's own
// approval page: a tampered answer cannot send the user to a look-alike.
func parseStart(b []byte, d *Discovery) (*StartResponse, error) {
	var sr StartResponse
	if err := json.Unmarshal(b, &sr); err != nil {
		return nil, fmt.Errorf("the gateway's answer to the sign-in start is not JSON: %w", err)
	}
	if sr.Handle == "" || sr.UserCode == "" || sr.VerificationURI == "" || sr.Interval < 0 || sr.Interval > 3600 || sr.ExpiresIn <= 0 {
		return nil, errors.New("the gateway's answer to the sign-in start lacks the handle, the code or the verification URI, or has an out-of-range interval or expiry")
	}
	base := strings.TrimSuffix(d.StartEndpoint, PathStart)
	for _, u := range []string{sr.VerificationURI, sr.VerificationURIComplete} {
		if u != "" && !strings.HasPrefix(u, base+PathApprove+"?") {
			return nil, fmt.Errorf("the gateway's verification URI %q is not its approval page", u)
		}
	}
	return &sr, nil
}

// PollGrant asks the gateway once about the grant: the enrollment once
// the user approved, or nil with the seconds to wait while pending.
func (c *Client) PollGrant(ctx context.Context, d *Discovery, handle string, pub wgconf.Key, name string) (*Response, int, error) {
	status, text, b, err := c.post(ctx, d.PollEndpoint, PollRequest{Handle: handle, PublicKey: pub.String(), Name: name})
	if err != nil {
		return nil, 0, err
	}
	if status == http.StatusAccepted {
		wait, err := parsePending(b)
		return nil, wait, err
	}
	r, err := parseRegistration(status, text, b, pub)
	return r, 0, err
}

// EnrollWithGateway runs the gateway-started device grant: the gateway
// asks the provider for the code, the user approves it (the gateway's
// approval page first), and this side polls the gateway until it enrolled
// the key or refused.
func (c *Client) EnrollWithGateway(ctx context.Context, d *Discovery, pub wgconf.Key, name string, prompt Prompt) (*Response, error) {
	sr, err := c.StartGrant(ctx, d, pub, name)
	if err != nil {
		return nil, err
	}
	prompt(&oauth2.DeviceAuthResponse{
		UserCode: sr.UserCode, VerificationURI: sr.VerificationURI, VerificationURIComplete: sr.VerificationURIComplete,
		Expiry: time.Now().Add(time.Duration(sr.ExpiresIn) * time.Second), Interval: int64(sr.Interval),
	}, "")
	wait := max(1, sr.Interval)
	for {
		t := time.NewTimer(time.Duration(wait) * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for the sign-in: %w", ctx.Err())
		case <-t.C:
		}
		resp, next, err := c.PollGrant(ctx, d, sr.Handle, pub, name)
		var re *RemoteError
		switch {
		case errors.As(err, &re) && re.Code == CodeGrantExpired:
			return nil, ErrCodeExpired
		case errors.As(err, &re) && re.Code == CodeGrantDenied:
			return nil, ErrSignInDenied
		case errors.As(err, &re) && re.Code == CodeProviderUnavailable:
			continue // the gateway asks the provider again at the next poll
		case err != nil:
			return nil, err
		case resp != nil:
			return resp, nil
		}
		wait = next
	}
}

// parsePending reads a 202 answer to a poll: the seconds to wait, at
// least 1 and at most a minute whatever the gateway says.
func parsePending(b []byte) (int, error) {
	var p Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return 0, fmt.Errorf("the gateway's pending answer is not JSON: %w", err)
	}
	if p.Status != statusPending {
		return 0, fmt.Errorf("the gateway's pending answer has status %q", p.Status)
	}
	return min(60, max(1, p.Interval)), nil
}
