package site

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/health"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// ipsecLinks resolves an IPsec tunnel's name to the device that carries
// it, for the route manager: its own xfrm interface with the kernel
// backend, charon's shared TUN with kernel-libipsec. Other names are links
// of their own. The route manager only calls it with the manager's lock
// held.
type ipsecLinks struct {
	tunnel.Netlink
	m *Manager
}

func (l *ipsecLinks) LinkByName(name string) (netlink.Link, error) {
	if _, ok := l.m.secure[name]; ok && l.m.ipsec != nil {
		dev := l.m.ipsec.Device(name)
		if dev == "" {
			return nil, fmt.Errorf("IPsec tunnel %q: no device (charon is restarting, or its xfrm interface could not be made)", name)
		}
		return l.Netlink.LinkByName(dev)
	}
	return l.Netlink.LinkByName(name)
}

// ipsecTunnels pairs each IPsec tunnel with the prefixes routed through it.
func ipsecTunnels(cfg Config) []ipsec.Tunnel {
	out := make([]ipsec.Tunnel, 0, len(cfg.IPsec))
	for _, c := range cfg.IPsec {
		t := ipsec.Tunnel{Config: c}
		for _, r := range cfg.Routes {
			if r.Via == c.Name && !slices.Contains(t.Routed, r.Prefix.Masked()) {
				t.Routed = append(t.Routed, r.Prefix.Masked())
			}
		}
		out = append(out, t)
	}
	return out
}

// setIPsec starts, reconfigures or stops charon and the IPsec tunnels'
// checks. Called with m.mu held.
func (m *Manager) setIPsec(cfg Config) error {
	if len(cfg.IPsec) == 0 {
		return m.closeIPsec()
	}
	if m.ipsec == nil {
		if m.opts.StateDir == "" {
			return errors.New("site-to-site: IPsec tunnels need a state directory")
		}
		e, err := ipsec.New(m.ctx, ipsec.Options{
			Logger: m.log, Dir: filepath.Join(m.opts.StateDir, "ipsec"), Charon: m.opts.Charon, Backend: m.opts.IPsecBackend,
			OnChange: func(string, bool) { m.healthChanged() },
		})
		if err != nil {
			return fmt.Errorf("site-to-site: %w", err)
		}
		m.ipsec = e
	}
	want := map[string]ipsec.Config{}
	for _, c := range cfg.IPsec {
		want[c.Name] = c
	}
	var errs error
	for _, name := range slices.Sorted(maps.Keys(m.secure)) {
		r := m.secure[name]
		if c, ok := want[name]; ok && c.Equal(r.ipsecCfg) {
			continue
		}
		stopCheck(r)
		delete(m.secure, name)
	}
	// Load charon before starting checks, so the first probes find SAs
	// being negotiated rather than no tunnel.
	errs = errors.Join(errs, m.ipsec.Set(ipsecTunnels(cfg)))
	for _, c := range cfg.IPsec {
		if _, ok := m.secure[c.Name]; ok {
			continue
		}
		r := &running{ipsecCfg: c, done: make(chan struct{})}
		if c.HealthCheck.Enabled == nil || *c.HealthCheck.Enabled {
			r.checker = health.New(c.Name, c.HealthCheck, c.Address, m.ipsec.Path(c.Name), health.Options{
				Logger:   m.log,
				OnChange: func(string, tunnel.State) { m.healthChanged() },
			})
			ctx, cancel := context.WithCancel(m.ctx)
			r.stop = cancel
			m.wg.Go(func() {
				defer close(r.done)
				r.checker.Run(ctx)
			})
		} else {
			close(r.done)
		}
		m.secure[c.Name] = r
	}
	return errs
}

func stopCheck(r *running) {
	if r.stop != nil {
		r.stop()
	}
	<-r.done
}

// closeIPsec stops the IPsec checks and charon. Called with m.mu held.
func (m *Manager) closeIPsec() error {
	for name, r := range m.secure {
		stopCheck(r)
		delete(m.secure, name)
	}
	if m.ipsec == nil {
		return nil
	}
	err := m.ipsec.Close()
	m.ipsec = nil
	return err
}

// ipsecStatus reads the IPsec tunnels' status. Called with m.mu held.
func (m *Manager) ipsecStatus() []TunnelStatus {
	if m.ipsec == nil {
		return nil
	}
	byName := map[string]ipsec.TunnelStatus{}
	for _, s := range m.ipsec.Status() {
		byName[s.Name] = s
	}
	var out []TunnelStatus
	for _, c := range m.cfg.IPsec {
		r := m.secure[c.Name]
		s := byName[c.Name]
		ts := TunnelStatus{Kind: "ipsec", IPsec: &s, Status: gre.Status{
			Name: c.Name, Local: c.Local, Remote: c.Remote, Address: c.Address, MTU: s.MTU,
			RxPackets: s.PacketsIn, RxBytes: s.BytesIn, TxPackets: s.PacketsOut, TxBytes: s.BytesOut,
			Drops: map[string]uint64{},
		}}
		if r != nil && r.checker != nil {
			h := r.checker.Status()
			ts.Health = &h
		}
		out = append(out, ts)
	}
	return out
}

// CheckIPsecRoutes reports a prefix routed through two IPsec tunnels,
// which only kernel-libipsec cannot do: there all IPsec tunnels share one
// device and a packet's tunnel is chosen by the child SAs' traffic
// selectors, which are the routed prefixes, so two tunnels with the same
// selector cannot be told apart, whatever the routes' priorities. (An
// IPsec tunnel and a GRE tunnel may share a prefix: that is the usual
// backup.) With the kernel backend each tunnel has its own xfrm interface
// and IPsec tunnels share prefixes as GRE tunnels do (ECMP, backups):
// call this only when the backend is ipsec.BackendLibipsec
// ([ipsec.DefaultBackend] unless forced). Fields are "[i].via", relative
// to the routes list.
func CheckIPsecRoutes(report func(field, msg string), routes []tunnel.Route, ipsecTunnels []string) {
	first := map[netip.Prefix]string{}
	for i, r := range routes {
		if !slices.Contains(ipsecTunnels, r.Via) {
			continue
		}
		p := r.Prefix.Masked()
		if other, ok := first[p]; ok && other != r.Via {
			report(fmt.Sprintf("[%d].via", i), fmt.Sprintf("route %s: IPsec tunnels %q and %q cannot both carry the same prefix "+
				"(with userspace ESP the prefix selects the tunnel); use a GRE tunnel as the backup", p, other, r.Via))
			continue
		}
		first[p] = r.Via
	}
}
