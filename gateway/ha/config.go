// Package ha runs this node's half of an active/standby pair: the `ha:`
// configuration section, keepalived's configuration rendered from it, and
// a supervised keepalived (VRRP) that moves the virtual addresses to the
// active node. edgegw learns the role from keepalived's notify FIFO and
// exposes it in status and metrics.
package ha

import (
	"net/netip"
	"strconv"
	"time"
)

// DefaultVRID is the VRRP router id used when the section names none. It
// only has to differ from other VRRP routers on the same links.
const DefaultVRID = 51

// Config is the `ha:` section. Both nodes of a pair carry the same
// section except priority and peer.
type Config struct {
	// Priority is this node's VRRP priority (1-254); the higher one
	// becomes active when both start.
	Priority int `yaml:"priority"`
	// Peer is the other node's address on the sync link; VRRP adverts go
	// to it by unicast.
	Peer netip.Addr `yaml:"peer"`
	// Interface is the sync link, where adverts are sent and received.
	Interface string `yaml:"interface"`
	// VRID is the VRRP virtual router id (1-255), the same on both nodes.
	VRID int `yaml:"vrid"`
	// Preempt lets a returning higher-priority node take the addresses
	// back. Off by default: a failover is not undone by a node that
	// flaps.
	Preempt bool `yaml:"preempt"`
	// AuthKeyFile holds the pair's VRRP password. VRRPv2 keeps only its
	// first 8 characters: it keeps a stray VRRP speaker on the sync link
	// from joining the pair, it is no cryptographic protection. VRRPv3
	// has no authentication at all.
	AuthKeyFile string `yaml:"auth_key_file" file:"secret"`
	// VRRPVersion is 2 (the default) or 3. Version 3 allows adverts
	// faster than one a second (AdvertInterval), so the addresses move
	// within about a second, but carries no password.
	VRRPVersion int `yaml:"vrrp_version"`
	// AdvertInterval is how often the active node advertises (1 s by
	// default). The standby takes over after about three intervals
	// without an advert. VRRPv2: whole seconds; VRRPv3: steps of 10 ms.
	AdvertInterval time.Duration `yaml:"advert_interval"`
	// VirtualAddresses are the addresses that follow the active node.
	VirtualAddresses VirtualAddresses `yaml:"virtual_addresses"`
}

// VirtualAddresses are the pair's addresses on each side, as prefixes so
// the node installs the right subnet route. IPv6 addresses move with the
// IPv4 ones (one VRRP instance, one state); at least one address is IPv4,
// which VRRP advertises and the split-brain probe asks for.
type VirtualAddresses struct {
	WAN []netip.Prefix `yaml:"wan"`
	LAN []netip.Prefix `yaml:"lan"`
}

// SetDefaults fills the VRID, the VRRP version and the advert interval.
func (c *Config) SetDefaults() {
	if c.VRID == 0 {
		c.VRID = DefaultVRID
	}
	if c.VRRPVersion == 0 {
		c.VRRPVersion = 2
	}
	if c.AdvertInterval == 0 {
		c.AdvertInterval = time.Second
	}
}

// Validate reports what keepalived would refuse or misread.
func (c *Config) Validate(report func(field, msg string)) {
	if c.Priority < 1 || c.Priority > 254 {
		report("priority", "must be between 1 and 254 (255 is reserved for the address owner)")
	}
	if !c.Peer.IsValid() {
		report("peer", "is required: the other node's address on the sync link")
	} else if !c.Peer.Is4() {
		report("peer", "must be an IPv4 address (VRRPv2 adverts)")
	}
	if c.Interface == "" {
		report("interface", "is required: the sync link's interface")
	} else if !validIfname(c.Interface) {
		report("interface", "is not a valid interface name")
	}
	if c.VRID < 1 || c.VRID > 255 {
		report("vrid", "must be between 1 and 255")
	}
	switch c.VRRPVersion {
	case 2:
		if c.AdvertInterval < time.Second || c.AdvertInterval > 255*time.Second || c.AdvertInterval%time.Second != 0 {
			report("advert_interval", "VRRPv2 advertises in whole seconds from 1s to 255s (vrrp_version: 3 for less)")
		}
	case 3:
		if c.AdvertInterval < 10*time.Millisecond || c.AdvertInterval > 40950*time.Millisecond || c.AdvertInterval%(10*time.Millisecond) != 0 {
			report("advert_interval", "VRRPv3 advertises in steps of 10ms from 10ms to 40.95s")
		}
		if c.AuthKeyFile != "" {
			report("auth_key_file", "VRRPv3 has no authentication: remove the key or use vrrp_version: 2")
		}
	default:
		report("vrrp_version", "must be 2 or 3")
	}
	if len(c.VirtualAddresses.WAN)+len(c.VirtualAddresses.LAN) == 0 {
		report("virtual_addresses", "needs at least one address on wan or lan")
	} else if !c.VirtualAddresses.has4() {
		report("virtual_addresses", "needs at least one IPv4 address (VRRP advertises it; IPv6 addresses move with it)")
	}
	for side, ps := range map[string][]netip.Prefix{"wan": c.VirtualAddresses.WAN, "lan": c.VirtualAddresses.LAN} {
		for i, p := range ps {
			f := "virtual_addresses." + side + "[" + strconv.Itoa(i) + "]"
			switch {
			case !p.IsValid():
				report(f, "is not a prefix")
			case p.Addr().Is6() && (p.Addr().IsLinkLocalUnicast() || p.Addr().Is4In6()):
				report(f, "must be a global or unique-local IPv6 address")
			case p.Addr() == c.Peer:
				report(f, "is the peer's own address")
			}
		}
	}
}

func (v VirtualAddresses) has4() bool {
	for _, p := range append(append([]netip.Prefix(nil), v.WAN...), v.LAN...) {
		if p.Addr().Is4() {
			return true
		}
	}
	return false
}

// validIfname tells whether s can name a Linux interface and is safe to
// write into keepalived.conf.
func validIfname(s string) bool {
	if len(s) == 0 || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
