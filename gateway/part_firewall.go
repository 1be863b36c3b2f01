package gateway

import (
	"context"
	"log/slog"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
)

// fwPart owns edgegw's nftables table: masquerade on the WAN now, the
// Magic-Firewall rules as they land.
type fwPart struct {
	log   *slog.Logger
	table *firewall.Table
	wan   string // the WAN interface in use, resolved from the default route if unset
}

func (p *fwPart) name() string { return "firewall" }

func (p *fwPart) apply(ctx context.Context, prev, next *config.Config) error {
	if prev != nil && prev.Interfaces.WAN == next.Interfaces.WAN {
		return nil
	}
	wan := next.Interfaces.WAN
	if wan == "" {
		var err error
		if wan, err = defaultRouteInterface(); err != nil {
			return err
		}
		if wan == "" {
			p.log.Warn("no interfaces.wan and no default route: internet-bound traffic is not masqueraded")
		}
	}
	if p.table == nil {
		p.table = firewall.New(p.log)
	}
	if err := p.table.Apply(firewall.Compile(firewall.Spec{WAN: wan})); err != nil {
		return err
	}
	p.wan = wan
	return nil
}

func (p *fwPart) close() {
	if p.table == nil {
		return
	}
	if err := p.table.Close(); err != nil {
		p.log.Error("remove nftables table", "err", err)
	}
	p.table = nil
}

func (p *fwPart) ready() error { return nil }

func (p *fwPart) status(s *Status) { s.WAN = p.wan }
