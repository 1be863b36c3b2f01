package gateway

import (
	"context"
	"log/slog"
	"reflect"
	"slices"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/bgp"
	"github.com/edgegw/edgegw/tunnel/site"
)

// sitePart runs site-to-site tunnels (GRE and IPsec), their health checks
// and the route manager, and the BGP speaker whose learned routes go to
// that route manager: the two share the routing table, so one part owns
// both (BGP to an ISP on the WAN runs without any tunnel).
type sitePart struct {
	log     *slog.Logger
	metrics *metrics
	mgr     *site.Manager
	bgp     *bgp.Manager
	sink    *site.Manager // what bgp hands learned routes to
}

func (p *sitePart) name() string { return "tunnels.site" }

// empty tells whether c has no site-to-site tunnel.
func empty(c site.Config) bool { return len(c.GRE) == 0 && len(c.IPsec) == 0 }

func (p *sitePart) commit(ctx context.Context, prev, next *Plan) error {
	if err := p.commitSite(ctx, prev, next); err != nil {
		return err
	}
	return p.commitBGP(ctx, prev, next)
}

func (p *sitePart) commitSite(ctx context.Context, prev, next *Plan) error {
	want := next.site
	if empty(want) {
		p.closeSite()
		return nil
	}
	if p.mgr != nil && prev != nil && reflect.DeepEqual(prev.site, want) &&
		config.SameFiles(prev.Config, next.Config, "tunnels.gre", "tunnels.ipsec") {
		return nil
	}
	if p.mgr == nil {
		mgr, err := site.New(ctx, site.Options{Logger: p.log, StateDir: next.Config.Appliance.StateDir})
		if err != nil {
			return err
		}
		p.mgr = mgr
		p.metrics.set("site", mgr)
	}
	// On error the root puts the previous plan back (and reports it if
	// that fails too).
	return p.mgr.Set(want)
}

// commitBGP runs the BGP speaker of next, handing its learned routes to
// the site manager that runs now (none: it learns, but installs nothing).
func (p *sitePart) commitBGP(ctx context.Context, prev, next *Plan) error {
	nc := next.Config.BGP
	if nc == nil {
		p.closeBGP()
		return nil
	}
	if p.bgp == nil {
		mgr, err := bgp.New(ctx, bgp.Options{Logger: p.log})
		if err != nil {
			return err
		}
		p.bgp, p.sink = mgr, nil
		p.metrics.set("bgp", mgr)
	}
	if p.mgr != p.sink {
		p.sink = p.mgr
		if p.mgr == nil {
			p.bgp.SetSink(nil) // not a typed nil in the interface
		} else {
			p.bgp.SetSink(p.mgr)
		}
	}
	if prev != nil && prev.Config.BGP != nil && reflect.DeepEqual(prev.Config.BGP, nc) &&
		config.SameFiles(prev.Config, next.Config, "bgp") {
		return nil
	}
	// On error the root puts the previous plan back.
	return p.bgp.Set(*nc)
}

func (p *sitePart) closeBGP() {
	if p.bgp == nil {
		return
	}
	p.metrics.set("bgp", nil)
	if err := p.bgp.Close(); err != nil {
		p.log.Error("close bgp", "err", err)
	}
	p.bgp, p.sink = nil, nil
}

func (p *sitePart) close() {
	p.closeBGP()
	p.closeSite()
}

func (p *sitePart) closeSite() {
	if p.mgr == nil {
		return
	}
	p.metrics.set("site", nil)
	if err := p.mgr.Close(); err != nil {
		p.log.Error("close site-to-site tunnels", "err", err)
	}
	p.mgr = nil
}

func (p *sitePart) ready() error { return nil }

func (p *sitePart) status(s *Status) {
	if p.bgp != nil {
		st := p.bgp.Status()
		s.BGP = &st
	}
	if p.mgr == nil {
		return
	}
	st := p.mgr.Status()
	for _, t := range st.Tunnels {
		state := "up"
		if t.Health != nil {
			state = t.Health.State.String()
		}
		t := t
		s.Tunnels = append(s.Tunnels, TunnelStatus{Name: t.Name, Kind: t.Kind, State: state, Site: &t})
	}
	s.Routes = slices.Clone(st.Routes)
	s.Steering = st.Steering
	s.DroppedByLocal = st.Dropped
}

// routesView is GET /api/v1/routes: the site manager's table (static,
// learned, connected, fallbacks) with BGP's import-range guards.
// Called with g.mu held, as every part's state is read.
func (p *sitePart) routesView() admin.RoutesView {
	var rows []tunnel.TableRoute
	if p.mgr != nil {
		rows = p.mgr.Table()
	}
	if p.bgp != nil {
		for _, g := range p.bgp.Guards() {
			rows = append(rows, tunnel.TableRoute{Prefix: g, Source: tunnel.SourceGuard, Metric: bgp.GuardMetric})
		}
	}
	tunnel.SettleTable(rows)
	v := admin.RoutesView{Routes: make([]admin.RouteRow, 0, len(rows))}
	for _, r := range rows {
		v.Routes = append(v.Routes, admin.RouteRow{Prefix: r.Prefix.String(), Via: r.Via, Source: r.Source, Priority: r.Priority,
			Weight: r.Weight, State: r.State, Steering: r.Steering, Metric: r.Metric, Active: r.Active})
	}
	return v
}

// routesView finds the site part for the admin API's routing table.
func (g *Gateway) routesView() (admin.RoutesView, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.parts {
		if sp, ok := p.(*sitePart); ok {
			return sp.routesView(), nil
		}
	}
	return admin.RoutesView{}, nil
}
