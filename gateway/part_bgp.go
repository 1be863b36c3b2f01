package gateway

import (
	"context"
	"log/slog"
	"reflect"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/bgp"
	"github.com/edgegw/edgegw/tunnel/site"
)

// bgpPart runs the BGP speaker. Routes it learns go to the site-to-site
// manager (the route manager's owner), so it comes after sitePart: each
// apply hands the speaker the site manager that runs now.
type bgpPart struct {
	log     *slog.Logger
	metrics *metrics
	// site returns the running site-to-site manager, nil without tunnels;
	// called from apply only, on the reload loop that changes it.
	site func() *site.Manager
	mgr  *bgp.Manager
	sink *site.Manager // what mgr hands learned routes to
}

func (p *bgpPart) name() string { return "bgp" }

func (p *bgpPart) apply(ctx context.Context, prev, next *config.Config) error {
	if next.BGP == nil {
		p.close()
		return nil
	}
	if p.mgr == nil {
		mgr, err := bgp.New(ctx, bgp.Options{Logger: p.log})
		if err != nil {
			return err
		}
		p.mgr, p.sink = mgr, nil
		p.metrics.set("bgp", mgr)
	}
	if s := p.site(); s != p.sink {
		p.sink = s
		if s == nil {
			p.mgr.SetSink(nil) // not a typed nil in the interface
		} else {
			p.mgr.SetSink(s)
		}
	}
	if prev != nil && prev.BGP != nil && reflect.DeepEqual(prev.BGP, next.BGP) && config.SameFiles(prev, next, "bgp") {
		return nil
	}
	if err := p.mgr.Set(*next.BGP); err != nil {
		if prev != nil && prev.BGP != nil {
			p.mgr.Set(*prev.BGP) // best effort back to what ran
		}
		return err
	}
	return nil
}

func (p *bgpPart) close() {
	if p.mgr == nil {
		return
	}
	p.metrics.set("bgp", nil)
	if err := p.mgr.Close(); err != nil {
		p.log.Error("close bgp", "err", err)
	}
	p.mgr, p.sink = nil, nil
}

func (p *bgpPart) ready() error { return nil }

func (p *bgpPart) status(s *Status) {
	if p.mgr == nil {
		return
	}
	st := p.mgr.Status()
	s.BGP = &st
}

// siteManager returns the site-to-site part's running manager, for the
// BGP part.
func (g *Gateway) siteManager() *site.Manager {
	for _, p := range g.parts {
		if sp, ok := p.(*sitePart); ok {
			return sp.mgr
		}
	}
	return nil
}
