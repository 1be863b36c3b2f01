// Package gre terminates GRE (RFC 2784, keys and sequence numbers per RFC
// 2890) site-to-site tunnels from branch routers, on one of two backends
// behind the same [Tunnel]: the kernel's ip_gre interface configured over
// netlink where the kernel has it (the appliance image), and a userspace
// dataplane everywhere else (kernels without ip_gre, like the development
// machines). [BackendAuto], the default, picks the kernel when it can.
//
// In userspace, each tunnel is a TUN device named after it (with
// virtio-net headers and TSO/GSO offloads through
// golang.zx2c4.com/wireguard/tun) carrying the tunnel address; tunnels on
// one local address share a raw IPPROTO_GRE socket ([Endpoints]) read and
// written in batches with recvmmsg and sendmmsg. Received packets are
// demultiplexed by outer source address and key; packets from unknown
// sources, with a wrong key, out of sequence or malformed are counted and
// dropped, never forwarded. TCP segments that the receiving NIC's GRO
// coalesced go to the TUN device as one TSO packet (gro.go); a raw socket
// has no segmentation offload, so sending stays one system call's share
// per segment.
//
// On ip_gre, the kernel does all of that; a packet socket on the
// interface, filtered to arriving ICMP, carries the health checks'
// probes and answers.
//
// Health checks ([github.com/edgegw/edgegw/tunnel/health]) reach the
// tunnel through [Tunnel.Inject] and [Tunnel.SetProbeHandler]; routes
// through it are installed by [github.com/edgegw/edgegw/tunnel.RouteManager].
package gre

import (
	"fmt"
	"net/netip"

	"github.com/edgegw/edgegw/tunnel"
)

// Config is one GRE tunnel, shaped like a Magic WAN GRE tunnel object.
type Config struct {
	Name    string       `yaml:"name"`
	Local   netip.Addr   `yaml:"local"`  // this appliance's public address
	Remote  netip.Addr   `yaml:"remote"` // the branch router
	Address netip.Prefix `yaml:"address"`
	MTU     int          `yaml:"mtu"` // default 1476: 1500 minus 24 bytes of GRE over IPv4
	TTL     int          `yaml:"ttl"` // default 64
	Key     *uint32      `yaml:"key"`
	// Sequence sends RFC 2890 sequence numbers and requires them on what
	// arrives: packets without one, replayed or too late are dropped and
	// counted. Off by default, as in Magic WAN.
	Sequence    bool               `yaml:"sequence"`
	HealthCheck tunnel.HealthCheck `yaml:"health_check"`
}

// SetDefaults applies Magic WAN's GRE defaults.
func (c *Config) SetDefaults() {
	if c.MTU == 0 {
		c.MTU = 1476
	}
	if c.TTL == 0 {
		c.TTL = 64
	}
}

// Validate checks one tunnel on its own.
func (c *Config) Validate(report func(field, msg string)) {
	tunnel.CheckName(report, "name", c.Name)
	if !c.Local.Is4() {
		report("local", "expected this appliance's public IPv4 address")
	}
	if !c.Remote.Is4() {
		report("remote", "expected the branch router's public IPv4 address")
	} else if c.Remote == c.Local {
		report("remote", fmt.Sprintf("%s is also local: a tunnel's remote must differ from its local address", c.Remote))
	} else if !c.Remote.IsGlobalUnicast() && !c.Remote.IsPrivate() {
		report("remote", fmt.Sprintf("%s is not a unicast address", c.Remote))
	}
	tunnel.CheckTunnelAddress(report, "address", c.Address)
	if c.MTU < 576 || c.MTU > 1476 {
		report("mtu", fmt.Sprintf("must be from 576 to 1476 (1500 minus GRE's 24 bytes), got %d", c.MTU))
	}
	if c.TTL < 1 || c.TTL > 255 {
		report("ttl", fmt.Sprintf("must be from 1 to 255, got %d", c.TTL))
	}
}

// ValidateList checks what concerns several tunnels: unique names,
// tunnel addresses that do not overlap, and no two tunnels receiving the
// same packets (same local, remote and key). Fields are "[i].field",
// relative to the list.
func ValidateList(cs []Config, report func(field, msg string)) {
	for i, c := range cs {
		f := func(name string) string { return fmt.Sprintf("[%d].%s", i, name) }
		for j, d := range cs[:i] {
			if c.Name != "" && c.Name == d.Name {
				report(f("name"), fmt.Sprintf("tunnel %q is defined twice (also [%d])", c.Name, j))
			}
			if c.Address.IsValid() && d.Address.IsValid() && c.Address.Overlaps(d.Address) {
				report(f("address"), fmt.Sprintf("tunnel %q: %s overlaps tunnel %q's %s", c.Name, c.Address, d.Name, d.Address))
			}
			if c.Local == d.Local && c.Remote == d.Remote && keyEqual(c.Key, d.Key) {
				report(f("remote"), fmt.Sprintf("tunnel %q: tunnel %q already connects %s to %s with the same key; give one a key",
					c.Name, d.Name, c.Local, c.Remote))
			}
		}
	}
}

func keyEqual(a, b *uint32) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Equal reports whether c and o configure the same tunnel; a reload
// that leaves a tunnel Equal leaves it running.
func (c Config) Equal(o Config) bool {
	he, oe := c.HealthCheck.Enabled, o.HealthCheck.Enabled
	return c.Name == o.Name && c.Local == o.Local && c.Remote == o.Remote && c.Address == o.Address &&
		c.MTU == o.MTU && c.TTL == o.TTL && keyEqual(c.Key, o.Key) && c.Sequence == o.Sequence &&
		(he == nil) == (oe == nil) && (he == nil || *he == *oe) &&
		c.HealthCheck.Type == o.HealthCheck.Type && c.HealthCheck.Rate == o.HealthCheck.Rate &&
		c.HealthCheck.Direction == o.HealthCheck.Direction && c.HealthCheck.Target == o.HealthCheck.Target
}

// MSS is the TCP maximum segment size that fits a tunnel of this MTU
// without fragmenting: the MTU less 20 bytes of IPv4 and 20 of TCP
// (1436 for the default 1476). edgegw's nft table clamps SYNs through the
// tunnel's interface to it.
func (c Config) MSS() int { return c.MTU - 40 }
