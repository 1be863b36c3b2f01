package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"sync/atomic"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// wgPart runs the remote-access WireGuard device. Its peers are the static
// ones from the configuration plus every active enrolled device.
type wgPart struct {
	log        *slog.Logger
	metrics    *metrics
	devs       *devices
	dev        *wireguard.Device
	static     *wireguard.Config // the configuration's device, without enrolled peers
	stateDir   string
	applied    wireguard.Config // what dev runs: static plus enrolled peers
	configured bool
	// pub is dev's public key, for readers outside the reload lock
	// (enrollment answers).
	pub atomic.Pointer[wireguard.Key]
}

// withDevices adds the enrolled devices in snap to c's peers. A device
// whose key is also a static peer's is left out: the static peer wins.
func withDevices(c wireguard.Config, snap *identity.Snapshot, log *slog.Logger) wireguard.Config {
	if snap == nil || snap.Len() == 0 {
		return c
	}
	static := make(map[wireguard.Key]bool, len(c.Peers))
	for _, p := range c.Peers {
		static[p.PublicKey] = true
	}
	peers := make([]wireguard.Peer, len(c.Peers), len(c.Peers)+snap.Len())
	copy(peers, c.Peers)
	for d := range snap.All() {
		k := wireguard.Key(d.PublicKey)
		if static[k] {
			log.Warn("enrolled device has a static peer's key; the static peer is used", "device", d.ID, "email", d.Email)
			continue
		}
		peers = append(peers, wireguard.Peer{
			Name:       d.ID,
			PublicKey:  k,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(d.Address, d.Address.BitLen())},
			Email:      d.Email,
			Groups:     d.Groups,
		})
	}
	c.Peers = peers
	return c
}

func (p *wgPart) name() string { return "tunnels.wireguard" }

func (p *wgPart) apply(ctx context.Context, prev, next *config.Config) error {
	var pc *wireguard.Config
	if prev != nil && prev.Tunnels.WireGuard != nil {
		pc = &prev.Tunnels.WireGuard.Config
	}
	var nc *wireguard.Config
	if next.Tunnels.WireGuard != nil {
		nc = &next.Tunnels.WireGuard.Config
	}
	switch {
	case nc == nil:
		p.close()
	case p.dev == nil:
		eff := withDevices(*nc, p.devs.load(), p.log)
		if err := p.start(eff, next.Appliance.StateDir); err != nil {
			return err
		}
		p.applied = eff
	case pc != nil && reflect.DeepEqual(*pc, *nc):
	default:
		if err := p.set(withDevices(*nc, p.devs.load(), p.log), next.Appliance.StateDir); err != nil {
			return err
		}
	}
	p.configured = nc != nil
	p.static = nc
	p.stateDir = next.Appliance.StateDir
	return nil
}

// set moves the running device to c.
func (p *wgPart) set(c wireguard.Config, stateDir string) error {
	// Set diffs peers itself: unchanged peers keep their sessions.
	err := p.dev.Set(c)
	if errors.Is(err, wireguard.ErrRecreate) {
		// A new interface name: nothing was applied; replace the
		// device (its peers reconnect to the new one).
		p.close()
		err = p.start(c, stateDir)
	}
	if err != nil {
		return err
	}
	p.applied = c
	return nil
}

// setDevices follows a new registry snapshot: enrolled devices become
// peers, revoked and expired ones stop being peers.
func (p *wgPart) setDevices(snap *identity.Snapshot) error {
	if p.dev == nil || p.static == nil {
		return nil
	}
	eff := withDevices(*p.static, snap, p.log)
	if reflect.DeepEqual(eff.Peers, p.applied.Peers) {
		return nil
	}
	return p.set(eff, p.stateDir)
}

func (p *wgPart) start(c wireguard.Config, stateDir string) error {
	dev, err := wireguard.New(c, wireguard.Options{Logger: p.log, StateDir: stateDir, UAPI: true})
	if err != nil {
		return err
	}
	p.dev = dev
	pub := dev.PublicKey()
	p.pub.Store(&pub)
	p.metrics.set("wireguard", dev.Collector())
	return nil
}

func (p *wgPart) close() {
	if p.dev == nil {
		return
	}
	p.metrics.set("wireguard", nil)
	p.pub.Store(nil)
	if err := p.dev.Close(); err != nil {
		p.log.Error("close wireguard", "err", err)
	}
	p.dev = nil
}

func (p *wgPart) ready() error {
	if p.configured && p.dev == nil {
		return errors.New("wireguard: device is down")
	}
	return nil
}

func (p *wgPart) status(s *Status) {
	if p.dev == nil {
		return
	}
	ws := p.dev.Status()
	s.Tunnels = append(s.Tunnels, TunnelStatus{Name: p.dev.Name(), Kind: "wireguard", State: "up", WireGuard: &ws})
}
