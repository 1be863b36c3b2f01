package wireguard

import (
	"cmp"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/edgegw/edgegw/tunnel"
)

// Defaults for the zero values of Config.
const (
	DefaultInterface  = "wg0"
	DefaultListenPort = 51820
	DefaultMTU        = 1420
)

// DefaultAddress is the gateway's address when none is configured; the rest
// of the prefix is for peers.
var DefaultAddress = netip.MustParsePrefix("100.96.0.1/12")

// Config is the device part of the `tunnels.wireguard:` section.
type Config struct {
	Interface      string       `yaml:"interface"`                      // default "wg0"
	ListenPort     int          `yaml:"listen_port"`                    // default 51820
	Address        netip.Prefix `yaml:"address"`                        // the gateway's address in the peers' prefix; default 100.96.0.1/12
	MTU            int          `yaml:"mtu"`                            // default 1420
	PrivateKeyFile string       `yaml:"private_key_file" file:"secret"` // default <state_dir>/wireguard/<interface>.key, generated on first run
	Peers          []Peer       `yaml:"peers"`
}

// Peer is a statically configured peer.
type Peer struct {
	Name                string         `yaml:"name"`
	PublicKey           Key            `yaml:"public_key"`
	AllowedIPs          []netip.Prefix `yaml:"allowed_ips"`
	PresharedKeyFile    string         `yaml:"preshared_key_file" file:"secret"`
	PersistentKeepalive time.Duration  `yaml:"persistent_keepalive"` // 0 (off) or whole seconds up to 65535s
	Email               string         `yaml:"email"`                // optional identity for identity.* selectors
	Groups              []string       `yaml:"groups"`
	// HealthCheck makes a site-to-site peer (a branch router, not a
	// remote user) health-checked like a GRE or IPsec tunnel: ICMP probes
	// through the tunnel to Target, healthy/degraded/down, and quality
	// probes giving latency, jitter, loss, loaded latency and AIM-style
	// grades (see sitehealth.go). Nil: none.
	HealthCheck *tunnel.HealthCheck `yaml:"health_check"`
}

// SetDefaults fills the zero values.
func (c *Config) SetDefaults() {
	if c.Interface == "" {
		c.Interface = DefaultInterface
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultListenPort
	}
	if !c.Address.IsValid() {
		c.Address = DefaultAddress
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	for i := range c.Peers {
		if hc := c.Peers[i].HealthCheck; hc != nil {
			// Probes go through the kernel (sitehealth.go): a reply-style
			// probe, addressed to the gateway itself, would be delivered
			// locally and never cross the tunnel.
			if hc.Type == "" {
				hc.Type = "request"
			}
			hc.SetDefaults()
		}
	}
}

// PrivateKeyPath is where the device's private key lives: PrivateKeyFile,
// or the default file under stateDir.
func (c *Config) PrivateKeyPath(stateDir string) string {
	if c.PrivateKeyFile != "" {
		return c.PrivateKeyFile
	}
	if stateDir == "" {
		return ""
	}
	ifname := c.Interface
	if ifname == "" {
		ifname = DefaultInterface
	}
	return filepath.Join(stateDir, "wireguard", ifname+".key")
}

// Peer returns the peer called name.
func (c *Config) Peer(name string) (Peer, bool) {
	for _, p := range c.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

var (
	// Interface names: the kernel allows more, but these are the names
	// that are safe in shell scripts, nft rules and socket paths.
	ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$`)
	// Peer names appear in metric labels, logs and `edgegw peer config NAME`.
	peerNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$`)
)

// Validate reports every problem of the section. It expects SetDefaults to
// have run; files are not read.
func (c *Config) Validate(report func(field, msg string)) {
	switch {
	case c.Interface == "":
		report("interface", "missing: expected an interface name such as wg0")
	case len(c.Interface) > 15:
		report("interface", fmt.Sprintf("%q is %d characters long; interface names have at most 15", c.Interface, len(c.Interface)))
	case !ifnameRE.MatchString(c.Interface):
		report("interface", fmt.Sprintf("%q is not an interface name: use letters, digits, _, - and . (not first)", c.Interface))
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		report("listen_port", fmt.Sprintf("%d is not a port: expected 1..65535", c.ListenPort))
	}
	c.validateAddress(report)
	if c.MTU < 576 || c.MTU > 9000 {
		report("mtu", fmt.Sprintf("%d is out of range: expected 576..9000 (default %d)", c.MTU, DefaultMTU))
	} else if c.MTU < 1280 && c.usesIPv6() {
		report("mtu", fmt.Sprintf("%d is below 1280, the minimum for IPv6 addresses on the tunnel", c.MTU))
	}
	if strings.TrimSpace(c.PrivateKeyFile) != c.PrivateKeyFile {
		report("private_key_file", fmt.Sprintf("%q has leading or trailing white space", c.PrivateKeyFile))
	}
	c.validatePeers(report)
}

func (c *Config) validateAddress(report func(field, msg string)) {
	a := c.Address
	if !a.IsValid() {
		report("address", "missing: expected the gateway's address with its prefix length, such as 100.96.0.1/12")
		return
	}
	ip := a.Addr()
	network := a.Masked()
	switch {
	case ip.Is4In6():
		report("address", fmt.Sprintf("%s is an IPv4-mapped IPv6 address; write it as IPv4", a))
	case ip.Is4() && a.Bits() == 32, ip.Is6() && a.Bits() == 128:
		report("address", fmt.Sprintf("%s is a single address; expected the gateway's address inside the peers' prefix, such as 100.96.0.1/12", a))
	case ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback():
		report("address", fmt.Sprintf("%s is not a unicast host address", a))
	case ip == network.Addr() && !(ip.Is4() && a.Bits() == 31):
		report("address", fmt.Sprintf("%s is the prefix's network address; expected a host address such as %s", a, netip.PrefixFrom(ip.Next(), a.Bits())))
	case ip.Is4() && a.Bits() <= 30 && ip == lastAddr(network):
		report("address", fmt.Sprintf("%s is the prefix's broadcast address; expected a host address such as %s", a, netip.PrefixFrom(network.Addr().Next(), a.Bits())))
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		hostBits := len(b)*8 - p.Bits() - (len(b)-1-i)*8
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(1<<hostBits - 1)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (c *Config) usesIPv6() bool {
	if c.Address.Addr().Is6() {
		return true
	}
	for _, p := range c.Peers {
		for _, a := range p.AllowedIPs {
			if a.Addr().Is6() {
				return true
			}
		}
	}
	return false
}

func (c *Config) validatePeers(report func(field, msg string)) {
	names := map[string]int{}
	keys := map[Key]int{}
	var claimed []owner
	for i, p := range c.Peers {
		at := func(field string) string { return fmt.Sprintf("peers[%d].%s", i, field) }
		switch {
		case p.Name == "":
			report(at("name"), "missing: every peer needs a name")
		case !peerNameRE.MatchString(p.Name):
			report(at("name"), fmt.Sprintf("%q is not a peer name: use up to 63 letters, digits, _, -, . and @, starting with a letter or digit", p.Name))
		default:
			if j, dup := names[p.Name]; dup {
				report(at("name"), fmt.Sprintf("%q is already the name of peers[%d]", p.Name, j))
			} else {
				names[p.Name] = i
			}
		}
		switch {
		case p.PublicKey.IsZero():
			report(at("public_key"), "missing: expected the peer's public key, 44 characters of base64 as `wg pubkey` writes")
		case p.PublicKey.LowOrder():
			report(at("public_key"), "is a Curve25519 point of small order, not a usable public key")
		default:
			if j, dup := keys[p.PublicKey]; dup {
				report(at("public_key"), fmt.Sprintf("is already the key of peers[%d] (%s); every peer needs its own key", j, c.Peers[j].Name))
			} else {
				keys[p.PublicKey] = i
			}
		}
		if len(p.AllowedIPs) == 0 {
			report(at("allowed_ips"), "missing: expected the peer's addresses, such as [100.96.0.10/32]")
		}
		for k, a := range p.AllowedIPs {
			field := fmt.Sprintf("peers[%d].allowed_ips[%d]", i, k)
			switch {
			case !a.IsValid():
				report(field, "is not a prefix: expected an address with its length, such as 100.96.0.10/32")
				continue
			case a.Addr().Is4In6():
				report(field, fmt.Sprintf("%s is an IPv4-mapped IPv6 prefix; write it as IPv4", a))
				continue
			case a != a.Masked():
				report(field, fmt.Sprintf("%s has host bits set; did you mean %s, or %s for the single address?", a, a.Masked(), netip.PrefixFrom(a.Addr(), a.Addr().BitLen())))
				continue
			case c.Address.IsValid() && a.Contains(c.Address.Addr()):
				report(field, fmt.Sprintf("%s contains the gateway's own address %s", a, c.Address.Addr()))
				continue
			}
			claimed = append(claimed, owner{peer: i, idx: k, prefix: a})
		}
		if strings.TrimSpace(p.PresharedKeyFile) != p.PresharedKeyFile {
			report(at("preshared_key_file"), fmt.Sprintf("%q has leading or trailing white space", p.PresharedKeyFile))
		}
		if ka := p.PersistentKeepalive; ka != 0 {
			switch {
			case ka < time.Second || ka > 65535*time.Second:
				report(at("persistent_keepalive"), fmt.Sprintf("%s is out of range: expected 0 (off) or 1s..65535s, typically 25s", ka))
			case ka%time.Second != 0:
				report(at("persistent_keepalive"), fmt.Sprintf("%s is not a whole number of seconds; WireGuard counts keepalives in seconds", ka))
			}
		}
		if p.Email != "" && !plausibleEmail(p.Email) {
			report(at("email"), fmt.Sprintf("%q is not an email address such as user@example.com", p.Email))
		}
		seenGroup := map[string]bool{}
		for k, g := range p.Groups {
			field := fmt.Sprintf("peers[%d].groups[%d]", i, k)
			switch {
			case strings.TrimSpace(g) == "":
				report(field, "is empty: expected a group name")
			case seenGroup[g]:
				report(field, fmt.Sprintf("%q is listed twice", g))
			}
			seenGroup[g] = true
		}
		if p.HealthCheck != nil {
			c.validateHealthCheck(p, func(field, msg string) { report(at("health_check."+field), msg) })
		}
	}
	checkOverlaps(claimed, c.Peers, report)
}

// owner is one allowed prefix of one peer.
type owner struct {
	peer, idx int
	prefix    netip.Prefix // masked
}

// checkOverlaps reports every allowed prefix that overlaps an earlier
// peer's, or repeats one of its own peer's, naming the earlier one. It
// sorts by start address, shorter prefixes first, so every prefix comes
// after the prefixes that contain it, and sweeps with a stack of the
// prefixes containing the current one: O(n log n), where comparing every
// pair took seconds for the 10,000 peers of enrolled devices.
func checkOverlaps(claimed []owner, peers []Peer, report func(field, msg string)) {
	sorted := slices.Clone(claimed)
	slices.SortFunc(sorted, func(x, y owner) int {
		return cmp.Or(x.prefix.Addr().Compare(y.prefix.Addr()), cmp.Compare(x.prefix.Bits(), y.prefix.Bits()),
			cmp.Compare(x.peer, y.peer), cmp.Compare(x.idx, y.idx))
	})
	before := func(x, y owner) bool { return x.peer < y.peer || (x.peer == y.peer && x.idx < y.idx) }
	reported := map[[2]int]bool{}
	var stack []owner
	for _, cur := range sorted {
		for len(stack) > 0 && !stack[len(stack)-1].prefix.Contains(cur.prefix.Addr()) {
			stack = stack[:len(stack)-1]
		}
		// Every prefix on the stack contains cur; the nearest conflict wins.
		for j := len(stack) - 1; j >= 0; j-- {
			o := stack[j]
			if o.peer == cur.peer && o.prefix != cur.prefix {
				continue // nested prefixes of one peer are harmless
			}
			later, earlier := cur, o
			if before(cur, o) {
				later, earlier = o, cur
			}
			key := [2]int{later.peer, later.idx}
			if reported[key] {
				break
			}
			reported[key] = true
			field := fmt.Sprintf("peers[%d].allowed_ips[%d]", later.peer, later.idx)
			if later.peer == earlier.peer {
				report(field, fmt.Sprintf("%s is listed twice", later.prefix))
			} else {
				report(field, fmt.Sprintf("%s overlaps %s of peers[%d] (%s); a prefix can route to one peer only",
					later.prefix, earlier.prefix, earlier.peer, peers[earlier.peer].Name))
			}
			break
		}
		stack = append(stack, cur)
	}
}

func plausibleEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && domain != "" && !strings.Contains(domain, "@") &&
		!strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '<' || r == '>' })
}

// Equal reports whether c and o configure the same device.
func (c *Config) Equal(o *Config) bool {
	if c.Interface != o.Interface || c.ListenPort != o.ListenPort || c.Address != o.Address ||
		c.MTU != o.MTU || c.PrivateKeyFile != o.PrivateKeyFile || len(c.Peers) != len(o.Peers) {
		return false
	}
	for i := range c.Peers {
		if !c.Peers[i].Equal(&o.Peers[i]) {
			return false
		}
	}
	return true
}

// Equal reports whether p and o are the same peer configuration.
func (p *Peer) Equal(o *Peer) bool {
	return p.Name == o.Name && p.PublicKey == o.PublicKey && slices.Equal(p.AllowedIPs, o.AllowedIPs) &&
		p.PresharedKeyFile == o.PresharedKeyFile && p.PersistentKeepalive == o.PersistentKeepalive &&
		p.Email == o.Email && slices.Equal(p.Groups, o.Groups)
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	n := *c
	n.Peers = make([]Peer, len(c.Peers))
	for i, p := range c.Peers {
		p.AllowedIPs = slices.Clone(p.AllowedIPs)
		p.Groups = slices.Clone(p.Groups)
		if p.HealthCheck != nil {
			hc := *p.HealthCheck
			p.HealthCheck = &hc
		}
		n.Peers[i] = p
	}
	if c.Peers == nil {
		n.Peers = nil
	}
	return &n
}

// check applies the defaults to a copy of c and validates it, for callers
// that did not come through the configuration loader.
func (c *Config) check() (*Config, error) {
	n := c.Clone()
	n.SetDefaults()
	var errs []string
	n.Validate(func(field, msg string) {
		if field == "" {
			errs = append(errs, msg)
			return
		}
		errs = append(errs, field+": "+msg)
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid wireguard config: %s", strings.Join(errs, "; "))
	}
	return n, nil
}
