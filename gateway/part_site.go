package gateway

import (
	"context"
	"log/slog"
	"reflect"
	"slices"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/site"
)

// sitePart runs site-to-site tunnels (GRE and IPsec), their health checks
// and the route manager.
type sitePart struct {
	log     *slog.Logger
	metrics *metrics
	mgr     *site.Manager
}

func (p *sitePart) name() string { return "tunnels.site" }

// empty tells whether c has no site-to-site tunnel.
func empty(c site.Config) bool { return len(c.GRE) == 0 && len(c.IPsec) == 0 }

func (p *sitePart) commit(ctx context.Context, prev, next *Plan) error {
	want := next.site
	if empty(want) {
		p.close()
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

func (p *sitePart) close() {
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
