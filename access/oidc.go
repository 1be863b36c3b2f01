package access

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/internal/oidckeys"
	"github.com/edgegw/edgegw/access/policy"
)

// provider is one identity provider. It is usable once discovery has
// succeeded; until then err says why not.
type provider struct {
	cfg    identity.Provider
	secret string

	disc   atomic.Pointer[discovered]
	err    atomic.Pointer[string]
	cancel context.CancelFunc // stops discovery; nil when not started
}

type discovered struct {
	oidc     *oidc.Provider
	verifier *oidc.IDTokenVerifier
	keys     *oidckeys.KeySet
}

func newProvider(pc identity.Provider, secret string) *provider {
	p := &provider{cfg: pc, secret: secret}
	msg := "discovery not started"
	p.err.Store(&msg)
	return p
}

func (p *provider) same(o *provider) bool {
	return o != nil && p.secret == o.secret && p.cfg.Name == o.cfg.Name && p.cfg.Issuer == o.cfg.Issuer &&
		p.cfg.ClientID == o.cfg.ClientID && p.cfg.GroupsClaim == o.cfg.GroupsClaim &&
		strings.Join(p.cfg.Scopes, " ") == strings.Join(o.cfg.Scopes, " ")
}

func (p *provider) ready() error {
	if p.disc.Load() != nil {
		return nil
	}
	if m := p.err.Load(); m != nil {
		return errors.New(*m)
	}
	return errors.New("not discovered yet")
}

func (s *Server) reconcileProviders(snap *snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reconcileProvidersLocked(snap)
}

// reconcileProvidersLocked keeps providers whose settings did not change
// (with their discovery), starts new ones and stops removed ones.
func (s *Server) reconcileProvidersLocked(snap *snapshot) {
	next := map[string]*provider{}
	for name, p := range snap.providers {
		if old := s.providers[name]; p.same(old) {
			next[name] = old
			continue
		}
		next[name] = p
		if s.running {
			s.startDiscovery(p)
		}
	}
	for name, old := range s.providers {
		if next[name] != old && old.cancel != nil {
			old.cancel()
		}
		if next[name] == nil {
			s.metrics.providerUp.DeleteLabelValues(name)
		}
	}
	s.providers = next
	snap.providers = next
}

// startDiscovery runs OIDC discovery for p in the background, retrying
// with backoff until it succeeds or the provider is dropped.
func (s *Server) startDiscovery(p *provider) {
	if p.cancel != nil || p.disc.Load() != nil {
		return
	}
	ctx, cancel := context.WithCancel(s.runCtx)
	p.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		backoff := 500 * time.Millisecond
		for {
			err := s.discover(ctx, p)
			if err == nil {
				s.metrics.providerUp.WithLabelValues(p.cfg.Name).Set(1)
				s.log.Info("identity provider discovered", "provider", p.cfg.Name, "issuer", p.cfg.Issuer)
				return
			}
			s.metrics.providerUp.WithLabelValues(p.cfg.Name).Set(0)
			msg := fmt.Sprintf("discovery at %s failed (retrying in %s): %v", p.cfg.Issuer, backoff, err)
			p.err.Store(&msg)
			s.log.Warn("identity provider unreachable", "provider", p.cfg.Name, "err", err, "retry", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
		}
	}()
}

func (s *Server) discover(ctx context.Context, p *provider) error {
	cctx := oidc.ClientContext(ctx, s.opts.HTTPClient)
	op, err := oidc.NewProvider(cctx, p.cfg.Issuer)
	if err != nil {
		return err
	}
	// Not op.Verifier: its key set fetches the JWKS again for every token
	// with an unknown kid; this one refetches at most every 10 s.
	ks, algs, err := oidckeys.ForProvider(op, s.opts.HTTPClient, s.now)
	if err != nil {
		return err
	}
	v := oidc.NewVerifier(p.cfg.Issuer, ks, &oidc.Config{ClientID: p.cfg.ClientID, Now: s.now, SupportedSigningAlgs: algs})
	p.disc.Store(&discovered{oidc: op, verifier: v, keys: ks})
	return nil
}

func (p *provider) oauth2(d *discovered, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.secret,
		Endpoint:     d.oidc.Endpoint(),
		RedirectURL:  redirect,
		Scopes:       p.cfg.Scopes,
	}
}

// loginState travels, sealed, in a short-lived cookie from the login
// redirect to the callback.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Provider string `json:"p"`
	App      string `json:"a"`
	Return   string `json:"r"`
	Expires  int64  `json:"e"`
}

const loginTimeout = 10 * time.Minute

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) sealLogin(st *loginState) (string, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	return s.cookies.Load().login.seal(b)
}

func (s *Server) openLogin(v string) (*loginState, error) {
	b, err := s.cookies.Load().login.open(v)
	if err != nil {
		return nil, err
	}
	var st loginState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadToken, err)
	}
	return &st, nil
}

// verifiedLogin is what the callback learnt from the provider.
type verifiedLogin struct {
	Subject string
	Email   string
	Groups  []string
	Custom  map[string][]string
}

// exchange trades the code for tokens with the PKCE verifier, verifies the
// ID token (signature, iss, aud, exp via go-oidc; the nonce here) and reads
// the claims, asking userinfo for what the ID token lacks.
func (s *Server) exchange(ctx context.Context, p *provider, d *discovered, redirect, code string, st *loginState, want []string) (*verifiedLogin, error) {
	ctx = oidc.ClientContext(ctx, s.opts.HTTPClient)
	tok, err := p.oauth2(d, redirect).Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return nil, fmt.Errorf("code exchange: %w", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return nil, errors.New("the provider returned no id_token")
	}
	idt, err := d.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("id token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return nil, errors.New("id token: nonce does not match this login")
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, fmt.Errorf("id token: %w", err)
		}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("id token claims: %w", err)
	}
	if _, ok := claims["email"]; !ok && d.oidc.UserInfoEndpoint() != "" {
		ui, err := d.oidc.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, fmt.Errorf("userinfo: %w", err)
		}
		if ui.Subject != idt.Subject {
			return nil, errors.New("userinfo: subject differs from the id token's")
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
	l := loginFromClaims(claims, p.cfg.GroupsClaim, want)
	l.Subject = idt.Subject
	return l, nil
}

// loginFromClaims reads who the user is from the ID token's (and
// userinfo's) claims: the email unless marked unverified, the groups and
// the claims the policies read. Claims are the provider's JSON, so any
// shape can arrive; what is not a string or a list of strings is ignored.
func loginFromClaims(claims map[string]any, groupsClaim string, want []string) *verifiedLogin {
	l := &verifiedLogin{Custom: map[string][]string{}}
	// An address the provider says it has not verified is not used;
	// some providers send the flag as a string.
	if e, _ := claims["email"].(string); e != "" && claims["email_verified"] != false && claims["email_verified"] != "false" {
		l.Email = strings.ToLower(e)
	}
	l.Groups = policy.ClaimStrings(claims[groupsClaim])
	for _, name := range want {
		if v := policy.ClaimStrings(claims[name]); len(v) > 0 {
			l.Custom[name] = v
		}
	}
	return l
}
