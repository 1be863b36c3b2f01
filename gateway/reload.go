package gateway

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
)

// reloadLoop owns reloads: one at a time, each validated whole before
// anything changes.
func (g *Gateway) reloadLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-g.opts.Reload:
			if !ok {
				<-ctx.Done()
				return nil
			}
			g.reload()
		}
	}
}

// reload reads the file again and applies only what changed. A file that
// does not validate, or a change the kernel refuses, leaves the running
// configuration in place.
func (g *Gateway) reload() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.opts.ConfigPath == "" {
		g.log.Info("reload requested, but edgegw runs on its built-in default: nothing to read")
		return
	}
	next, err := config.Load(g.opts.ConfigPath, config.Options{})
	if err == nil {
		err = g.apply(next)
	}
	g.reloadAt = now
	g.reloadOK = err == nil
	g.metrics.reload(err == nil, now)
	if err != nil {
		g.reloadE = err.Error()
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			for _, e := range cerrs.List {
				g.log.Error("reload rejected; the previous configuration keeps running", "error", e.Error())
			}
		} else {
			g.log.Error("reload failed; the previous configuration keeps running", "err", err)
		}
		return
	}
	g.reloadE = ""
	g.log.Info("configuration reloaded", "file", next.File)
}

// apply moves the running gateway from g.cfg to next. On failure it puts
// back what it had changed.
func (g *Gateway) apply(next *config.Config) error {
	prev := g.cfg
	if reflect.DeepEqual(prev, next) {
		g.log.Info("reload: configuration unchanged")
		return nil
	}
	if prev.Appliance.StateDir != next.Appliance.StateDir {
		g.log.Warn("appliance.state_dir changes at the next start, not on reload")
	}
	if prev.Log.Format != next.Log.Format {
		g.log.Warn("log.format changes at the next start, not on reload")
	}
	g.level.Set(parseLevel(next.Log.Level))

	if prev.Interfaces.WAN != next.Interfaces.WAN {
		if err := g.applyFirewall(next); err != nil {
			return err
		}
	}
	if err := g.applyWireGuard(prev, next); err != nil {
		if prev.Interfaces.WAN != next.Interfaces.WAN {
			g.applyFirewall(prev)
		}
		return err
	}
	if prev.Admin.Listen != next.Admin.Listen {
		if err := g.admin.bind(next.Admin.Listen); err != nil {
			// Everything else is applied; the admin listener stays where
			// it was, and the reload counts as failed so it is noticed.
			g.cfg = next
			g.cfg.Admin.Listen = prev.Admin.Listen
			return err
		}
	}
	g.logPending(next)
	g.cfg = next
	return nil
}

func (g *Gateway) applyWireGuard(prev, next *config.Config) error {
	p, n := prev.Tunnels.WireGuard, next.Tunnels.WireGuard
	switch {
	case p == nil && n == nil:
		return nil
	case p == nil:
		return g.startWireGuard(next)
	case n == nil:
		g.stopWireGuard()
		return nil
	case reflect.DeepEqual(p.Config, n.Config):
		return nil
	case g.wg == nil:
		return g.startWireGuard(next)
	}
	if err := g.wg.Set(n.Config); err != nil {
		g.wg.Set(p.Config) // best effort back to what ran
		return err
	}
	return nil
}
