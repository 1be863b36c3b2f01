package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// fwPart owns edgegw's nftables table: masquerade on the WAN and the
// Magic-Firewall rules, with lists and identity sets updated in place.
type fwPart struct {
	log     *slog.Logger
	metrics *metrics
	table   *firewall.Table
	devs    *devices
	wan     string            // the WAN interface in use, resolved from the default route if unset
	rules   *firewall.Ruleset // what the kernel runs; nil without rules
	sampled firewall.Sampling // the sampling the kernel runs
	// samplerBound tells whether the flow sampler has bound its NFLOG
	// group; nil: no sampler.
	samplerBound func() bool
	static       []firewall.Identity // from the configuration
	ids          []firewall.Identity // in the kernel: static plus enrolled devices
	// denyForward adds a forward chain that drops everything: the
	// fallback's table, which must not forward even if forwarding is
	// turned on behind edgegw's back.
	denyForward bool
}

func (p *fwPart) name() string { return "firewall" }

// identities is who stands behind which addresses in the configuration:
// static WireGuard peers that carry an email or groups. Enrolled devices
// are added by withDeviceIdentities.
func identities(cfg *config.Config) []firewall.Identity {
	var ids []firewall.Identity
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		for _, peer := range wg.Peers {
			if peer.Email == "" && len(peer.Groups) == 0 {
				continue
			}
			ids = append(ids, firewall.Identity{Email: peer.Email, Groups: peer.Groups, Addrs: peer.AllowedIPs})
		}
	}
	return ids
}

// withDeviceIdentities appends every active enrolled device in snap.
func withDeviceIdentities(static []firewall.Identity, snap *identity.Snapshot) []firewall.Identity {
	if snap == nil || snap.Len() == 0 {
		return static
	}
	ids := make([]firewall.Identity, len(static), len(static)+snap.Len())
	copy(ids, static)
	for d := range snap.All() {
		ids = append(ids, firewall.Identity{
			Email:  d.Email,
			Groups: d.Groups,
			Addrs:  []netip.Prefix{netip.PrefixFrom(d.Address, d.Address.BitLen())},
		})
	}
	return ids
}

// setDevices follows a new registry snapshot into the identity sets,
// without touching rules.
func (p *fwPart) setDevices(snap *identity.Snapshot) error {
	if p.table == nil {
		return nil
	}
	ids := withDeviceIdentities(p.static, snap)
	if reflect.DeepEqual(ids, p.ids) {
		return nil
	}
	if err := p.table.UpdateIdentities(ids); err != nil {
		return err
	}
	p.ids = ids
	return nil
}

// sampling is where the firewall sends 1 in netflow.sample_rate packets
// for flow records: off without a netflow section, and off until the
// sampler has bound its NFLOG group. go-nflog configures a group with
// several commands after binding it, and a sample arriving in between
// breaks that exchange; so the group is bound first, then the rules that
// feed it are applied (enableSampling).
func (p *fwPart) sampling(cfg *config.Config) firewall.Sampling {
	if cfg.Netflow == nil || p.samplerBound == nil || !p.samplerBound() {
		return firewall.Sampling{}
	}
	return firewall.Sampling{Rate: cfg.Netflow.SampleRate, Group: firewall.DefaultSamplingGroup}
}

// enableSampling re-applies cfg once the sampler is bound, if the table
// in the kernel was compiled without sampling.
func (p *fwPart) enableSampling(cfg *config.Config) error {
	if p.table == nil || p.sampled == p.sampling(cfg) {
		return nil
	}
	return p.replace(cfg, p.static, p.ids)
}

// tunnelSources are the source addresses each tunnel interface owns, for
// the firewall's anti-spoofing stage: the WireGuard prefix and every static
// peer's allowed IPs (enrolled devices get addresses from the prefix) on
// the WireGuard interface; each GRE and IPsec tunnel's own subnet and the
// prefixes routed through it on the tunnel's interface. IPsec tunnels have
// an xfrm interface of their own name with kernel ESP; with charon's
// kernel-libipsec they share one TUN device, ipsecN, whatever its number.
func tunnelSources(cfg *config.Config) []firewall.TunnelSources {
	var ts []firewall.TunnelSources
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		t := firewall.TunnelSources{Interface: wg.Interface, Prefixes: []netip.Prefix{wg.Address.Masked()}}
		for _, peer := range wg.Peers {
			t.Prefixes = append(t.Prefixes, peer.AllowedIPs...)
		}
		ts = append(ts, t)
	}
	routed := func(name string) []netip.Prefix {
		var ps []netip.Prefix
		for _, r := range cfg.Routes {
			if r.Via == name {
				ps = append(ps, r.Prefix)
			}
		}
		return ps
	}
	for _, g := range cfg.Tunnels.GRE {
		ts = append(ts, firewall.TunnelSources{Interface: g.Name,
			Prefixes: append([]netip.Prefix{g.Address.Masked()}, routed(g.Name)...)})
	}
	kernelESP := len(cfg.Tunnels.IPsec) > 0 && ipsec.DefaultBackend() == ipsec.BackendKernel
	for _, c := range cfg.Tunnels.IPsec {
		ifc := c.Name
		if !kernelESP {
			ifc = "ipsec*"
		}
		ts = append(ts, firewall.TunnelSources{Interface: ifc,
			Prefixes: append([]netip.Prefix{c.Address.Masked()}, routed(c.Name)...)})
	}
	return ts
}

// FirewallSpec compiles cfg's firewall: what the firewall part applies,
// less three facts known only while edgegw runs (the WAN found from the
// default route when interfaces.wan is empty, sampling once the sampler
// is bound, the fallback's deny-forward chain). `edgegw firewall show`
// and `firewall test` print and evaluate this same Spec, so what an
// operator reads is what the gateway applies, anti-spoofing included.
func FirewallSpec(cfg *config.Config) (firewall.Spec, error) {
	spec := firewall.Spec{
		WAN:     cfg.Interfaces.WAN,
		LAN:     cfg.Interfaces.LAN,
		Clamp:   clamps(cfg),
		Tunnels: tunnelSources(cfg),
		// Identities come from WireGuard peers and enrolled devices:
		// they hold only for packets that came through WireGuard.
		IdentityInterface: identityInterface(cfg),
	}
	if cfg.Firewall != nil {
		rs, err := firewall.CompileRules(cfg.Firewall)
		if err != nil {
			return firewall.Spec{}, err
		}
		spec.Rules = rs
		if spec.Egress, err = firewall.CompileEgress(cfg.Firewall); err != nil {
			return firewall.Spec{}, err
		}
	}
	return spec, nil
}

// identityInterface is where identities arrive: the WireGuard interface.
// Without WireGuard there is no identity; a name no interface has keeps
// identity sets empty.
func identityInterface(cfg *config.Config) string {
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		return wg.Interface
	}
	return "-"
}

// clamps lowers the MSS of TCP through every GRE tunnel to what fits its
// MTU (1436 for the default 1476).
func clamps(cfg *config.Config) []firewall.Clamp {
	var cs []firewall.Clamp
	for _, g := range cfg.Tunnels.GRE {
		cs = append(cs, firewall.Clamp{Interface: g.Name, MSS: uint16(g.MSS())})
	}
	return cs
}

func (p *fwPart) apply(ctx context.Context, prev, next *config.Config) error {
	static := identities(next)
	ids := withDeviceIdentities(static, p.devs.load())
	if p.table != nil && prev != nil && prev.Interfaces.WAN == next.Interfaces.WAN &&
		slices.Equal(prev.Interfaces.LAN, next.Interfaces.LAN) &&
		p.sampling(prev) == p.sampling(next) &&
		reflect.DeepEqual(clamps(prev), clamps(next)) &&
		reflect.DeepEqual(tunnelSources(prev), tunnelSources(next)) {
		done, err := p.updateInPlace(prev, next, ids)
		if done && err == nil {
			p.static = static
		}
		if done || err != nil {
			return err
		}
	}
	return p.replace(next, static, ids)
}

// replace compiles next whole and swaps it in with one netlink batch.
func (p *fwPart) replace(next *config.Config, static, ids []firewall.Identity) error {
	wan := next.Interfaces.WAN
	if wan == "" {
		var err error
		if wan, err = defaultRouteInterface(); err != nil {
			return err
		}
		if wan == "" {
			p.log.Warn("no interfaces.wan and no default route: internet-bound traffic is not masqueraded")
		}
	}
	spec, err := FirewallSpec(next)
	if err != nil {
		return err // validated already; a compile error here is a bug worth seeing
	}
	rs := spec.Rules
	smp := p.sampling(next)
	spec.WAN, spec.Sampling, spec.DenyForward = wan, smp, p.denyForward
	prog := firewall.Compile(spec)
	if p.table == nil {
		p.table = firewall.New(p.log)
		p.metrics.set("firewall", firewall.NewCollector(p.table))
	}
	if err := p.table.UpdateIdentities(ids); err != nil {
		return err
	}
	if err := p.table.Apply(prog); err != nil {
		return err
	}
	p.wan, p.rules, p.static, p.ids = wan, rs, static, ids
	p.sampled = smp
	if rs != nil {
		p.log.Info("firewall rules applied", "rules", len(rs.Rules()))
	}
	return nil
}

// updateInPlace handles a reload that changes only list contents or
// identities: sets are updated without touching rules (and their
// counters). It reports whether it handled the change.
func (p *fwPart) updateInPlace(prev, next *config.Config, ids []firewall.Identity) (bool, error) {
	pf, nf := prev.Firewall, next.Firewall
	if (pf == nil) != (nf == nil) {
		return false, nil
	}
	var lists []string
	if nf != nil {
		var only bool
		if lists, only = nf.ChangedLists(pf); !only {
			return false, nil
		}
	}
	for _, name := range lists {
		items := make([]netip.Prefix, 0, len(nf.Lists[name]))
		for _, s := range nf.Lists[name] {
			pfx, err := firewall.ParseListItem(s)
			if err != nil {
				return true, fmt.Errorf("list %s: %w", name, err)
			}
			items = append(items, pfx)
		}
		if err := p.table.UpdateList(name, items); err != nil {
			return true, err
		}
		p.log.Info("firewall list updated in place", "list", name, "entries", len(items))
	}
	if !reflect.DeepEqual(ids, p.ids) {
		if err := p.table.UpdateIdentities(ids); err != nil {
			return true, err
		}
		p.ids = ids
	}
	return true, nil
}

func (p *fwPart) close() {
	if p.table == nil {
		return
	}
	p.metrics.set("firewall", nil)
	if err := p.table.Close(); err != nil {
		p.log.Error("remove nftables table", "err", err)
	}
	p.table = nil
}

func (p *fwPart) ready() error { return nil }

func (p *fwPart) status(s *Status) { s.WAN = p.wan }
