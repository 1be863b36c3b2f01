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
		t := ipsec.Tunnel{Config: c, Wide: slices.Contains(cfg.Wide, c.Name)}
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

// WideRange is a range of prefixes that may be routed through a wide
// (BGP-carrying) IPsec tunnel: Prefix and its more-specifics up to
// MaxLength bits (0: the prefix's own length). Source is the
// configuration field it comes from, where an error is reported.
type WideRange struct {
	Prefix    netip.Prefix
	MaxLength int
	Source    string
}

// CheckWideIPsec refuses what would make wide (BGP-carrying) IPsec
// tunnels ambiguous with userspace ESP, where every IPsec tunnel shares
// charon's one TUN and kernel-libipsec sends a packet routed into it
// through the child SA with the most specific selector that holds its
// destination, whatever route put it there:
//
//   - two wide tunnels: both would negotiate 0.0.0.0/0, so charon, not
//     the routes, would choose between them, for every prefix;
//   - a prefix that may be routed through the wide tunnel (a configured
//     route through it, or a range its BGP neighbors' import policies
//     accept, via ranges) lying inside another IPsec tunnel's selectors
//     (its routed prefixes, its peer's tunnel address, its health-check
//     target): its packets would leave through that other tunnel.
//
// A wide tunnel's prefixes that merely contain another tunnel's
// selectors are fine: the longer route and the narrower selector agree.
// With kernel ESP every tunnel has its own xfrm interface and none of
// this applies: call it only for ipsec.BackendLibipsec. Fields are
// full paths: "tunnels.ipsec[i].name" for the first case, the range's
// Source ("routes[i]" for configured routes) for the second.
func CheckWideIPsec(report func(field, msg string), cfg Config, ranges map[string][]WideRange) {
	var wide []string
	for i, c := range cfg.IPsec {
		if !slices.Contains(cfg.Wide, c.Name) {
			continue
		}
		if len(wide) > 0 {
			report(fmt.Sprintf("tunnels.ipsec[%d].name", i), fmt.Sprintf("IPsec tunnels %q and %q both carry BGP: this machine has no "+
				"kernel ESP (esp4, xfrm_interface), and with userspace ESP every IPsec tunnel shares one device, where both would "+
				"negotiate 0.0.0.0/0 and charon, not the routes, would pick the tunnel for every prefix; run the second session "+
				"over a GRE tunnel, or on a kernel with ESP", wide[0], c.Name))
		}
		wide = append(wide, c.Name)
	}
	for _, w := range wide {
		var rs []WideRange
		for i, r := range cfg.Routes {
			if r.Via == w {
				rs = append(rs, WideRange{Prefix: r.Prefix.Masked(), Source: fmt.Sprintf("routes[%d]", i)})
			}
		}
		rs = append(rs, ranges[w]...)
		for _, o := range ipsecTunnels(cfg) {
			if o.Name == w || o.Wide {
				continue
			}
			for _, sel := range o.RemoteTS() {
				for _, r := range rs {
					if r.within(sel) {
						report(r.Source, fmt.Sprintf("%s may be routed through IPsec tunnel %q, which carries BGP, but it lies inside "+
							"%s, a traffic selector of IPsec tunnel %q: with userspace ESP (no kernel ESP here) its packets would "+
							"leave through %q; narrow it so that it stays outside %s", r, w, sel, o.Name, o.Name, sel))
					}
				}
			}
		}
	}
}

// within reports whether r may hold a prefix that lies inside sel.
func (r WideRange) within(sel netip.Prefix) bool {
	maxLen := max(r.MaxLength, r.Prefix.Bits())
	return r.Prefix.Addr().Is4() == sel.Addr().Is4() && r.Prefix.Overlaps(sel) && maxLen >= sel.Bits()
}

// String is the range as the configuration writes it.
func (r WideRange) String() string {
	if r.MaxLength > r.Prefix.Bits() {
		return fmt.Sprintf("%s (up to /%d)", r.Prefix, r.MaxLength)
	}
	return r.Prefix.String()
}
