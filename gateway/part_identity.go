package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/config"
)

// devices is the gateway's view of the enrolled devices: the registry's
// latest snapshot, read lock-free by the hot paths (Access, DNS, flows) and
// pushed by the device loop into the WireGuard device and the firewall's
// identity sets.
type devices struct {
	snap    atomic.Pointer[identity.Snapshot]
	changed chan struct{} // capacity 1: "a newer snapshot is in snap"

	mu        sync.Mutex
	applied   *identity.Snapshot // the last snapshot the device loop pushed
	appliedCh chan struct{}      // closed (and replaced) when applied moves
}

func newDevices() *devices {
	return &devices{changed: make(chan struct{}, 1), appliedCh: make(chan struct{})}
}

// markApplied records that the device loop pushed s into the kernel.
func (d *devices) markApplied(s *identity.Snapshot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applied = s
	close(d.appliedCh)
	d.appliedCh = make(chan struct{})
}

// waitApplied waits until the device loop has pushed s or a newer
// snapshot, so that an enrollment or revocation answers only once the
// WireGuard peers and identity sets follow it.
func (d *devices) waitApplied(ctx context.Context, s *identity.Snapshot) error {
	for {
		d.mu.Lock()
		a, ch := d.applied, d.appliedCh
		d.mu.Unlock()
		if a == s || (a != nil && s != nil && (a.Generation() > s.Generation() ||
			a.Generation() == s.Generation() && !a.Built().Before(s.Built()))) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// load returns the current snapshot, nil when no registry runs.
func (d *devices) load() *identity.Snapshot { return d.snap.Load() }

func (d *devices) publish(s *identity.Snapshot) {
	if d.snap.Swap(s) == s {
		return
	}
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// DeviceOwner implements access.DeviceLookup.
func (d *devices) DeviceOwner(a netip.Addr) (string, bool) {
	s := d.load()
	if s == nil {
		return "", false
	}
	dev, ok := s.ByAddr(a.Unmap())
	return dev.Subject, ok
}

// identityPart runs the device registry when WireGuard is configured with
// an identity section or enrollment: it owns the registry and the goroutine
// that keeps its snapshot current.
type identityPart struct {
	log     *slog.Logger
	metrics *metrics
	devs    *devices
	api     *swapHandler // the admin API's /api/v1/devices

	reg   *identity.Registry
	opts  identity.Options // what reg was opened with
	unsub func()
	run   actor
}

func (p *identityPart) name() string { return "identity" }

// registryOptions is what the registry needs from cfg; ok is false when no
// registry should run.
func registryOptions(cfg *config.Config) (identity.Options, bool) {
	wg := cfg.Tunnels.WireGuard
	if wg == nil || (cfg.Identity == nil && wg.Enrollment == nil) {
		return identity.Options{}, false
	}
	o := identity.Options{
		Store:    identityOf(cfg).Store,
		StateDir: cfg.Appliance.StateDir,
		Pool:     wg.Address,
		Reserved: []netip.Addr{wg.Address.Addr()},
	}
	for _, peer := range wg.Peers {
		for _, pfx := range peer.AllowedIPs {
			if pfx.IsSingleIP() && wg.Address.Contains(pfx.Addr()) {
				o.Reserved = append(o.Reserved, pfx.Addr())
			}
		}
	}
	return o, true
}

func (p *identityPart) apply(ctx context.Context, prev, next *config.Config) error {
	o, on := registryOptions(next)
	if !on {
		p.close()
		return nil
	}
	if p.reg != nil && sameRegistry(p.opts, o) {
		return nil
	}
	o.Logger = p.log.With("component", "identity")
	reg, err := identity.Open(ctx, o)
	if err != nil {
		return err
	}
	p.close()
	p.reg, p.opts = reg, o
	p.unsub = reg.Subscribe(p.devs.publish)
	p.devs.publish(reg.Snapshot())
	p.metrics.set("identity", reg.Collector())
	api := enroll.NewAdmin(reg, enroll.AdminOptions{
		Logger:  p.log,
		Revoked: func(ctx context.Context, _ identity.Device) { p.sync(ctx, reg) },
	})
	p.metrics.set("devices-api", api)
	p.api.set(api)
	p.run.start(ctx, reg.Run)
	p.log.Info("device registry open", "store", storeName(o.Store), "devices", reg.Snapshot().Len())
	return nil
}

// sameRegistry tells whether a reload can keep the open registry.
func sameRegistry(a, b identity.Options) bool {
	return a.Store == b.Store && a.StateDir == b.StateDir && a.Pool == b.Pool &&
		slices.Equal(a.Reserved, b.Reserved) && reflect.DeepEqual(a.Now, b.Now)
}

// storeName hides a postgres URL's password in logs.
func storeName(s string) string {
	if s == "" || s == "sqlite" {
		return "sqlite"
	}
	return "postgres"
}

// sync brings the registry's snapshot, and so the WireGuard peers and the
// identity sets, up to date before an enrollment or a revocation answers.
// It waits at most 5 s for the device loop; the change applies anyway.
func (p *identityPart) sync(ctx context.Context, reg *identity.Registry) {
	if err := reg.Refresh(ctx); err != nil {
		p.log.Warn("device registry refresh", "err", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.devs.waitApplied(wctx, reg.Snapshot()); err != nil {
		p.log.Warn("enrolled devices: the kernel did not follow the registry in time", "err", err)
	}
}

func (p *identityPart) close() {
	if p.reg == nil {
		return
	}
	p.unsub()
	p.api.set(nil)
	p.metrics.set("devices-api", nil)
	if err := p.run.stop(); err != nil {
		p.log.Error("device registry stopped", "err", err)
	}
	p.metrics.set("identity", nil)
	if err := p.reg.Close(); err != nil {
		p.log.Error("close device registry", "err", err)
	}
	p.reg = nil
	p.devs.publish(nil)
}

func (p *identityPart) ready() error { return nil }

func (p *identityPart) status(s *Status) {
	if p.reg == nil {
		return
	}
	s.Devices = p.reg.Snapshot().Len()
}
