package enroll

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/policy"
)

type discovered struct {
	oidc   *oidc.Provider
	device *oidc.IDTokenVerifier // aud: the device client
	web    *oidc.IDTokenVerifier // aud: the web client (browser path)
}

const discoveryRetry = 5 * time.Second

// discover runs OIDC discovery once it first succeeds; a failure is
// retried by the next request rather than by a goroutine, so there is
// nothing to stop.
func (h *Handler) discover(ctx context.Context, p *provider) (*discovered, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disc != nil {
		return p.disc, nil
	}
	// A provider that just failed is not asked again for a few seconds, so
	// a crowd of users retrying does not turn into a crowd of requests.
	if p.lastErr != nil && h.now().Sub(p.lastTry) < discoveryRetry {
		return nil, p.lastErr
	}
	p.lastTry = h.now()
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, h.client), p.cfg.Issuer)
	if err != nil {
		p.lastErr = fmt.Errorf("provider %q: discovery at %s: %w", p.cfg.Name, p.cfg.Issuer, err)
		return nil, p.lastErr
	}
	p.lastErr = nil
	p.disc = &discovered{
		oidc:   op,
		device: op.Verifier(&oidc.Config{ClientID: p.cfg.deviceClientID(), Now: h.now}),
		web:    op.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, Now: h.now}),
	}
	return p.disc, nil
}

func (p *provider) oauth2(d *discovered, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: p.secret, Endpoint: d.oidc.Endpoint(),
		RedirectURL: redirect, Scopes: p.cfg.Scopes,
	}
}

// login is who a verified ID token says the user is.
type login struct {
	Provider string
	Issuer   string
	Subject  string // the provider's sub
	Email    string // "" unless present and not marked unverified
	Groups   []string
	Claims   map[string][]string // only those the policies read
	Expiry   time.Time
}

// tokenError is a token the gateway refuses; code is the API error code.
type tokenError struct {
	code string
	err  error
}

func (e *tokenError) Error() string { return e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// verify checks an ID token (signature, iss, aud, exp by go-oidc; age,
// at_hash and one use here) and reads the identity, asking userinfo with
// the access token for claims the ID token lacks.
func (h *Handler) verify(ctx context.Context, st *state, p *provider, d *discovered, v *oidc.IDTokenVerifier, rawID, access, nonce string) (*login, error) {
	ctx = oidc.ClientContext(ctx, h.client)
	idt, err := v.Verify(ctx, rawID)
	if err != nil {
		return nil, &tokenError{"invalid_token", err}
	}
	now := h.now()
	if idt.IssuedAt.IsZero() || now.Sub(idt.IssuedAt) > st.opts.MaxTokenAge {
		return nil, &tokenError{"token_expired", fmt.Errorf("id token issued at %s, more than %s ago", idt.IssuedAt.Format(time.RFC3339), st.opts.MaxTokenAge)}
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return nil, &tokenError{"invalid_token", errors.New("id token nonce does not match this login")}
	}
	if idt.AccessTokenHash != "" && access != "" {
		if err := idt.VerifyAccessToken(access); err != nil {
			return nil, &tokenError{"invalid_token", err}
		}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, &tokenError{"invalid_token", err}
	}
	if _, ok := claims["email"]; !ok && access != "" && d.oidc.UserInfoEndpoint() != "" {
		ui, err := d.oidc.UserInfo(ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: access, TokenType: "Bearer"}))
		if err != nil {
			return nil, &tokenError{"invalid_token", fmt.Errorf("userinfo: %w", err)}
		}
		if ui.Subject != idt.Subject {
			return nil, &tokenError{"invalid_token", errors.New("userinfo subject differs from the id token's")}
		}
		extra := map[string]any{}
		if err := ui.Claims(&extra); err == nil {
			for k, v := range extra {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	l := &login{Provider: p.cfg.Name, Issuer: idt.Issuer, Subject: idt.Subject, Expiry: idt.Expiry, Claims: map[string][]string{}}
	// An address the provider says is unverified is not an identity; some
	// providers send the flag as a string.
	if e, _ := claims["email"].(string); e != "" && claims["email_verified"] != false && claims["email_verified"] != "false" {
		l.Email = strings.ToLower(e)
	}
	l.Groups = policy.ClaimStrings(claims[p.cfg.GroupsClaim])
	for _, name := range st.claims {
		if v := policy.ClaimStrings(claims[name]); len(v) > 0 {
			l.Claims[name] = v
		}
	}
	return l, nil
}

// onceSet remembers values until they expire, to refuse a second use of an
// ID token or a browser ticket.
type onceSet struct {
	mu   sync.Mutex
	seen map[[32]byte]time.Time
}

func newOnceSet() *onceSet { return &onceSet{seen: map[[32]byte]time.Time{}} }

const maxOnce = 100000 // bounds memory under a flood of distinct tokens

// add records v until exp and reports whether it was new.
func (o *onceSet) add(v string, now, exp time.Time) bool {
	k := sha256.Sum256([]byte(v))
	o.mu.Lock()
	defer o.mu.Unlock()
	if t, ok := o.seen[k]; ok && now.Before(t) {
		return false
	}
	if len(o.seen) >= maxOnce/2 {
		for k, t := range o.seen {
			if !now.Before(t) {
				delete(o.seen, k)
			}
		}
	}
	if len(o.seen) >= maxOnce {
		return false // fail closed rather than forget
	}
	o.seen[k] = exp
	return true
}

// remove forgets v, for a use that did not complete (the registry was
// down), so the user can retry with the same sign-in.
func (o *onceSet) remove(v string) {
	k := sha256.Sum256([]byte(v))
	o.mu.Lock()
	delete(o.seen, k)
	o.mu.Unlock()
}
