// Package gre terminates GRE (RFC 2784, keys and sequence numbers per RFC
// 2890) site-to-site tunnels from branch routers. Only the configuration is
// here so far; the userspace dataplane lands with the GRE issue.
package gre

import (
	"fmt"
	"net/netip"

	"github.com/edgegw/edgegw/tunnel"
)

// Config is one GRE tunnel, shaped like a Magic WAN GRE tunnel object.
type Config struct {
	Name        string             `yaml:"name"`
	Local       netip.Addr         `yaml:"local"`  // this appliance's public address
	Remote      netip.Addr         `yaml:"remote"` // the branch router
	Address     netip.Prefix       `yaml:"address"`
	MTU         int                `yaml:"mtu"` // default 1476: 1500 minus 24 bytes of GRE over IPv4
	TTL         int                `yaml:"ttl"` // default 64
	Key         *uint32            `yaml:"key"`
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
	}
	tunnel.CheckTunnelAddress(report, "address", c.Address)
	if c.MTU < 576 || c.MTU > 1476 {
		report("mtu", fmt.Sprintf("must be from 576 to 1476 (1500 minus GRE's 24 bytes), got %d", c.MTU))
	}
	if c.TTL < 1 || c.TTL > 255 {
		report("ttl", fmt.Sprintf("must be from 1 to 255, got %d", c.TTL))
	}
}
