// Package gateway is edgegw's composition root: it loads and validates the
// configuration, removes what a crashed run left in the kernel, starts one
// actor per configured subsystem, serves the admin listener, applies
// reloads, and on shutdown stops everything in reverse order so that no
// TUN device, route or nftables table of edgegw remains.
//
// New behaviour belongs in a subsystem; this package only wires them.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

// Options are the gateway's inputs from the command line.
type Options struct {
	// ConfigPath is the YAML file; empty runs the embedded default.
	ConfigPath string
	// Version is printed in logs, metrics and the status API.
	Version string
	// Reload receives a value for each reload request (SIGHUP).
	Reload <-chan struct{}
	// LogOutput receives the log; nil means stderr.
	LogOutput io.Writer
	// Started, if set, is called once every subsystem is up, with the admin
	// listener's address.
	Started func(adminAddr string)
	// Fallback, when not empty, is why the configuration could not run:
	// the gateway runs the built-in default (ConfigPath must be empty)
	// without its WireGuard tunnel, with forwarding kept off and a
	// firewall that drops every forwarded packet, its admin listener on
	// loopback, and says why in the log and at /readyz (not ready).
	Fallback string
}

// fallbackAdmin is the fallback's admin listener: local only.
const fallbackAdmin = "127.0.0.1:9100"

// Gateway is one running edgegw.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	metrics *metrics
	started time.Time
	admin   *admin.Server

	// mu guards everything below. The reload loop holds it while applying;
	// status readers hold it briefly.
	mu       sync.Mutex
	plan     *Plan  // what runs
	parts    []part // in start order; stopped in reverse
	reloadOK bool
	reloadAt time.Time
	reloadE  string
	// running is the configuration file's bytes as last applied (nil on
	// the built-in default): what a reload's history entry replaces.
	running []byte
}

// Load reads the configuration Run would use: the file, or the embedded
// default when path is empty.
func Load(path string) (*config.Config, error) {
	cfg, _, err := load(path)
	return cfg, err
}

// load is Load that also returns the file's bytes (nil for the embedded
// default): what the console's configuration history keeps.
func load(path string) (*config.Config, []byte, error) {
	if path == "" {
		cfg, err := config.Default()
		return cfg, nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := config.Parse(path, data, config.Options{})
	return cfg, data, err
}

// Run starts the gateway and blocks until ctx ends or a subsystem fails,
// then shuts down cleanly. A configuration error is returned before anything
// in the kernel changes.
func Run(ctx context.Context, opts Options) error {
	if opts.Fallback != "" && opts.ConfigPath != "" {
		return fmt.Errorf("the fallback runs the built-in default configuration, not %s", opts.ConfigPath)
	}
	cfg, running, err := load(opts.ConfigPath)
	if err != nil {
		return err
	}
	if opts.Fallback != "" {
		// Local management only, and no tunnel: with forwarding off a
		// tunnel could reach nothing but the gateway itself.
		cfg.Admin.Listen = fallbackAdmin
		cfg.Tunnels.WireGuard = nil
	}
	out := opts.LogOutput
	if out == nil {
		out = os.Stderr
	}
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	g := &Gateway{
		opts:    opts,
		log:     newLogger(out, cfg.Log.Format, level),
		level:   level,
		started: time.Now(),
		running: running,
	}
	g.metrics = newMetrics(opts.Version)
	g.metrics.reload(true, g.started)
	g.reloadOK, g.reloadAt = true, g.started
	return g.run(ctx, cfg)
}

func (g *Gateway) run(ctx context.Context, cfg *config.Config) error {
	g.log.Info("starting edgegw", "version", g.opts.Version, "config", cfg.File, "appliance", cfg.Appliance.Name)
	if g.opts.Fallback != "" {
		g.log.Error("FALLBACK: running the built-in default configuration with forwarding off (admin on "+fallbackAdmin+")",
			"reason", g.opts.Fallback)
	}
	if err := os.MkdirAll(cfg.Appliance.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	// A second edgegw must stop here, before it removes the running one's
	// table and routes as if they were a crash's leftovers.
	if err := admin.Busy(cfg.Admin.Socket); err != nil {
		return err
	}
	// Nothing is forwarded until this run's ruleset is in the kernel: a
	// leftover table (kept until the new one replaces it in one batch)
	// may be an older configuration's.
	if wasOn, err := setForwarding(false); err != nil {
		return fmt.Errorf("turn forwarding off until the firewall is applied: %w", err)
	} else if wasOn {
		g.log.Info("forwarding off until this run's firewall is applied")
	}
	rp := &rpFilter{}
	defer rp.restore()
	if err := rp.defaults(); err != nil {
		return fmt.Errorf("reverse-path filtering: %w", err)
	}
	if err := removeLeftovers(g.log); err != nil {
		return fmt.Errorf("remove leftovers of an earlier run: %w", err)
	}

	// Compile everything before anything starts: a plan that does not
	// build stops here, with the kernel as the checks above left it.
	pl, err := Prepare(cfg, g.prepareOptions())
	if err != nil {
		return err
	}

	// Parts run for the whole of run: goroutines they start are tied to
	// this context and stopped by their close.
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	sink := &recordSink{}
	devs := identity.NewDevices()
	res := identity.NewResolver(devs)
	local := newLocal()
	devicesAPI := &swapHandler{none: "No device registry runs: configure tunnels.wireguard with identity or enrollment."}
	ids := &identityPart{log: g.log, metrics: g.metrics, devs: devs, res: res, api: devicesAPI, local: local}
	fw := &fwPart{log: g.log, metrics: g.metrics, devs: devs}
	wg := &wgPart{log: g.log, metrics: g.metrics, devs: devs}
	g.parts = []part{
		ids,
		// Logpush before its producers: it takes their records from the
		// first one, and spools the last ones they hand over at shutdown.
		&logpushPart{log: g.log, metrics: g.metrics, sink: sink},
		// The sampler binds its NFLOG group before the firewall feeds it.
		&netflowPart{log: g.log, metrics: g.metrics, sink: sink, res: res},
		// The flow store and alerts take records from the sink.
		&analyticsPart{log: g.log, metrics: g.metrics, tap: &sink.analytics, sink: sink},
		fw,
		wg,
		&sitePart{log: g.log, metrics: g.metrics},
		&accessPart{log: g.log, metrics: g.metrics, sink: sink, devs: devs, local: local},
		&dnsPart{log: g.log, metrics: g.metrics, sink: sink, res: res, local: local},
		// Last: the node bids for the virtual addresses only once
		// everything behind them runs.
		&haPart{log: g.log, metrics: g.metrics},
	}
	defer g.closeParts()
	// Runs before closeParts (last in, first out): forwarding stops
	// before the firewall's table goes.
	defer g.stopForwarding()
	for _, p := range g.parts {
		if err := p.commit(pctx, nil, pl); err != nil {
			return fmt.Errorf("%s: %w", p.name(), err)
		}
	}
	devs.MarkApplied(devs.Load()) // the parts started from it
	if err := rp.strict(pl.strictRP); err != nil {
		return fmt.Errorf("reverse-path filtering: %w", err)
	}
	// Forward only once the firewall and its sampler are in place, and stop
	// before they go (stopForwarding): no packet crosses edgegw unfiltered
	// or without its sample. The fallback never forwards.
	if g.opts.Fallback == "" {
		if _, err := setForwarding(true); err != nil {
			return fmt.Errorf("turn forwarding on: %w", err)
		}
	}
	g.plan = pl

	adm, err := g.newAdmin(pctx, cfg, sink, devicesAPI, fw)
	if err != nil {
		return err
	}
	g.admin = adm
	if err := g.admin.Set(cfg.Admin); err != nil {
		return err
	}

	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.admin.Run(ectx) })
	eg.Go(func() error { return g.reloadLoop(ectx, pctx) })
	// The device loop pushes registry snapshots into the WireGuard device
	// and the identity sets under the gateway's lock, so a reload never
	// interleaves with it.
	eg.Go(func() error {
		return identity.Follow(ectx, devs, identity.FollowOptions{
			Apply: func(snap *identity.Snapshot) {
				g.mu.Lock()
				defer g.mu.Unlock()
				if err := wg.setDevices(snap); err != nil {
					g.log.Error("enrolled devices: update WireGuard peers", "err", err)
				}
				if err := fw.setDevices(snap); err != nil {
					g.log.Error("enrolled devices: update firewall identity sets", "err", err)
				}
			},
			Handshakes: func() []identity.Handshake {
				g.mu.Lock()
				defer g.mu.Unlock()
				return wg.handshakes()
			},
			Touch: func(ctx context.Context, id string, t time.Time) error {
				g.mu.Lock()
				defer g.mu.Unlock()
				return ids.touch(ctx, id, t)
			},
			Logger: g.log,
		})
	})
	g.log.Info("edgegw is up", "admin", g.admin.Addr(), "admin_socket", g.admin.Socket())
	if g.opts.Started != nil {
		g.opts.Started(g.admin.Addr())
	}
	err = eg.Wait()
	g.log.Info("shutting down")
	return err
}

// prepareOptions are the running gateway's facts for Prepare.
func (g *Gateway) prepareOptions() PrepareOptions {
	return PrepareOptions{Running: true, Fallback: g.opts.Fallback != "", Logger: g.log}
}

// stopForwarding turns forwarding off at exit, before the parts close.
// edgegw owns forwarding: it stays off until the next edgegw has its
// ruleset in the kernel.
func (g *Gateway) stopForwarding() {
	if _, err := setForwarding(false); err != nil {
		g.log.Error("turn forwarding off", "err", err)
		return
	}
	g.log.Info("forwarding off, and left off: it is on only while edgegw runs with its ruleset in the kernel")
}

// closeParts stops every part in reverse start order.
func (g *Gateway) closeParts() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.parts) - 1; i >= 0; i-- {
		g.parts[i].close()
	}
}

// notReady lists why the gateway is not ready: one line per configured
// part that is not up.
func (g *Gateway) notReady() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var r []string
	if g.opts.Fallback != "" {
		r = append(r, "fallback: the built-in default runs with forwarding off because "+g.opts.Fallback)
	}
	for _, p := range g.parts {
		if err := p.ready(); err != nil {
			r = append(r, err.Error())
		}
	}
	return r
}
