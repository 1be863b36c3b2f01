package gateway

import (
	"context"
	"errors"
	"log/slog"
	"reflect"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// wgPart runs the remote-access WireGuard device.
type wgPart struct {
	log        *slog.Logger
	metrics    *metrics
	dev        *wireguard.Device
	configured bool
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
		if err := p.start(*nc, next.Appliance.StateDir); err != nil {
			return err
		}
	case pc != nil && reflect.DeepEqual(*pc, *nc):
	default:
		// Set diffs peers itself: unchanged peers keep their sessions.
		err := p.dev.Set(*nc)
		if errors.Is(err, wireguard.ErrRecreate) {
			// A new interface name: nothing was applied; replace the
			// device (its peers reconnect to the new one).
			p.close()
			err = p.start(*nc, next.Appliance.StateDir)
		}
		if err != nil {
			return err
		}
	}
	p.configured = nc != nil
	return nil
}

func (p *wgPart) start(c wireguard.Config, stateDir string) error {
	dev, err := wireguard.New(c, wireguard.Options{Logger: p.log, StateDir: stateDir, UAPI: true})
	if err != nil {
		return err
	}
	p.dev = dev
	p.metrics.set("wireguard", dev.Collector())
	return nil
}

func (p *wgPart) close() {
	if p.dev == nil {
		return
	}
	p.metrics.set("wireguard", nil)
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
