// Package config reads edgegw's one YAML file into the typed configuration
// of every subsystem, applies defaults and validates the whole of it before
// anything is applied.
//
// Each subsystem owns its section's type (tunnel/wireguard.Config,
// firewall.Config, …). This package only assembles them, decodes with line
// numbers, and runs the checks that span sections (a route's tunnel exists,
// tunnel names are unique across kinds). Section types opt into two methods:
// SetDefaults() and Validate(report func(field, msg string)).
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/access/scim"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/dns"
	"github.com/edgegw/edgegw/gateway/ha"
	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/bgp"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/ipsec"
	"github.com/edgegw/edgegw/tunnel/site"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// Config is the whole file. Optional sections are pointers: nil means the
// subsystem is not configured and does not run.
type Config struct {
	Appliance  Appliance        `yaml:"appliance"`
	Interfaces Interfaces       `yaml:"interfaces"`
	Admin      Admin            `yaml:"admin"`
	Log        Log              `yaml:"log"`
	Identity   *identity.Config `yaml:"identity"`
	Tunnels    Tunnels          `yaml:"tunnels"`
	Routes     []tunnel.Route   `yaml:"routes"`
	Firewall   *firewall.Config `yaml:"firewall"`
	Access     *access.Config   `yaml:"access"`
	SCIM       *scim.Config     `yaml:"scim"`
	Posture    *posture.Config  `yaml:"posture"`
	Gateway    Gateway          `yaml:"gateway"`
	Netflow    *netflow.Config  `yaml:"netflow"`
	Logpush    []logpush.Job    `yaml:"logpush"`
	HA         *ha.Config       `yaml:"ha"`
	BGP        *bgp.Config      `yaml:"bgp"`

	// File is where the configuration came from ("(built-in default)" for
	// the embedded one).
	File string `yaml:"-"`
	// Files fingerprints the content of every file the configuration names
	// (secrets, certificates, keys, PSKs, tokens, lists): its field path →
	// SHA-256 of the content. Two loads of an unchanged YAML file differ
	// here when a named file was rotated in place, so a reload applies the
	// new secret instead of calling the configuration unchanged. Empty when
	// files are not checked (Options.SkipFiles).
	Files map[string]string `yaml:"-"`
}

// Appliance names this box; the names appear in every log record.
type Appliance struct {
	Name     string `yaml:"name"`
	Colo     string `yaml:"colo"`
	Country  string `yaml:"country"`
	StateDir string `yaml:"state_dir"`
}

// Interfaces names the uplink and the office networks.
type Interfaces struct {
	// WAN is the uplink where internet-bound traffic is masqueraded. Empty
	// means the interface that holds the default route when edgegw starts.
	WAN string   `yaml:"wan"`
	LAN []string `yaml:"lan"`
}

// Admin is the management plane: the admin socket, the TCP listener for
// metrics, health and the API, and who may use them (gateway/admin owns
// the type and its checks).
type Admin = admin.Config

// Log selects slog's level and handler.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Tunnels holds every tunnel kind.
type Tunnels struct {
	WireGuard *WireGuard     `yaml:"wireguard"`
	GRE       []gre.Config   `yaml:"gre"`
	IPsec     []ipsec.Config `yaml:"ipsec"`
}

// WireGuard is the remote-access section: the device itself (owned by
// tunnel/wireguard) and who may enroll devices into it (owned by access).
type WireGuard struct {
	wireguard.Config `yaml:",inline"`
	Enrollment       *access.EnrollmentConfig `yaml:"enrollment"`
}

// Gateway holds the Gateway (filtering) services.
type Gateway struct {
	DNS *dns.Config `yaml:"dns"`
}

// SetDefaults fills the appliance-wide defaults.
func (a *Appliance) SetDefaults() {
	if a.Name == "" {
		if h, err := os.Hostname(); err == nil {
			a.Name = h
		} else {
			a.Name = "edgegw"
		}
	}
	if a.StateDir == "" {
		a.StateDir = "/var/lib/edgegw"
	}
}

var (
	coloCode    = regexp.MustCompile(`^[A-Z0-9]{3,4}$`)
	countryCode = regexp.MustCompile(`^[A-Z]{2}$`)
	ifnameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}$`)
)

// Validate checks the appliance's names.
func (a *Appliance) Validate(report func(field, msg string)) {
	if a.Colo != "" && !coloCode.MatchString(a.Colo) {
		report("colo", fmt.Sprintf("%q: expected a location code of 3 or 4 capitals or digits, such as LHR", a.Colo))
	}
	if a.Country != "" && !countryCode.MatchString(a.Country) {
		report("country", fmt.Sprintf("%q: expected an ISO 3166 alpha-2 code such as GB", a.Country))
	}
	if a.StateDir == "" || a.StateDir[0] != '/' {
		report("state_dir", fmt.Sprintf("%q: expected an absolute path", a.StateDir))
	}
}

// Validate checks interface names.
func (i *Interfaces) Validate(report func(field, msg string)) {
	if i.WAN != "" && !ifnameRE.MatchString(i.WAN) {
		report("wan", fmt.Sprintf("%q is not an interface name", i.WAN))
	}
	for n, l := range i.LAN {
		if !ifnameRE.MatchString(l) {
			report(fmt.Sprintf("lan[%d]", n), fmt.Sprintf("%q is not an interface name", l))
		}
		if l == i.WAN {
			report(fmt.Sprintf("lan[%d]", n), fmt.Sprintf("%q is also the WAN interface", l))
		}
	}
}

// SetDefaults logs at info in text.
func (l *Log) SetDefaults() {
	if l.Level == "" {
		l.Level = "info"
	}
	if l.Format == "" {
		l.Format = "text"
	}
}

// Validate checks level and format names.
func (l *Log) Validate(report func(field, msg string)) {
	tunnel.OneOf(report, "level", l.Level, "debug", "info", "warn", "error")
	tunnel.OneOf(report, "format", l.Format, "text", "json")
}

//go:embed default.yaml
var defaultYAML []byte

// DefaultName is the File of the embedded default configuration.
const DefaultName = "(built-in default)"

// Default returns the embedded default configuration: WireGuard on :51820
// and the admin listener on 127.0.0.1:9100.
func Default() (*Config, error) {
	return Parse(DefaultName, defaultYAML, Options{SkipFiles: true})
}

// DefaultYAML is the text of the embedded default, for `edgegw config default`.
func DefaultYAML() []byte { return defaultYAML }

// Options changes how a file is checked.
type Options struct {
	// SkipFiles skips the existence and permission checks of files the
	// configuration names (`edgegw check --skip-files`), and nothing else.
	SkipFiles bool
}

// Load reads and validates a file.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse decodes and validates a whole configuration. A non-nil error is an
// *Errors listing every problem, or a YAML syntax error with its position.
func Parse(file string, data []byte, opts Options) (*Config, error) {
	errs := &Errors{File: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, m := range te.Errors {
				errs.add(Pos{}, "", m)
			}
			return nil, errs.err()
		}
		errs.add(syntaxPos(err), "", cleanYAMLError(err))
		return nil, errs.err()
	}
	cfg := &Config{File: file}
	d := &decoder{errs: errs, pos: map[string]Pos{}}
	root := reflect.ValueOf(cfg).Elem()
	if len(doc.Content) > 0 {
		d.decode(doc.Content[0], root, "")
	}
	// Validate even a half-read tree, so that one run shows every problem;
	// validators' reports about a value that failed to decode (or its
	// parents and children) are dropped, since they would only echo it.
	d.shapeErrs = len(errs.List)
	setDefaults(root)
	d.validate(root)
	d.crossChecks(cfg)
	if !opts.SkipFiles {
		cfg.Files = d.checkFiles(root)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// crossChecks are the rules that span sections.
func (d *decoder) crossChecks(c *Config) {
	report := d.report

	// Tunnel names are interface names and route targets: unique across kinds.
	names := map[string]string{}
	claim := func(name, path string) {
		if name == "" {
			return
		}
		if prev, ok := names[name]; ok {
			report(path, fmt.Sprintf("tunnel name %q is already used at %s", name, prev))
			return
		}
		names[name] = path
	}
	var addrs []struct {
		p    netip.Prefix
		path string
	}
	addAddr := func(p netip.Prefix, path string) {
		if !p.IsValid() {
			return
		}
		for _, o := range addrs {
			if o.p.Masked().Overlaps(p.Masked()) {
				report(path, fmt.Sprintf("%s overlaps %s at %s", p, o.p, o.path))
				return
			}
		}
		addrs = append(addrs, struct {
			p    netip.Prefix
			path string
		}{p, path})
	}
	if wg := c.Tunnels.WireGuard; wg != nil {
		claim(wg.Interface, "tunnels.wireguard.interface")
		addAddr(wg.Address, "tunnels.wireguard.address")
	}
	for i, g := range c.Tunnels.GRE {
		claim(g.Name, fmt.Sprintf("tunnels.gre[%d].name", i))
		addAddr(g.Address, fmt.Sprintf("tunnels.gre[%d].address", i))
	}
	for i, s := range c.Tunnels.IPsec {
		claim(s.Name, fmt.Sprintf("tunnels.ipsec[%d].name", i))
		addAddr(s.Address, fmt.Sprintf("tunnels.ipsec[%d].address", i))
	}
	gre.ValidateList(c.Tunnels.GRE, func(field, msg string) { report("tunnels.gre"+field, msg) })
	ipsec.ValidateList(c.Tunnels.IPsec, func(field, msg string) { report("tunnels.ipsec"+field, msg) })
	var ipsecNames []string
	for _, t := range c.Tunnels.IPsec {
		ipsecNames = append(ipsecNames, t.Name)
	}
	// Only the userspace ESP backend tells IPsec tunnels apart by prefix;
	// with kernel ESP (the appliance) each has its own xfrm interface and
	// they share prefixes as GRE tunnels do.
	if ipsec.DefaultBackend() == ipsec.BackendLibipsec {
		site.CheckIPsecRoutes(func(field, msg string) { report("routes"+field, msg) }, c.Routes, ipsecNames)
	}
	tunnels := slices.Sorted(maps.Keys(names))
	tunnel.CheckRoutes(func(field, msg string) { report("routes"+field, msg) }, c.Routes, tunnels)
	for i, r := range c.Routes {
		for j, o := range c.Routes[:i] {
			if o.Prefix == r.Prefix && o.Via == r.Via {
				report(fmt.Sprintf("routes[%d]", i), fmt.Sprintf("routes[%d] already sends %s via %s", j, r.Prefix, r.Via))
			}
		}
	}
	if c.BGP != nil {
		var siteTunnels []string // BGP runs over GRE and IPsec tunnels only
		for _, g := range c.Tunnels.GRE {
			siteTunnels = append(siteTunnels, g.Name)
		}
		siteTunnels = append(siteTunnels, ipsecNames...)
		bgp.CheckTunnels(func(field, msg string) { report("bgp."+field, msg) }, c.BGP, siteTunnels)
		if ipsec.DefaultBackend() == ipsec.BackendLibipsec {
			// Userspace ESP: the IPsec tunnels that carry BGP negotiate
			// 0.0.0.0/0 on the one shared device; refuse what would let
			// charon's selectors, not the routes, pick the tunnel.
			ranges := map[string][]site.WideRange{}
			for i, n := range c.BGP.Neighbors {
				for j, r := range n.Import.Prefixes {
					ranges[n.Tunnel] = append(ranges[n.Tunnel], site.WideRange{Prefix: r.Prefix.Masked(), MaxLength: r.MaxLength,
						Source: fmt.Sprintf("bgp.neighbors[%d].import.prefixes[%d]", i, j)})
				}
				if len(n.Import.Prefixes) == 0 { // any prefix accepted
					ranges[n.Tunnel] = append(ranges[n.Tunnel], site.WideRange{Prefix: netip.MustParsePrefix("0.0.0.0/0"), MaxLength: 32,
						Source: fmt.Sprintf("bgp.neighbors[%d].import.prefixes", i)})
				}
			}
			site.CheckWideIPsec(report, site.Config{IPsec: c.Tunnels.IPsec, Routes: c.Routes, Wide: c.BGP.Tunnels()}, ranges)
		}
	}
	if c.Interfaces.WAN != "" && names[c.Interfaces.WAN] != "" {
		report("interfaces.wan", fmt.Sprintf("%q is a tunnel", c.Interfaces.WAN))
	}

	jobs := map[string]bool{}
	for i, j := range c.Logpush {
		if jobs[j.Name] {
			report(fmt.Sprintf("logpush[%d].name", i), fmt.Sprintf("%q is the name of an earlier job", j.Name))
		}
		jobs[j.Name] = true
	}
	if wg := c.Tunnels.WireGuard; wg != nil && wg.Enrollment != nil && wg.Enrollment.Enabled {
		if c.Access == nil {
			report("tunnels.wireguard.enrollment.enabled", "enrollment is served at https://GATEWAY/enroll on the Access listener: add an access: section (its listen address)")
		}
		if c.Identity == nil || len(c.Identity.Providers) == 0 {
			report("tunnels.wireguard.enrollment.enabled", "users enroll by signing in: add an identity provider under identity.providers")
		}
	}
	enrolling := c.Tunnels.WireGuard != nil && c.Tunnels.WireGuard.Enrollment != nil && c.Tunnels.WireGuard.Enrollment.Enabled
	if c.Access != nil && len(c.Access.Apps) == 0 && !enrolling && c.Gateway.DNS == nil {
		// The listener also serves enrollment and DNS over HTTPS; with
		// neither, an app-less section is a mistake.
		report("access.apps", "missing: expected at least one app (without apps, enrollment or Gateway DNS the Access listener has nothing to serve)")
	}
	if c.Access != nil {
		var providers []string
		if c.Identity != nil {
			for _, p := range c.Identity.Providers {
				providers = append(providers, p.Name)
			}
		}
		access.CheckProviders(c.Access, providers, func(field, msg string) {
			report(join("access", field), msg)
		})
	}
	checkACMEListeners(c, report)
	// The console signs users in through one of the identity providers:
	// resolve it here, so that the admin section carries what it needs.
	if o := c.Admin.OIDC; o != nil && o.Provider != "" {
		if c.Identity != nil {
			for i := range c.Identity.Providers {
				if c.Identity.Providers[i].Name == o.Provider {
					p := c.Identity.Providers[i]
					o.IdP = &p
				}
			}
		}
		if o.IdP == nil {
			report("admin.oidc.provider", fmt.Sprintf("%q is not one of identity.providers", o.Provider))
		}
	}
	if c.SCIM != nil {
		if c.Access == nil {
			report("scim", "SCIM is served at https://GATEWAY/scim/v2 on the Access listener: add an access: section (its listen address)")
		}
		if !registryOn(c) {
			report("scim", "SCIM changes the devices of the device registry: configure tunnels.wireguard with identity or enrollment")
		}
	}
	if c.SCIM != nil && c.Identity != nil && c.Identity.MaxGroupAge > 0 {
		report("identity.max_group_age", "is for providers without SCIM: with scim: the provider pushes group changes at once; remove one of them")
	}
	if c.Posture != nil {
		if c.Access == nil {
			report("posture", "devices report posture to https://GATEWAY/api/v1/posture on the Access listener: add an access: section (its listen address)")
		}
		if !registryOn(c) {
			report("posture", "posture quarantines devices of the device registry: configure tunnels.wireguard with identity or enrollment")
		}
	}
	// The LAN virtual addresses go on the first LAN interface; the WAN ones
	// on interfaces.wan, or the default route's interface when unset.
	if c.HA != nil && len(c.HA.VirtualAddresses.LAN) > 0 && len(c.Interfaces.LAN) == 0 {
		report("ha.virtual_addresses.lan", "go on the first of interfaces.lan: name it")
	}
	if c.HA != nil && (c.HA.Interface == c.Interfaces.WAN || slices.Contains(c.Interfaces.LAN, c.HA.Interface)) {
		report("ha.interface", fmt.Sprintf("%q is a WAN or LAN interface: the sync link needs its own", c.HA.Interface))
	}
}

// checkACMEListeners: a listener other than Access that serves the
// gateway's ACME certificate (gateway.dns.dot.acme, admin.tls.acme) needs
// access.acme, which gets it, and a name among its domains: certificates
// are obtained for those names only.
func checkACMEListeners(c *Config, report func(field, msg string)) {
	var domains []string
	if c.Access != nil && c.Access.ACME != nil {
		domains = c.Access.ACME.Domains
	}
	if d := c.Gateway.DNS; d != nil && d.DoT != nil && d.DoT.ACME && domains == nil {
		report("gateway.dns.dot.acme", "the certificate comes from access.acme, which is not configured: add access.acme (with the DoT server's name among its domains), or drop acme to serve dot.cert_file")
	}
	if t := c.Admin.TLS; t != nil && t.ACME {
		switch {
		case domains == nil:
			report("admin.tls.acme", "the certificate comes from access.acme, which is not configured: add access.acme (with the console's name among its domains), or drop acme to serve tls.cert_file")
		case !slices.ContainsFunc(c.Admin.Hosts, func(h string) bool {
			return slices.Contains(domains, strings.ToLower(strings.TrimSuffix(h, ".")))
		}):
			report("admin.tls.acme", fmt.Sprintf("none of admin.hosts %q is among access.acme.domains %q: name the console (admin.hosts) and get a certificate for that name (access.acme.domains)", c.Admin.Hosts, domains))
		}
	}
}

//go:embed edgegw.example.yaml
var exampleYAML []byte

// ExampleYAML is the commented example of a whole office's configuration,
// for `edgegw config example`: every section, with the values a real office
// would use. Tests keep it valid; it is the contract for the file's shape.
func ExampleYAML() []byte { return exampleYAML }

// registryOn reports whether c runs a device registry: WireGuard with an
// identity section or enrollment.
func registryOn(c *Config) bool {
	wg := c.Tunnels.WireGuard
	return wg != nil && (c.Identity != nil || wg.Enrollment != nil)
}
