package gateway

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
)

// reloadLoop owns reloads: one at a time, each validated whole before
// anything changes. pctx is the context parts run under.
func (g *Gateway) reloadLoop(ctx, pctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-g.opts.Reload:
			if !ok {
				<-ctx.Done()
				return nil
			}
			g.auditReload("SIGHUP", g.reload(pctx))
		}
	}
}

// reload reads the file again and applies only what changed. A file that
// does not validate, or a change the kernel refuses, leaves the running
// configuration in place; the error says why.
func (g *Gateway) reload(pctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.opts.ConfigPath == "" {
		g.log.Info("reload requested, but edgegw runs on its built-in default: nothing to read")
		return errors.New("edgegw runs on its built-in default: there is no file to read")
	}
	next, err := config.Load(g.opts.ConfigPath, config.Options{})
	if err == nil {
		err = g.apply(pctx, next)
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
		return err
	}
	g.reloadE = ""
	g.log.Info("configuration reloaded", "file", next.File)
	return nil
}

// apply moves every part from g.cfg to next, in start order. If a part
// fails, the parts already moved are put back, in reverse order.
func (g *Gateway) apply(pctx context.Context, next *config.Config) error {
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
	for i, p := range g.parts {
		if err := p.apply(pctx, prev, next); err != nil {
			for j := i - 1; j >= 0; j-- {
				if rerr := g.parts[j].apply(pctx, next, prev); rerr != nil {
					g.log.Error("could not put back the previous configuration", "section", g.parts[j].name(), "err", rerr)
				}
			}
			return fmt.Errorf("%s: %w", p.name(), err)
		}
	}
	// Set every time: it re-reads the admin certificate and binds only
	// what moved.
	if err := g.admin.Set(next.Admin); err != nil {
		// The parts run the new configuration; the admin listeners stay
		// as they were, and the reload counts as failed so that it is
		// noticed.
		next.Admin = prev.Admin
		g.cfg = next
		return err
	}
	g.level.Set(parseLevel(next.Log.Level))
	g.logPending(next)
	g.cfg = next
	return nil
}
