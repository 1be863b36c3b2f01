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

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
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
}

// Gateway is one running edgegw.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	metrics *metrics
	started time.Time

	// mu guards everything below; only the reload loop and shutdown write.
	mu       sync.Mutex
	cfg      *config.Config
	wan      string // resolved WAN interface
	fw       *firewall.Table
	wg       *wireguard.Device
	admin    *admin
	reloadOK bool
	reloadAt time.Time
	reloadE  string
}

// Load reads the configuration Run would use: the file, or the embedded
// default when path is empty.
func Load(path string) (*config.Config, error) {
	if path == "" {
		return config.Default()
	}
	return config.Load(path, config.Options{})
}

// Run starts the gateway and blocks until ctx ends or a subsystem fails,
// then shuts down cleanly. A configuration error is returned before anything
// in the kernel changes.
func Run(ctx context.Context, opts Options) error {
	cfg, err := Load(opts.ConfigPath)
	if err != nil {
		return err
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
		cfg:     cfg,
	}
	g.metrics = newMetrics(opts.Version)
	g.metrics.reload(true, g.started)
	g.reloadOK, g.reloadAt = true, g.started
	return g.run(ctx)
}

func (g *Gateway) run(ctx context.Context) (err error) {
	cfg := g.cfg
	g.log.Info("starting edgegw", "version", g.opts.Version, "config", cfg.File, "appliance", cfg.Appliance.Name)
	if err := os.MkdirAll(cfg.Appliance.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := removeLeftovers(g.log); err != nil {
		return fmt.Errorf("remove leftovers of an earlier run: %w", err)
	}
	restoreForwarding, err := forwarding()
	if err != nil {
		return err
	}

	// Everything started from here is stopped by stop, in reverse order,
	// whether start finishes or fails half-way.
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer stop()
	stops = append(stops, restoreForwarding)

	g.fw = firewall.New(g.log)
	stops = append(stops, func() {
		if err := g.fw.Close(); err != nil {
			g.log.Error("remove nftables table", "err", err)
		}
	})
	if err := g.applyFirewall(cfg); err != nil {
		return err
	}
	if cfg.Tunnels.WireGuard != nil {
		if err := g.startWireGuard(cfg); err != nil {
			return err
		}
	}
	stops = append(stops, func() { g.stopWireGuard() })
	g.logPending(cfg)

	g.admin = &admin{
		log:    g.log.With("component", "admin"),
		reg:    g.metrics.reg,
		status: g.Status,
		ready:  g.notReady,
	}
	if err := g.admin.bind(cfg.Admin.Listen); err != nil {
		return err
	}

	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.admin.run(ectx) })
	eg.Go(func() error { return g.reloadLoop(ectx) })
	g.log.Info("edgegw is up", "admin", g.admin.addr())
	if g.opts.Started != nil {
		g.opts.Started(g.admin.addr())
	}
	err = eg.Wait()
	g.log.Info("shutting down")
	return err
}

// logPending says which configured sections this build validates but does
// not act on yet, so an operator is never misled about what is enforced.
func (g *Gateway) logPending(cfg *config.Config) {
	pending := map[string]bool{
		"tunnels.gre":                  len(cfg.Tunnels.GRE) > 0,
		"tunnels.ipsec":                len(cfg.Tunnels.IPsec) > 0,
		"routes":                       len(cfg.Routes) > 0,
		"firewall.rules":               cfg.Firewall != nil && len(cfg.Firewall.Rules) > 0,
		"access":                       cfg.Access != nil,
		"gateway.dns":                  cfg.Gateway.DNS != nil,
		"netflow":                      cfg.Netflow != nil,
		"logpush":                      len(cfg.Logpush) > 0,
		"identity":                     cfg.Identity != nil,
		"tunnels.wireguard.enrollment": cfg.Tunnels.WireGuard != nil && cfg.Tunnels.WireGuard.Enrollment != nil,
	}
	for section, on := range pending {
		if on {
			g.log.Warn("section is validated but not yet enforced by this build", "section", section)
		}
	}
}

func (g *Gateway) applyFirewall(cfg *config.Config) error {
	wan := cfg.Interfaces.WAN
	if wan == "" {
		var err error
		if wan, err = defaultRouteInterface(); err != nil {
			return err
		}
		if wan == "" {
			g.log.Warn("no interfaces.wan and no default route: internet-bound traffic is not masqueraded")
		}
	}
	if err := g.fw.Apply(firewall.Compile(firewall.Spec{WAN: wan})); err != nil {
		return err
	}
	g.wan = wan
	return nil
}

func (g *Gateway) startWireGuard(cfg *config.Config) error {
	dev, err := wireguard.New(cfg.Tunnels.WireGuard.Config, wireguard.Options{
		Logger:   g.log,
		StateDir: cfg.Appliance.StateDir,
		UAPI:     true,
	})
	if err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	g.wg = dev
	g.metrics.setWireGuard(dev.Collector())
	g.log.Info("wireguard up", "interface", dev.Name(), "public_key", dev.PublicKey().String(),
		"listen_port", cfg.Tunnels.WireGuard.ListenPort, "peers", len(cfg.Tunnels.WireGuard.Peers))
	return nil
}

func (g *Gateway) stopWireGuard() {
	if g.wg == nil {
		return
	}
	g.metrics.setWireGuard(nil)
	if err := g.wg.Close(); err != nil {
		g.log.Error("close wireguard", "err", err)
	}
	g.wg = nil
}

// notReady lists why the gateway is not ready: one line per configured
// subsystem that is not up.
func (g *Gateway) notReady() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var r []string
	if g.cfg.Tunnels.WireGuard != nil && g.wg == nil {
		r = append(r, "wireguard: device is down")
	}
	return r
}
