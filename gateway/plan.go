package gateway

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/access/scim"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/ha"
	"github.com/edgegw/edgegw/gateway/mail"
	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/tunnel/ipsec"
	"github.com/edgegw/edgegw/tunnel/site"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// Plan is one configuration compiled: every fact the parts apply, built
// whole by [Prepare] without changing the kernel or opening a socket. A
// configuration whose plan does not build never reaches the kernel; one
// that does is committed part by part (commit), and only a refusal by the
// kernel or a socket needs the parts already moved to be put back.
//
// Parts read what they need from the plan, never from each other: the WAN
// interface, the compiled ruleset, the identities, the flow naming.
type Plan struct {
	// Config is what the plan was compiled from.
	Config *config.Config
	// WAN is the uplink: interfaces.wan, or, for a running gateway, the
	// interface of the default route when that is empty (read from the
	// kernel, never changed). Empty: nothing is masqueraded.
	WAN string
	// Firewall is the table the firewall part applies, its rules compiled
	// once here. Sampling is on whenever netflow is configured: the
	// netflow part binds its NFLOG group before the firewall part commits
	// (see the order in run).
	Firewall firewall.Spec

	static     []identity.StaticIdentity // static peers with an email or groups
	fwStatic   []firewall.Identity       // the same, as firewall identity sets
	flowRules  netflow.Rules             // how flow records name rules
	flowRoles  netflow.Roles             // what each interface is to flow records
	site       site.Config
	registry   identity.Options // the device registry; registryOn: one runs
	registryOn bool
	office     []netip.Prefix // what remote users reach through the tunnel
	// enrollTunnel is what an enrolled client's wg-quick file gets.
	enrollTunnel enroll.Tunnel
	strictRP     []string // interfaces with strict reverse-path filtering
	haLinks      ha.Links
	haVIP        netip.Addr    // the pair's first IPv4 WAN virtual address; WireGuard answers from it
	haVIP6       netip.Addr    // the pair's first IPv6 WAN virtual address, if any; the same for peers on IPv6
	haDigest     string        // digest of the settings both nodes of the pair must share (PairFacts)
	logpush      *logpush.Plan // nil: no job
	scimToken    []byte        // scim.token_file read; nil: no scim section, or not read
	geo          *geo.Watcher  // firewall.geoip loaded; nil: none, or not loaded (not Running)
	alerts       *alertsPlan   // nil: no netflow.alerts
	access       *access.Plan  // nil: no access section
	// posture is the compiled posture: section (nil: none) and
	// postureKey the gateway's WireGuard private key its reports are
	// checked with (read when Running); quarantineRule is the firewall
	// rule in front of the configured ones that confines quarantined
	// devices ("" without posture).
	enrollMailPassword string      // tunnels.wireguard.enrollment.notify_email.password_file read
	enrollMailTLS      *tls.Config // its ca_file read; nil: the system roots
	posture            *posture.Policy
	postureKey         wireguard.Key
	quarantineRule     string
}

// PrepareOptions are the facts of the running gateway a plan needs.
type PrepareOptions struct {
	// Running: the plan is for this host's kernel. An empty
	// interfaces.wan then resolves to the default route's interface, and
	// the office prefixes include the LAN interfaces' networks. A plan
	// for `edgegw check` or `edgegw firewall show` leaves both out.
	Running bool
	// SkipFiles leaves out what reads the files the configuration names
	// (Access and Logpush secrets, certificates, CA bundles), as
	// config.Options.SkipFiles does:
	// `edgegw check --skip-files` and `edgegw firewall show|test`.
	SkipFiles bool
	// Logger receives what loading names (GeoIP databases); nil: none.
	Logger *slog.Logger
	// Fallback adds a forward chain that drops everything: the table of
	// a gateway that must not forward even if forwarding is turned on
	// behind its back.
	Fallback bool
}

func (o PrepareOptions) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// Prepare compiles cfg into a Plan. It is pure apart from reading the
// routing table and interface addresses when o.Running: the same call
// serves start, reload, `edgegw check` and `edgegw firewall show|test`, so
// what an operator checks is what the gateway applies.
func Prepare(cfg *config.Config, o PrepareOptions) (*Plan, error) {
	p := &Plan{Config: cfg, WAN: cfg.Interfaces.WAN}
	if p.WAN == "" && o.Running {
		wan, err := defaultRouteInterface()
		if err != nil {
			return nil, err
		}
		p.WAN = wan
	}
	p.Firewall = firewall.Spec{
		WAN:     p.WAN,
		LAN:     cfg.Interfaces.LAN,
		Clamp:   clamps(cfg),
		Tunnels: tunnelSources(cfg),
		// Identities come from WireGuard peers and enrolled devices:
		// they hold only for packets that came through WireGuard.
		IdentityInterface: identityInterface(cfg),
		DenyForward:       o.Fallback,
	}
	fwc := cfg.Firewall
	if cfg.Posture != nil {
		pol, err := posture.Compile(*cfg.Posture)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.File, err)
		}
		p.posture = pol
		if p.quarantineRule, err = quarantineExpression(cfg, pol); err != nil {
			return nil, fmt.Errorf("%s: posture: %w", cfg.File, err)
		}
		fwc = withQuarantineRule(cfg.Firewall, p.quarantineRule)
		if wg := cfg.Tunnels.WireGuard; wg != nil && o.Running {
			if p.postureKey, err = wireguard.LoadOrCreatePrivateKey(wg.PrivateKeyPath(cfg.Appliance.StateDir)); err != nil {
				return nil, fmt.Errorf("posture: the gateway's WireGuard key: %w", err)
			}
		}
	}
	if fwc != nil {
		rs, err := firewall.CompileRules(fwc)
		if err != nil {
			return nil, fmt.Errorf("%s: firewall: %w", cfg.File, err)
		}
		p.Firewall.Rules = rs
		if p.Firewall.Egress, err = firewall.CompileEgress(cfg.Firewall); err != nil {
			return nil, fmt.Errorf("%s: firewall.egress: %w", cfg.File, err)
		}
	}
	if err := checkGeoSelectors(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	if f := cfg.Firewall; f != nil && f.GeoIP != nil && o.Running {
		// Loaded here, once: the firewall's geo sets are filled from it
		// in the same batch as the rules that use them.
		w, err := geo.NewWatcher(f.GeoIP.Files(), 0, o.logger(), nil)
		if err != nil {
			return nil, fmt.Errorf("%s: firewall.geoip: %w", cfg.File, err)
		}
		p.geo = w
	}
	if cfg.Netflow != nil {
		p.Firewall.Sampling = firewall.Sampling{Rate: cfg.Netflow.SampleRate, Group: firewall.DefaultSamplingGroup}
		p.flowRules = flowRules(p.Firewall.Rules, cfg.Netflow.SampleRate)
		p.flowRoles = flowRoles(cfg, p.WAN)
	}
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		for _, peer := range wg.Peers {
			if peer.Email == "" && len(peer.Groups) == 0 {
				continue
			}
			p.static = append(p.static, identity.StaticIdentity{Prefixes: peer.AllowedIPs, Email: peer.Email, Groups: peer.Groups})
			p.fwStatic = append(p.fwStatic, firewall.Identity{Email: peer.Email, Groups: peer.Groups, Addrs: peer.AllowedIPs})
		}
		p.office = officePrefixes(cfg, o.Running)
		if wg.Enrollment != nil && wg.Enrollment.Enabled {
			t, err := enrollTunnel(cfg, p.office, o.Running)
			if err != nil {
				return nil, err
			}
			p.enrollTunnel = t
			if m := wg.Enrollment.NotifyEmail; m != nil && m.PasswordFile != "" && !o.SkipFiles {
				b, err := os.ReadFile(m.PasswordFile)
				if err != nil {
					return nil, fmt.Errorf("tunnels.wireguard.enrollment.notify_email: %w", err)
				}
				p.enrollMailPassword = strings.TrimSpace(string(b))
			}
			if m := wg.Enrollment.NotifyEmail; m != nil && m.CAFile != "" && !o.SkipFiles {
				if p.enrollMailTLS, err = mail.LoadCA(m.CAFile); err != nil {
					return nil, fmt.Errorf("tunnels.wireguard.enrollment.notify_email.ca_file: %w", err)
				}
			}
		}
	}
	p.site = site.Config{GRE: cfg.Tunnels.GRE, IPsec: cfg.Tunnels.IPsec, Routes: cfg.Routes}
	if cfg.BGP != nil {
		p.site.Wide = cfg.BGP.Tunnels() // IPsec tunnels carrying BGP: route-based child SAs
	}
	p.registry, p.registryOn = registryOptions(cfg)
	if cfg.Access != nil && !o.SkipFiles {
		ap, err := access.Compile(*cfg.Access, identityOf(cfg))
		if err != nil {
			return nil, err
		}
		p.access = ap
	}
	if cfg.Netflow != nil && cfg.Netflow.Alerts != nil && !o.SkipFiles {
		ap, err := prepareAlerts(cfg.Netflow.Alerts, cfg.Appliance.Name)
		if err != nil {
			return nil, fmt.Errorf("netflow.alerts: %w", err)
		}
		p.alerts = ap
	}
	if cfg.SCIM != nil && !o.SkipFiles {
		tok, err := scim.ReadToken(cfg.SCIM.TokenFile)
		if err != nil {
			return nil, err
		}
		p.scimToken = tok
	}
	if len(cfg.Logpush) > 0 && !o.SkipFiles {
		lp, err := logpush.Compile(cfg.Logpush)
		if err != nil {
			return nil, err
		}
		p.logpush = lp
	}
	p.strictRP = strictRPInterfaces(cfg, p.WAN)
	if cfg.HA != nil {
		// Connections leave from the pair's virtual WAN address, so they
		// keep it when the other node takes over with the synced
		// conntrack entries (masquerade would pick this node's own).
		for _, v := range cfg.HA.VirtualAddresses.WAN {
			if v.Addr().Is4() {
				p.Firewall.WANAddress = v.Addr()
				p.haVIP = v.Addr()
				break
			}
		}
		for _, v := range cfg.HA.VirtualAddresses.WAN {
			if v.Addr().Is6() {
				p.haVIP6 = v.Addr()
				break
			}
		}
	}
	if cfg.HA != nil {
		facts, err := PairFacts(p, o.SkipFiles)
		if err != nil {
			return nil, err
		}
		p.haDigest = ha.Digest(facts)
	}
	p.haLinks = ha.Links{WAN: p.WAN}
	if len(cfg.Interfaces.LAN) > 0 {
		p.haLinks.LAN = cfg.Interfaces.LAN[0]
	}
	return p, nil
}

// enrollTunnel is what an enrolled client's wg-quick file needs: the
// gateway's key and port, the office prefixes, and the gateway's tunnel
// address as resolver when Gateway DNS runs. The key is read from the file
// the WireGuard device uses (created there on a first start), only for a
// running gateway.
func enrollTunnel(cfg *config.Config, office []netip.Prefix, running bool) (enroll.Tunnel, error) {
	wg := cfg.Tunnels.WireGuard
	t := enroll.Tunnel{
		ListenPort:          wg.ListenPort,
		AllowedIPs:          office,
		MTU:                 wg.MTU,
		PersistentKeepalive: 25 * time.Second, // remote users are usually behind NAT
	}
	if cfg.Gateway.DNS != nil {
		t.DNS = []netip.Addr{wg.Address.Addr()}
	}
	if running {
		k, err := wireguard.LoadOrCreatePrivateKey(wg.PrivateKeyPath(cfg.Appliance.StateDir))
		if err != nil {
			return enroll.Tunnel{}, fmt.Errorf("tunnels.wireguard: the gateway's key: %w", err)
		}
		t.PublicKey = k.PublicKey()
	}
	return t, nil
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

// flowRules names the rules by their position in the configuration, as
// the firewall's sample prefixes do (disabled rules keep their place).
func flowRules(rs *firewall.Ruleset, rate int) netflow.Rules {
	r := netflow.Rules{SampleInterval: rate}
	if rs == nil {
		return r
	}
	r.RulesetID = rs.ID()
	last := 0
	for _, info := range rs.Rules() {
		last = max(last, info.Position)
	}
	r.RuleIDs = make([]string, last)
	for n := 1; n <= last; n++ {
		if info, ok := rs.ByPosition(n); ok {
			r.RuleIDs[n-1] = info.ID
		}
	}
	return r
}

// flowRoles is what each interface is to the gateway, which sets a flow
// record's Direction and TunnelName.
func flowRoles(cfg *config.Config, wan string) netflow.Roles {
	r := netflow.Roles{}
	if wan != "" {
		r[wan] = netflow.RoleWAN
	}
	for _, lan := range cfg.Interfaces.LAN {
		r[lan] = netflow.RoleLAN
	}
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		r[wg.Interface] = netflow.RoleTunnel
	}
	for _, g := range cfg.Tunnels.GRE {
		r[g.Name] = netflow.RoleTunnel
	}
	for _, t := range cfg.Tunnels.IPsec {
		r[t.Name] = netflow.RoleTunnel
	}
	return r
}

// registryOptions is what the device registry needs from cfg; ok is false
// when no registry should run (no WireGuard, or neither an identity
// section nor enrollment).
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

// identityOf is the identity section, empty when absent.
func identityOf(c *config.Config) identity.Config {
	if c.Identity == nil {
		return identity.Config{}
	}
	return *c.Identity
}

// strictRPInterfaces are the interfaces that get strict reverse-path
// filtering (rpFilter): the WireGuard interface, the LAN and the WAN.
func strictRPInterfaces(cfg *config.Config, wan string) []string {
	var out []string
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		out = append(out, wg.Interface)
	}
	out = append(out, cfg.Interfaces.LAN...)
	if wan != "" {
		out = append(out, wan)
	}
	return out
}

// OfficePrefixes is what a remote user reaches through the tunnel: the
// tunnel network, the networks of the LAN interfaces (read from this
// host's kernel) and every configured route prefix: the office, not the
// whole internet.
func OfficePrefixes(cfg *config.Config) []netip.Prefix { return officePrefixes(cfg, true) }

func officePrefixes(cfg *config.Config, readLAN bool) []netip.Prefix {
	ps := []netip.Prefix{cfg.Tunnels.WireGuard.Address.Masked()}
	for _, name := range cfg.Interfaces.LAN {
		if !readLAN {
			break
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue // not on this host (the config may be for another box)
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range addrs {
			if p, ok := netipPrefix(a); ok && p.Addr().IsGlobalUnicast() {
				ps = append(ps, p.Masked())
			}
		}
	}
	for _, r := range cfg.Routes {
		ps = append(ps, r.Prefix)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return slices.Compact(ps)
}

func netipPrefix(a netlink.Addr) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}
