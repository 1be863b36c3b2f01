package identity

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Devices is a running gateway's view of the enrolled devices: the
// registry's latest snapshot, read lock-free by the hot paths (Access, DNS,
// flow records), and which snapshot the kernel (WireGuard peers, firewall
// identity sets) has caught up with. The registry publishes into it; the
// device loop ([Follow]) pushes what it publishes into the kernel.
type Devices struct {
	snap    atomic.Pointer[Snapshot]
	changed chan struct{} // capacity 1: "a newer snapshot is in snap"

	postureOn atomic.Bool // posture: configured (SetPosture); DeviceCompliant needs it

	mu        sync.Mutex
	applied   *Snapshot     // the last snapshot the device loop pushed
	appliedCh chan struct{} // closed (and replaced) when applied moves
}

// NewDevices returns an empty view: no registry runs.
func NewDevices() *Devices {
	return &Devices{changed: make(chan struct{}, 1), appliedCh: make(chan struct{})}
}

// Load returns the current snapshot, nil when no registry runs.
func (d *Devices) Load() *Snapshot { return d.snap.Load() }

// Publish makes s the current snapshot (nil: no registry runs) and wakes
// the device loop. It never blocks: it is the registry's subscriber.
func (d *Devices) Publish(s *Snapshot) {
	if d.snap.Swap(s) == s {
		return
	}
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// MarkApplied records that s is in the kernel.
func (d *Devices) MarkApplied(s *Snapshot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applied = s
	close(d.appliedCh)
	d.appliedCh = make(chan struct{})
}

// WaitApplied waits until s or a newer snapshot is in the kernel, so that
// an enrollment or a revocation answers only once the WireGuard peers and
// identity sets follow it.
func (d *Devices) WaitApplied(ctx context.Context, s *Snapshot) error {
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

// DeviceOwner is the Subject of the enrolled device at a (access.DeviceLookup).
func (d *Devices) DeviceOwner(a netip.Addr) (string, bool) {
	dev, ok := d.Load().ByAddr(a.Unmap())
	return dev.Subject, ok
}

// StaticIdentity is a user behind fixed tunnel addresses: a static
// WireGuard peer that carries an email or groups.
type StaticIdentity struct {
	Prefixes []netip.Prefix
	Email    string
	Groups   []string
}

// Who is the user (and device, for an enrolled one) behind an address.
type Who struct {
	Email    string
	Groups   []string
	DeviceID string // empty for a static peer
	// Quarantined: an enrolled device that fails its posture checks,
	// while posture rules run (Devices.SetPosture).
	Quarantined bool
	// Posture is the enrolled device's posture attributes (device.posture.*,
	// Device.RulePosture) while posture rules run; none for a static peer.
	Posture rules.Posture
}

// Resolver answers "who is behind this tunnel address" for every consumer
// (DNS policies and records, flow records, the firewall's identity sets'
// owners): static identities first, then the enrolled devices. It is the
// only such lookup in edgegw. Its answers are about tunnel addresses: a
// caller gives an identity to a packet only if it arrived through the
// tunnel that authenticated the address (the firewall binds its sets to the
// WireGuard interface; DNS checks the arrival interface).
type Resolver struct {
	devs   *Devices
	static atomic.Pointer[[]StaticIdentity]
}

// NewResolver resolves against devs (nil: static identities only).
func NewResolver(devs *Devices) *Resolver { return &Resolver{devs: devs} }

// SetStatic replaces the static identities (on start and reload). The
// slice is not copied: do not modify it afterwards.
func (r *Resolver) SetStatic(ids []StaticIdentity) { r.static.Store(&ids) }

// Who is the user behind a.
func (r *Resolver) Who(a netip.Addr) (Who, bool) {
	a = a.Unmap()
	if ids := r.static.Load(); ids != nil {
		for _, id := range *ids {
			for _, p := range id.Prefixes {
				if p.Contains(a) {
					return Who{Email: id.Email, Groups: id.Groups}, true
				}
			}
		}
	}
	if r.devs != nil {
		if d, ok := r.devs.Load().ByAddr(a); ok {
			w := Who{Email: d.Email, Groups: d.Groups, DeviceID: d.ID}
			if r.devs.postureOn.Load() {
				w.Quarantined, w.Posture = d.Quarantined, d.RulePosture()
			}
			return w, true
		}
	}
	return Who{}, false
}

// Handshake is when a WireGuard peer last completed a handshake.
type Handshake struct {
	PublicKey [32]byte
	At        time.Time
}

// FollowOptions are what the device loop drives.
type FollowOptions struct {
	// Apply pushes a snapshot into the kernel (WireGuard peers, identity
	// sets). The caller serialises it with its reloads.
	Apply func(*Snapshot)
	// Handshakes lists the WireGuard peers' last handshakes; Touch
	// records a device's last-seen time in the registry. Either nil: no
	// last-seen recording.
	Handshakes func() []Handshake
	Touch      func(ctx context.Context, id string, t time.Time) error
	// SeenEvery is how often last-seen times are recorded (default 10s):
	// a device shows as seen at most this much later than it connected.
	SeenEvery time.Duration
	Logger    *slog.Logger
}

// Follow is the device loop: it pushes every snapshot d publishes into the
// kernel through o.Apply and marks it applied, and every o.SeenEvery
// records in the registry when connected devices last completed a
// handshake. It returns when ctx ends; its caller owns it.
func Follow(ctx context.Context, d *Devices, o FollowOptions) error {
	if o.SeenEvery <= 0 {
		o.SeenEvery = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	tick := time.NewTicker(o.SeenEvery)
	defer tick.Stop()
	var seen map[string]time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			seen = recordSeen(ctx, d.Load(), o, seen)
			continue
		case <-d.changed:
		}
		snap := d.Load()
		o.Apply(snap)
		d.MarkApplied(snap)
	}
}

// recordSeen writes the last handshake of each connected enrolled device
// to the registry when it moved since the previous call (prev: what that
// call recorded). It returns what is known as recorded, for the devices
// connected now.
func recordSeen(ctx context.Context, snap *Snapshot, o FollowOptions, prev map[string]time.Time) map[string]time.Time {
	if o.Handshakes == nil || o.Touch == nil || snap == nil {
		return nil
	}
	hs := o.Handshakes()
	now := make(map[string]time.Time, len(hs))
	for _, h := range hs {
		d, ok := snap.ByKey(h.PublicKey)
		if !ok || h.At.IsZero() {
			continue
		}
		now[d.ID] = prev[d.ID]
		if !h.At.After(prev[d.ID]) {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := o.Touch(tctx, d.ID, h.At)
		cancel()
		if err != nil {
			o.Logger.Warn("enrolled devices: record last seen", "device", d.ID, "err", err)
			continue
		}
		now[d.ID] = h.At
	}
	return now
}
