package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// wgPart runs the remote-access WireGuard device. Its peers are the static
// ones from the configuration, held all the time, and the enrolled devices
// of the registry, created on demand when a device's handshake arrives (see
// wireguard.PeerSource): a start with 10,000 enrolled devices takes a
// quarter of a second, not the seconds wireguard-go would spend making them
// all peers.
type wgPart struct {
	log        *slog.Logger
	metrics    *metrics
	devs       *identity.Devices
	dev        *wireguard.Device
	configured bool
	// vip is the HA pair's IPv4 WAN virtual address the device runs for
	// (invalid: no pair), vip6 its IPv6 one (invalid: none); takeover
	// follows them.
	vip, vip6 netip.Addr
	takeover  *wireguard.Takeover
}

// enrolledPeers offers a registry snapshot's devices to the WireGuard
// device as on-demand peers: each may use its one assigned address.
type enrolledPeers struct{ snap *identity.Snapshot }

// peerSource is the PeerSource for snap: none without a registry, so that
// initiations from unknown keys are not even looked up.
func peerSource(snap *identity.Snapshot) wireguard.PeerSource {
	if snap == nil {
		return nil
	}
	return enrolledPeers{snap}
}

func (e enrolledPeers) OnDemandPeer(k wireguard.Key) (wireguard.Peer, bool) {
	d, ok := e.snap.ByKey(k)
	if !ok {
		return wireguard.Peer{}, false
	}
	return wireguard.Peer{
		Name:       d.ID,
		PublicKey:  k,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(d.Address, d.Address.BitLen())},
		Email:      d.Email,
		Groups:     d.Groups,
	}, true
}

func (p *wgPart) name() string { return "tunnels.wireguard" }

func (p *wgPart) commit(ctx context.Context, prev, next *Plan) error {
	var pc *wireguard.Config
	if prev != nil && prev.Config.Tunnels.WireGuard != nil {
		pc = &prev.Config.Tunnels.WireGuard.Config
	}
	var nc *wireguard.Config
	if next.Config.Tunnels.WireGuard != nil {
		nc = &next.Config.Tunnels.WireGuard.Config
	}
	stateDir := next.Config.Appliance.StateDir
	if p.dev != nil && (next.haVIP != p.vip || next.haVIP6 != p.vip6) {
		// Joining or leaving a pair changes how the device binds its
		// port (wireguard.Options.KeepSource): a new device, whose
		// peers reconnect.
		p.close()
	}
	switch {
	case nc == nil:
		p.close()
	case p.dev == nil:
		if err := p.start(*nc, stateDir, next.haVIP, next.haVIP6); err != nil {
			return err
		}
	case pc != nil && reflect.DeepEqual(*pc, *nc) && config.SameFiles(prev.Config, next.Config, "tunnels.wireguard"):
	default:
		if err := p.set(*nc, stateDir); err != nil {
			return err
		}
	}
	p.configured = nc != nil
	return nil
}

// set moves the running device to c.
func (p *wgPart) set(c wireguard.Config, stateDir string) error {
	// A Takeover knows the port it watches: follow a change.
	if p.takeover != nil && p.dev.Status().ListenPort != c.ListenPort {
		vip, vip6 := p.vip, p.vip6
		p.close()
		return p.start(c, stateDir, vip, vip6)
	}
	// Set diffs peers itself: unchanged peers keep their sessions.
	err := p.dev.Set(c)
	if errors.Is(err, wireguard.ErrRecreate) {
		// A new interface name: nothing was applied; replace the
		// device (its peers reconnect to the new one).
		vip, vip6 := p.vip, p.vip6
		p.close()
		err = p.start(c, stateDir, vip, vip6)
	}
	return err
}

// setDevices follows a new registry snapshot: enrolled devices may connect,
// and revoked and expired ones that are connected are removed.
func (p *wgPart) setDevices(snap *identity.Snapshot) error {
	if p.dev != nil {
		p.dev.SetPeerSource(peerSource(snap))
	}
	return nil
}

// start creates the device. In an HA pair (vip valid) it answers peers
// from the address they sent to and follows the virtual addresses (vip,
// and vip6 for peers on IPv6 when valid) with a Takeover, which finds
// peers by tunnel address: configured peers by their allowed addresses,
// enrolled devices in the registry's snapshot.
func (p *wgPart) start(c wireguard.Config, stateDir string, vip, vip6 netip.Addr) error {
	dev, err := wireguard.New(c, wireguard.Options{Logger: p.log, StateDir: stateDir, UAPI: true, KeepSource: vip.IsValid()})
	if err != nil {
		return err
	}
	dev.SetPeerSource(peerSource(p.devs.Load()))
	if vip.IsValid() {
		static := slices.Clone(c.Peers)
		lookup := func(a netip.Addr) (wireguard.Peer, bool) {
			for _, peer := range static {
				for _, ap := range peer.AllowedIPs {
					if ap.IsSingleIP() && ap.Addr() == a {
						return peer, true
					}
				}
			}
			if snap := p.devs.Load(); snap != nil {
				if d, ok := snap.ByAddr(a); ok {
					return enrolledPeers{snap}.OnDemandPeer(d.PublicKey)
				}
			}
			return wireguard.Peer{}, false
		}
		tk, err := dev.FollowTakeover(wireguard.TakeoverConfig{VIP: vip, VIP6: vip6, Lookup: lookup})
		if err != nil {
			dev.Close()
			return err
		}
		p.takeover = tk
	}
	p.dev, p.vip, p.vip6 = dev, vip, vip6
	p.metrics.set("wireguard", dev.Collector())
	p.metrics.set("wireguard_health", dev.HealthCollector())
	return nil
}

func (p *wgPart) close() {
	if p.dev == nil {
		return
	}
	p.metrics.set("wireguard", nil)
	p.metrics.set("wireguard_health", nil)
	if p.takeover != nil {
		p.takeover.Close() // before the device it reads
		p.takeover = nil
	}
	p.vip, p.vip6 = netip.Addr{}, netip.Addr{}
	if err := p.dev.Close(); err != nil {
		p.log.Error("close wireguard", "err", err)
	}
	p.dev = nil
}

// handshakes lists when peers last completed a handshake, for last-seen
// times. The caller holds the gateway's lock.
func (p *wgPart) handshakes() []identity.Handshake {
	if p.dev == nil {
		return nil
	}
	peers := p.dev.Status().Peers
	hs := make([]identity.Handshake, 0, len(peers))
	for _, peer := range peers {
		hs = append(hs, identity.Handshake{PublicKey: peer.PublicKey, At: peer.LastHandshake})
	}
	return hs
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
	if p.takeover != nil {
		ts := p.takeover.Stats()
		ws.Takeover = &ts
	}
	s.Tunnels = append(s.Tunnels, TunnelStatus{Name: p.dev.Name(), Kind: "wireguard", State: "up", WireGuard: &ws})

}
