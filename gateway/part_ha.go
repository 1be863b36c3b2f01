package gateway

import (
	"context"
	"log/slog"
	"reflect"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/ha"
)

// haPart runs this node's keepalived when the ha: section is set.
type haPart struct {
	log     *slog.Logger
	metrics *metrics
	node    *ha.Node
	digest  string // of the must-match settings, shown in status
}

func (p *haPart) name() string { return "ha" }

func (p *haPart) commit(_ context.Context, pp, np *Plan) error {
	next := np.Config
	if next.HA == nil {
		p.close()
		return nil
	}
	p.digest = np.haDigest
	if p.node != nil && pp != nil && pp.Config.HA != nil && reflect.DeepEqual(*pp.Config.HA, *next.HA) &&
		pp.haLinks == np.haLinks && config.SameFiles(pp.Config, next, "ha") {
		return nil
	}
	// A changed section restarts keepalived: the peer holds the
	// addresses meanwhile, or this node takes them back within seconds.
	p.close()
	n, err := ha.New(*next.HA, ha.Options{Logger: p.log, StateDir: next.Appliance.StateDir, Links: np.haLinks})
	if err != nil {
		return err
	}
	p.node = n
	p.metrics.set("ha", n)
	return nil
}

func (p *haPart) close() {
	if p.node == nil {
		return
	}
	p.metrics.set("ha", nil)
	if err := p.node.Close(); err != nil {
		p.log.Error("close ha", "err", err)
	}
	p.node = nil
}

// ready fails while this node sees a split brain: both nodes active.
func (p *haPart) ready() error {
	if p.node == nil {
		return nil
	}
	return p.node.Err()
}

func (p *haPart) status(s *Status) {
	if p.node == nil {
		return
	}
	st := p.node.Status()
	st.ConfigDigest = p.digest
	s.HA = &st
}
