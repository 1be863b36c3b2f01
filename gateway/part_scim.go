package gateway

import (
	"context"
	"log/slog"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/scim"
	"github.com/edgegw/edgegw/gateway/config"
)

// scimPart serves SCIM provisioning (scim:) at /scim/v2 on the Access
// listener, writing the provider's changes to the device registry. It has
// no goroutine of its own: requests run on the Access listener's.
type scimPart struct {
	log     *slog.Logger
	metrics *metrics
	local   *local
	ids     *identityPart

	srv *scim.Server
	reg *identity.Registry // the registry srv writes to
	dir string             // the state dir srv's store is in
}

func (p *scimPart) name() string { return "scim" }

func (p *scimPart) apply(ctx context.Context, prev, next *config.Config) error {
	if next.SCIM == nil || p.ids.reg == nil {
		p.close()
		return nil
	}
	// Read on every apply: a reload after the token file was rewritten
	// (its fingerprint changed) rotates the token, and a file that cannot
	// be read fails the reload with the old token still in force.
	tok, err := scim.ReadToken(next.SCIM.TokenFile)
	if err != nil {
		return err
	}
	if p.srv != nil && p.reg == p.ids.reg && p.dir == next.Appliance.StateDir {
		p.srv.SetToken(tok)
		return nil
	}
	reg := p.ids.reg
	srv, err := scim.Open(ctx, scim.Options{
		StateDir: next.Appliance.StateDir,
		Registry: reg,
		// A deactivation is answered once the WireGuard peers and
		// identity sets follow the registry.
		Applied: func(ctx context.Context) { p.ids.sync(ctx, reg) },
		Token:   tok,
		Logger:  p.log.With("component", "scim"),
	})
	if err != nil {
		return err
	}
	p.close()
	p.srv, p.reg, p.dir = srv, reg, next.Appliance.StateDir
	p.metrics.set("scim", srv.Collector())
	p.local.scim.set(srv)
	users, groups := srv.Counts()
	p.log.Info("SCIM provisioning served at "+scim.Prefix, "users", users, "groups", groups)
	return nil
}

func (p *scimPart) close() {
	if p.srv == nil {
		return
	}
	p.local.scim.set(nil)
	p.metrics.set("scim", nil)
	if err := p.srv.Close(); err != nil {
		p.log.Error("close SCIM store", "err", err)
	}
	p.srv, p.reg = nil, nil
}

func (p *scimPart) ready() error { return nil }

func (p *scimPart) status(s *Status) {}
