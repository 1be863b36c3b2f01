package enroll

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// BrowserFlow is a sign-in in a browser on this machine (RFC 8252): the
// authorization code flow with PKCE S256, redirected to a listener on
// 127.0.0.1 that only this flow owns. It is the fallback for providers
// without the device grant.
type BrowserFlow struct {
	AuthURL  string // open this in a browser on this machine
	Provider string

	cfg      *oauth2.Config
	http     *http.Client
	state    string
	nonce    string
	verifier string
	srv      *http.Server
	done     chan struct{} // closed when the server goroutine returned
	result   chan callbackResult
	once     sync.Once
}

type callbackResult struct {
	code string
	err  error
}

// StartBrowserSignIn listens on a loopback port and builds the URL the
// user opens. The listener lives until Wait returns or Close.
func (c *Client) StartBrowserSignIn(ctx context.Context, d *Discovery) (*BrowserFlow, error) {
	p, ep, err := c.provider(ctx, d)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the sign-in's redirect: %w", err)
	}
	f := &BrowserFlow{
		Provider: p.Name, http: c.providerHTTP(),
		state: randomString(24), nonce: randomString(24), verifier: oauth2.GenerateVerifier(),
		done: make(chan struct{}), result: make(chan callbackResult, 1),
	}
	f.cfg = &oauth2.Config{ClientID: p.ClientID, Endpoint: ep, Scopes: p.Scopes, RedirectURL: "http://" + ln.Addr().String() + "/callback"}
	f.AuthURL = f.cfg.AuthCodeURL(f.state, oidc.Nonce(f.nonce), oauth2.S256ChallengeOption(f.verifier))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", f.callback)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(f.done)
		f.srv.Serve(ln)
	}()
	return f, nil
}

func (f *BrowserFlow) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.state)) != 1 {
		http.Error(w, "This sign-in does not belong to the waiting edgegw enroll.", http.StatusBadRequest)
		return
	}
	res := callbackResult{code: q.Get("code")}
	if e := q.Get("error"); e != "" {
		res.err = fmt.Errorf("%w (%s: %s)", ErrSignInDenied, e, q.Get("error_description"))
	}
	select {
	case f.result <- res:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "Signed in. You can close this window and return to edgegw enroll.")
	default:
		http.Error(w, "This sign-in was already completed.", http.StatusConflict)
	}
}

// Wait waits for the browser's redirect and exchanges the code.
func (f *BrowserFlow) Wait(ctx context.Context) (*Tokens, error) {
	defer f.Close()
	var res callbackResult
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the sign-in in the browser: %w", ctx.Err())
	case res = <-f.result:
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := f.cfg.Exchange(oidc.ClientContext(ctx, f.http), res.code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		return nil, fmt.Errorf("complete the sign-in: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the identity provider returned no ID token (is the openid scope allowed for this client?)")
	}
	// The gateway checks the signature; the nonce only this client knows.
	if n, err := tokenNonce(raw); err != nil || subtle.ConstantTimeCompare([]byte(n), []byte(f.nonce)) != 1 {
		return nil, errors.New("the ID token is not from this sign-in (nonce mismatch)")
	}
	return &Tokens{IDToken: raw, AccessToken: tok.AccessToken}, nil
}

// Close stops the loopback listener; it is safe to call more than once.
func (f *BrowserFlow) Close() {
	f.once.Do(func() {
		f.srv.Close()
		<-f.done
	})
}

// tokenNonce reads the nonce claim of a JWT without checking it.
func tokenNonce(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", err
	}
	return c.Nonce, nil
}
