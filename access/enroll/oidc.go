package enroll

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/internal/oidckeys"
	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/access/policy"
)

type discovered struct {
	oidc   *oidc.Provider
	keys   *oidckeys.KeySet
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
	// Not op.Verifier: its key set fetches the JWKS again for every token
	// with an unknown kid, which anyone can post to the enrollment API;
	// this one refetches at most every 10 s. Both verifiers share it.
	ks, algs, err := oidckeys.ForProvider(op, h.client, h.now)
	if err != nil {
		p.lastErr = fmt.Errorf("provider %q: discovery at %s: %w", p.cfg.Name, p.cfg.Issuer, err)
		return nil, p.lastErr
	}
	p.lastErr = nil
	p.disc = &discovered{
		oidc:   op,
		keys:   ks,
		device: oidc.NewVerifier(p.cfg.Issuer, ks, &oidc.Config{ClientID: p.cfg.deviceClientID(), Now: h.now, SupportedSigningAlgs: algs}),
		web:    oidc.NewVerifier(p.cfg.Issuer, ks, &oidc.Config{ClientID: p.cfg.ClientID, Now: h.now, SupportedSigningAlgs: algs}),
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

	// use names this sign-in in the one-use set: taken from the verified
	// claims (issuer, subject, issued-at, and jti, nonce and at_hash when
	// present), never from the token's text, which go-jose decodes
	// leniently, so one token has many spellings.
	use replay.Key
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
	use := tokenUseKey(idt.Issuer, idt.Subject, idt.IssuedAt, claims) // the ID token's own claims, before userinfo's
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
	l := loginFromClaims(claims, p.cfg.Name, p.cfg.GroupsClaim, st.claims)
	l.Issuer, l.Subject, l.Expiry = idt.Issuer, idt.Subject, idt.Expiry
	l.use = use
	return l, nil
}

// loginFromClaims reads the identity from an ID token's (and userinfo's)
// claims: the email unless marked unverified, the groups and the claims
// the policies read. The claims come from the provider, so any shape is
// possible; what is not a string or a list of strings is ignored.
func loginFromClaims(claims map[string]any, provider, groupsClaim string, want []string) *login {
	l := &login{Provider: provider, Claims: map[string][]string{}}
	// An address the provider says is unverified is not an identity; some
	// providers send the flag as a string.
	if e, _ := claims["email"].(string); e != "" && claims["email_verified"] != false && claims["email_verified"] != "false" {
		l.Email = strings.ToLower(e)
	}
	l.Groups = policy.ClaimStrings(claims[groupsClaim])
	for _, name := range want {
		if v := policy.ClaimStrings(claims[name]); len(v) > 0 {
			l.Claims[name] = v
		}
	}
	return l
}

// tokenUseKey names one ID token for the one-use set by what it says, not
// how it is spelled. Two tokens a provider issues to one user in the same
// second differ in jti, nonce or at_hash when the provider sends them.
func tokenUseKey(iss, sub string, iat time.Time, claims map[string]any) replay.Key {
	str := func(k string) string { s, _ := claims[k].(string); return s }
	if jti := str("jti"); jti != "" {
		return replay.KeyOf("id_token", iss, jti)
	}
	return replay.KeyOf("id_token", iss, sub, strconv.FormatInt(iat.Unix(), 10), str("nonce"), str("at_hash"))
}
