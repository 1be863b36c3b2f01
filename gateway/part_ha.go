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
	wan     func() string // the WAN interface the firewall part resolved
	node    *ha.Node
}

func (p *haPart) name() string { return "ha" }

// links are the interfaces the virtual addresses go on.
func (p *haPart) links(cfg *config.Config) ha.Links {
	l := ha.Links{WAN: p.wan()}
	if len(cfg.Interfaces.LAN) > 0 {
		l.LAN = cfg.Interfaces.LAN[0]
	}
	return l
}

func (p *haPart) apply(_ context.Context, prev, next *config.Config) error {
	if next.HA == nil {
		p.close()
		return nil
	}
	if p.node != nil && prev != nil && prev.HA != nil && reflect.DeepEqual(*prev.HA, *next.HA) &&
		p.links(prev) == p.links(next) && config.SameFiles(prev, next, "ha") {
		return nil
	}
	// A changed section restarts keepalived: the peer holds the
	// addresses meanwhile, or this node takes them back within seconds.
	p.close()
	n, err := ha.New(*next.HA, ha.Options{Logger: p.log, StateDir: next.Appliance.StateDir, Links: p.links(next)})
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
	s.HA = &st
}
