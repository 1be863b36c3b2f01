package gateway

import (
	"bytes"
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
			g.auditReload("SIGHUP", g.reload(pctx, "SIGHUP"))
		}
	}
}

// reload reads the file again and applies only what changed. A file that
// does not validate, or a change the kernel refuses, leaves the running
// configuration in place; the error says why. A file that changed and
// applied joins the console's configuration history, as actor's reload.
func (g *Gateway) reload(pctx context.Context, actor string) error {
	g.mu.Lock()
	prev := g.running
	err := g.reloadLocked(pctx)
	applied := g.running
	g.mu.Unlock()
	if err == nil && !bytes.Equal(prev, applied) {
		g.admin.KeepReloaded(prev, applied, actor)
	}
	return err
}

// reloadLocked is reload with g.mu held (the console's apply writes the
// file and reloads under one hold).
func (g *Gateway) reloadLocked(pctx context.Context) error {
	now := time.Now()
	if g.opts.ConfigPath == "" {
		g.log.Info("reload requested, but edgegw runs on its built-in default: nothing to read")
		return errors.New("edgegw runs on its built-in default: there is no file to read")
	}
	next, data, err := load(g.opts.ConfigPath)
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
	g.running = data
	g.log.Info("configuration reloaded", "file", next.File)
	return nil
}

// apply compiles next (Prepare) and commits the plan: every part in
// start order, then the admin listeners. A plan that does not build
// changes nothing. When a part or the admin listener refuses, the parts
// already moved are put back, in reverse order; a part that cannot be put
// back is named in the error, never ignored.
func (g *Gateway) apply(pctx context.Context, next *config.Config) error {
	prev := g.plan
	if reflect.DeepEqual(prev.Config, next) {
		g.log.Info("reload: configuration unchanged")
		return nil
	}
	np, err := Prepare(next, g.prepareOptions())
	if err != nil {
		return err
	}
	if prev.Config.Appliance.StateDir != next.Appliance.StateDir {
		g.log.Warn("appliance.state_dir changes at the next start, not on reload")
	}
	if prev.Config.Log.Format != next.Log.Format {
		g.log.Warn("log.format changes at the next start, not on reload")
	}
	for i, p := range g.parts {
		if err := p.commit(pctx, prev, np); err != nil {
			return g.putBack(pctx, i, np, fmt.Errorf("%s: %w", p.name(), err))
		}
	}
	// Set every time: it re-reads the admin certificate and binds only
	// what moved. On error it keeps its listeners as they were.
	if err := g.admin.Set(next.Admin); err != nil {
		return g.putBack(pctx, len(g.parts), np, err)
	}
	g.level.Set(parseLevel(next.Log.Level))
	g.plan = np
	return nil
}

// putBack commits the running plan again to the first n parts, which
// already moved to np, in reverse order, after cause. A part that cannot
// be put back is logged, counted and joined to the error: the gateway then
// runs a mix, and the operator must know.
func (g *Gateway) putBack(pctx context.Context, n int, np *Plan, cause error) error {
	errs := []error{cause}
	for j := n - 1; j >= 0; j-- {
		if err := g.parts[j].commit(pctx, np, g.plan); err != nil {
			g.log.Error("could not put back the previous configuration", "section", g.parts[j].name(), "err", err)
			g.metrics.revertFailed()
			errs = append(errs, fmt.Errorf("and %s could not be put back, it runs the new configuration: %w", g.parts[j].name(), err))
		}
	}
	return errors.Join(errs...)
}
