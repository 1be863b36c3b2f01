package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgegw/edgegw/tunnel"
)

// Config is the bgp section: edgegw's own BGP speaker, the prefixes it
// originates and its neighbors. IPv4 unicast only for now.
type Config struct {
	ASN      uint32     `yaml:"asn"`
	RouterID netip.Addr `yaml:"router_id"`
	// ListenPort is where edgegw accepts BGP sessions (default 179; -1
	// accepts none, every neighbor is then dialled).
	ListenPort int `yaml:"listen_port"`
	// Announce are the prefixes edgegw originates (the office's own
	// networks). Which neighbor gets which, with which communities, is
	// each neighbor's export.
	Announce  []netip.Prefix `yaml:"announce"`
	Neighbors []Neighbor     `yaml:"neighbors"`
}

// Neighbor is one BGP session: a branch router on a tunnel's far end, or
// an ISP on the WAN.
type Neighbor struct {
	Name     string     `yaml:"name"`
	Address  netip.Addr `yaml:"address"`
	RemoteAS uint32     `yaml:"remote_as"`
	// Tunnel is the GRE or IPsec tunnel the session runs over. Prefixes
	// learned from the neighbor become routes through it, at Priority
	// plus the tunnel's health penalty. Without a tunnel (an ISP on the
	// WAN) nothing learned is installed: edgegw only announces.
	Tunnel   string `yaml:"tunnel"`
	Priority int    `yaml:"priority"` // of learned routes; default 100
	// Passive waits for the neighbor to connect instead of dialling it.
	Passive bool `yaml:"passive"`
	// PasswordFile holds the TCP MD5 signature password (RFC 2385), the
	// file's first line.
	PasswordFile string `yaml:"password_file" file:"secret"`
	// HoldTime in seconds (default 90, or 3 to 65535); keepalives go
	// every third of it.
	HoldTime int `yaml:"hold_time"`
	// GracefulRestart advertises the capability (RFC 4724) with this
	// restart time in seconds; 0 leaves it off.
	GracefulRestart int          `yaml:"graceful_restart"`
	Import          ImportPolicy `yaml:"import"`
	// Export lists what edgegw announces to the neighbor: the first rule
	// whose prefixes hold an announced prefix decides its attributes. No
	// rule at all exports every announced prefix as it is. Nothing
	// learned from another neighbor is ever re-exported.
	Export []ExportRule `yaml:"export"`
}

// ImportPolicy decides which learned prefixes become routes.
type ImportPolicy struct {
	// Prefixes accepted, each with the longest mask length allowed (the
	// prefix's own length when unset). Empty accepts any prefix except
	// the default route.
	Prefixes []PrefixRange `yaml:"prefixes"`
	// AllowDefault accepts 0.0.0.0/0, which is refused otherwise: a branch
	// must not pull the office's Internet traffic into its tunnel by
	// mistake.
	AllowDefault bool `yaml:"allow_default"`
	// MaxPrefixes tears the session down (a Cease NOTIFICATION) when the
	// neighbor sends more; default 1000, 0 after defaults means none.
	MaxPrefixes int `yaml:"max_prefixes"`
}

// PrefixRange matches Prefix and its more-specifics up to MaxLength.
type PrefixRange struct {
	Prefix    netip.Prefix `yaml:"prefix"`
	MaxLength int          `yaml:"max_length"`
}

// ExportRule sets the attributes of the announced prefixes it holds.
type ExportRule struct {
	// Prefixes this rule exports (each must be announced); empty means
	// every announced prefix.
	Prefixes []netip.Prefix `yaml:"prefixes"`
	// Communities (RFC 1997, "ASN:value", or a well-known name such as
	// no-export) and large communities (RFC 8092, "ASN:x:y") attached,
	// such as an ISP's action communities that set its local preference.
	Communities      []string `yaml:"communities"`
	LargeCommunities []string `yaml:"large_communities"`
	// Prepend repeats edgegw's ASN this many times more (0 to 10), for a
	// provider without communities.
	Prepend int `yaml:"prepend"`
}

const (
	defaultPriority    = 100
	defaultHoldTime    = 90
	defaultMaxPrefixes = 1000
)

// SetDefaults fills the defaults.
func (c *Config) SetDefaults() {
	if c.ListenPort == 0 {
		c.ListenPort = 179
	}
	for i := range c.Neighbors {
		n := &c.Neighbors[i]
		if n.Priority == 0 {
			n.Priority = defaultPriority
		}
		if n.HoldTime == 0 {
			n.HoldTime = defaultHoldTime
		}
		if n.Import.MaxPrefixes == 0 {
			n.Import.MaxPrefixes = defaultMaxPrefixes
		}
	}
}

// Validate reports every problem with a field path relative to the
// section.
func (c *Config) Validate(report func(field, msg string)) {
	if c.ASN == 0 || c.ASN == 23456 || c.ASN == 0xffffffff {
		report("asn", fmt.Sprintf("%d is not a usable AS number", c.ASN))
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		report("router_id", "expected an IPv4 address naming this speaker, such as its WAN address")
	}
	if c.ListenPort != -1 && (c.ListenPort < 1 || c.ListenPort > 65535) {
		report("listen_port", fmt.Sprintf("must be from 1 to 65535, or -1 to accept no session, got %d", c.ListenPort))
	}
	for i, p := range c.Announce {
		f := fmt.Sprintf("announce[%d]", i)
		tunnel.CheckPrefix(report, f, p)
		if p.IsValid() && !p.Addr().Is4() {
			report(f, fmt.Sprintf("%s: only IPv4 unicast is supported for now", p))
		}
		if slices.Index(c.Announce, p) < i {
			report(f, fmt.Sprintf("%s is announced twice", p))
		}
	}
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	for i := range c.Neighbors {
		n := &c.Neighbors[i]
		at := func(field, msg string) { report(fmt.Sprintf("neighbors[%d].%s", i, field), msg) }
		if n.Name == "" {
			at("name", "missing: every neighbor needs a name (it labels metrics and logs)")
		} else if j, dup := names[n.Name]; dup {
			at("name", fmt.Sprintf("%q is also neighbors[%d]", n.Name, j))
		} else {
			names[n.Name] = i
		}
		n.validate(c, at)
		if n.Address.IsValid() {
			if j, dup := addrs[n.Address]; dup {
				at("address", fmt.Sprintf("%s is also neighbors[%d]", n.Address, j))
			} else {
				addrs[n.Address] = i
			}
		}
	}
}

func (n *Neighbor) validate(c *Config, at func(field, msg string)) {
	switch {
	case !n.Address.Is4():
		at("address", "expected the neighbor's IPv4 address (a tunnel's far end, or the ISP's side of the WAN link)")
	case n.Address.IsUnspecified() || n.Address.IsMulticast() || n.Address.IsLoopback():
		at("address", fmt.Sprintf("%s is not a unicast address", n.Address))
	}
	if n.RemoteAS == 0 || n.RemoteAS == 23456 {
		at("remote_as", "missing or unusable: the neighbor's AS number")
	} else if n.RemoteAS == c.ASN {
		at("remote_as", fmt.Sprintf("%d is edgegw's own AS: only eBGP sessions are supported", n.RemoteAS))
	}
	if n.Tunnel != "" {
		tunnel.CheckName(at, "tunnel", n.Tunnel)
	}
	if n.Priority < 1 || n.Priority > tunnel.MaxPriority {
		at("priority", fmt.Sprintf("must be from 1 to %d, got %d", tunnel.MaxPriority, n.Priority))
	}
	if n.HoldTime < 3 || n.HoldTime > 65535 {
		at("hold_time", fmt.Sprintf("must be from 3 to 65535 seconds, got %d", n.HoldTime))
	}
	if n.GracefulRestart < 0 || n.GracefulRestart > 4095 {
		at("graceful_restart", fmt.Sprintf("restart time must be from 1 to 4095 seconds (0: off), got %d", n.GracefulRestart))
	}
	if n.Import.MaxPrefixes < 0 {
		at("import.max_prefixes", fmt.Sprintf("must not be negative, got %d", n.Import.MaxPrefixes))
	}
	for j, r := range n.Import.Prefixes {
		f := fmt.Sprintf("import.prefixes[%d]", j)
		tunnel.CheckPrefix(at, f+".prefix", r.Prefix)
		if r.Prefix.IsValid() && !r.Prefix.Addr().Is4() {
			at(f+".prefix", fmt.Sprintf("%s: only IPv4 unicast is supported for now", r.Prefix))
		}
		if r.MaxLength != 0 && (r.MaxLength < r.Prefix.Bits() || r.MaxLength > 32) {
			at(f+".max_length", fmt.Sprintf("must be from the prefix's length (%d) to 32, got %d", r.Prefix.Bits(), r.MaxLength))
		}
	}
	for j, e := range n.Export {
		f := fmt.Sprintf("export[%d]", j)
		for k, p := range e.Prefixes {
			if !slices.Contains(c.Announce, p) {
				at(fmt.Sprintf("%s.prefixes[%d]", f, k), fmt.Sprintf("%s is not in announce (%s): edgegw exports only what it originates",
					p, joinPrefixes(c.Announce)))
			}
		}
		for k, s := range e.Communities {
			if _, err := ParseCommunity(s); err != nil {
				at(fmt.Sprintf("%s.communities[%d]", f, k), err.Error())
			}
		}
		for k, s := range e.LargeCommunities {
			if _, err := ParseLargeCommunity(s); err != nil {
				at(fmt.Sprintf("%s.large_communities[%d]", f, k), err.Error())
			}
		}
		if e.Prepend < 0 || e.Prepend > 10 {
			at(f+".prepend", fmt.Sprintf("must be from 0 to 10, got %d", e.Prepend))
		}
	}
}

// Tunnels names the tunnels that carry sessions, each once, in neighbor
// order: prefixes not known in advance are routed through them, so IPsec
// ones among them need route-based child SAs (site.Config.Wide).
func (c *Config) Tunnels() []string {
	var out []string
	for _, n := range c.Neighbors {
		if n.Tunnel != "" && !slices.Contains(out, n.Tunnel) {
			out = append(out, n.Tunnel)
		}
	}
	return out
}

// CheckTunnels reports neighbors whose tunnel names none of tunnels (the
// names of every GRE and IPsec tunnel). Fields are relative to the
// section.
func CheckTunnels(report func(field, msg string), c *Config, tunnels []string) {
	for i, n := range c.Neighbors {
		if n.Tunnel != "" && !slices.Contains(tunnels, n.Tunnel) {
			report(fmt.Sprintf("neighbors[%d].tunnel", i), fmt.Sprintf("no GRE or IPsec tunnel is named %q (tunnels: %s)",
				n.Tunnel, strings.Join(tunnels, ", ")))
		}
	}
}

// Accepts tells whether the import policy takes p.
func (ip *ImportPolicy) Accepts(p netip.Prefix) bool {
	if p.Bits() == 0 {
		return ip.AllowDefault
	}
	if len(ip.Prefixes) == 0 {
		return true
	}
	for _, r := range ip.Prefixes {
		maxLen := r.MaxLength
		if maxLen == 0 {
			maxLen = r.Prefix.Bits()
		}
		if p.Addr().Is4() == r.Prefix.Addr().Is4() && p.Bits() >= r.Prefix.Bits() && p.Bits() <= maxLen && r.Prefix.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	if len(s) == 0 {
		return "empty"
	}
	return strings.Join(s, ", ")
}
