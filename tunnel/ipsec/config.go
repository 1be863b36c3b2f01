// Package ipsec runs IKEv2 site-to-site tunnels through strongSwan's charon,
// driven over VICI. Only the configuration is here so far; the engine lands
// with the IPsec issue.
package ipsec

import (
	"fmt"
	"net/netip"
	"regexp"
	"time"

	"github.com/edgegw/edgegw/tunnel"
)

// Config is one IPsec tunnel, shaped like a Magic WAN IPsec tunnel object.
type Config struct {
	Name         string             `yaml:"name"`
	Local        netip.Addr         `yaml:"local"`
	Remote       netip.Addr         `yaml:"remote"` // unset: accept the peer from any address (responder only)
	LocalID      string             `yaml:"local_id"`
	RemoteID     string             `yaml:"remote_id"`
	PSKFile      string             `yaml:"psk_file" file:"secret"`
	Address      netip.Prefix       `yaml:"address"`
	MTU          int                `yaml:"mtu"` // default 1450
	IKEProposals []string           `yaml:"ike_proposals"`
	ESPProposals []string           `yaml:"esp_proposals"`
	Rekey        time.Duration      `yaml:"rekey"`         // default 4h
	ReplayWindow *int               `yaml:"replay_window"` // default 1024; 0 disables anti-replay
	Initiator    bool               `yaml:"initiator"`     // also start the SA, not only answer
	DPD          time.Duration      `yaml:"dpd"`           // default 30s
	HealthCheck  tunnel.HealthCheck `yaml:"health_check"`
}

// SetDefaults applies Magic WAN's IPsec profile.
func (c *Config) SetDefaults() {
	if c.MTU == 0 {
		c.MTU = 1450
	}
	if len(c.IKEProposals) == 0 {
		c.IKEProposals = []string{"aes256gcm16-prfsha256-ecp384", "aes256gcm16-prfsha256-modp2048", "aes256-sha256-modp2048"}
	}
	if len(c.ESPProposals) == 0 {
		c.ESPProposals = []string{"aes256gcm16-ecp384", "aes256gcm16-modp2048", "aes256-sha256-modp2048"}
	}
	if c.Rekey == 0 {
		c.Rekey = 4 * time.Hour
	}
	if c.ReplayWindow == nil {
		w := 1024
		c.ReplayWindow = &w
	}
	if c.DPD == 0 {
		c.DPD = 30 * time.Second
	}
}

// A strongSwan proposal: algorithms joined by dashes.
var proposal = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// Validate checks one tunnel on its own.
func (c *Config) Validate(report func(field, msg string)) {
	tunnel.CheckName(report, "name", c.Name)
	if !c.Local.IsValid() {
		report("local", "missing: expected this appliance's public address")
	}
	if c.Initiator && !c.Remote.IsValid() {
		report("remote", "an initiator needs the peer's address")
	}
	if c.LocalID == "" {
		report("local_id", "missing: expected an FQDN, user@FQDN or IP identity")
	}
	if c.RemoteID == "" {
		report("remote_id", "missing: expected an FQDN, user@FQDN or IP identity")
	}
	if c.PSKFile == "" {
		report("psk_file", "missing: the pre-shared key is read from this file")
	}
	tunnel.CheckTunnelAddress(report, "address", c.Address)
	if c.MTU < 576 || c.MTU > 1500 {
		report("mtu", fmt.Sprintf("must be from 576 to 1500, got %d", c.MTU))
	}
	for i, p := range c.IKEProposals {
		if !proposal.MatchString(p) {
			report(fmt.Sprintf("ike_proposals[%d]", i), fmt.Sprintf("%q is not a strongSwan proposal such as aes256gcm16-prfsha256-ecp384", p))
		}
	}
	for i, p := range c.ESPProposals {
		if !proposal.MatchString(p) {
			report(fmt.Sprintf("esp_proposals[%d]", i), fmt.Sprintf("%q is not a strongSwan proposal such as aes256gcm16-ecp384", p))
		}
	}
	if c.Rekey < time.Minute {
		report("rekey", fmt.Sprintf("must be at least 1m, got %s", c.Rekey))
	}
	if *c.ReplayWindow < 0 || *c.ReplayWindow > 4096 {
		report("replay_window", fmt.Sprintf("must be from 0 (off) to 4096, got %d", *c.ReplayWindow))
	}
}
