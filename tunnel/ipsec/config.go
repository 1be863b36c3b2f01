// Package ipsec runs IKEv2 site-to-site tunnels through strongSwan's
// charon, which edgegw starts, supervises and drives over VICI: connections
// and secrets are rendered from edgegw's configuration and loaded over the
// socket (never from swanctl files), SA events mark tunnels up and down,
// and charon's log lines land in edgegw's log with the tunnel's name.
//
// ESP runs where the kernel has it (xfrm) or, on kernels without ESP as
// on the CI machines, in charon's userspace kernel-libipsec backend, whose
// one TUN device carries every tunnel: see [Engine] for how tunnels are
// told apart there.
package ipsec

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
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

// SetDefaults applies Magic WAN's IPsec profile. Health checks through an
// IPsec tunnel default to type request: a reply-style probe would need the
// branch to accept packets from its own address, which IPsec policies and
// Linux's martian checks refuse.
func (c *Config) SetDefaults() {
	if c.HealthCheck.Type == "" {
		c.HealthCheck.Type = "request"
	}
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

// Validate checks one tunnel on its own.
func (c *Config) Validate(report func(field, msg string)) {
	tunnel.CheckName(report, "name", c.Name)
	if !c.Local.IsValid() {
		report("local", "missing: expected this appliance's public address")
	}
	if c.Initiator && !c.Remote.IsValid() {
		report("remote", "an initiator needs the peer's address")
	}
	checkID(report, "local_id", c.Name, c.LocalID)
	checkID(report, "remote_id", c.Name, c.RemoteID)
	if c.PSKFile == "" {
		report("psk_file", "missing: the pre-shared key is read from this file")
	}
	tunnel.CheckTunnelAddress(report, "address", c.Address)
	if c.MTU < 576 || c.MTU > 1500 {
		report("mtu", fmt.Sprintf("must be from 576 to 1500, got %d", c.MTU))
	}
	if len(c.IKEProposals) == 0 {
		report("ike_proposals", fmt.Sprintf("tunnel %q: no IKE proposals", c.Name))
	}
	for i, p := range c.IKEProposals {
		if _, err := ParseProposal(p, true); err != nil {
			report(fmt.Sprintf("ike_proposals[%d]", i), fmt.Sprintf("tunnel %q: %v", c.Name, err))
		}
	}
	if len(c.ESPProposals) == 0 {
		report("esp_proposals", fmt.Sprintf("tunnel %q: no ESP proposals", c.Name))
	}
	for i, p := range c.ESPProposals {
		if _, err := ParseProposal(p, false); err != nil {
			report(fmt.Sprintf("esp_proposals[%d]", i), fmt.Sprintf("tunnel %q: %v", c.Name, err))
		}
	}
	if c.Rekey > 8*time.Hour {
		// Magic WAN rekeys between 30 minutes and 8 hours; shorter lives
		// than 30m are allowed (a branch may want them), longer are not.
		report("rekey", fmt.Sprintf("tunnel %q: must be at most 8h (Magic WAN profile), got %s", c.Name, c.Rekey))
	}
	if c.DPD < time.Second {
		report("dpd", fmt.Sprintf("tunnel %q: must be at least 1s, got %s", c.Name, c.DPD))
	}
	if c.HealthCheck.Type == "reply" {
		report("health_check.type", fmt.Sprintf("tunnel %q: reply-style probes cannot cross an IPsec tunnel "+
			"(the branch would have to accept packets from its own address); use request", c.Name))
	}
	if c.Rekey < time.Minute {
		report("rekey", fmt.Sprintf("tunnel %q: must be at least 1m, got %s", c.Name, c.Rekey))
	}
	if *c.ReplayWindow < 0 || *c.ReplayWindow > 4096 {
		report("replay_window", fmt.Sprintf("must be from 0 (off) to 4096, got %d", *c.ReplayWindow))
	}
}

var (
	fqdnID  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	localID = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+/=?^_{|}~.-]+$`)
	keyID   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// checkID accepts the identity types Magic WAN uses: an IP address
// (ID_IPV4_ADDR), an FQDN (ID_FQDN), user@FQDN (ID_RFC822_ADDR) and a
// key id (ID_KEY_ID, written as strongSwan's "keyid:…").
func checkID(report func(field, msg string), field, tunnelName, id string) {
	bad := func(why string) {
		report(field, fmt.Sprintf("tunnel %q: %q %s; expected an FQDN, user@FQDN, IP address or keyid:ID", tunnelName, id, why))
	}
	switch {
	case id == "":
		bad("is missing")
	case strings.HasPrefix(id, "keyid:"):
		if !keyID.MatchString(id[len("keyid:"):]) {
			bad("is not a key id of letters, digits, '_', '.' and '-'")
		}
	case strings.Contains(id, "@"):
		user, domain, _ := strings.Cut(id, "@")
		if !localID.MatchString(user) || !fqdnID.MatchString(domain) {
			bad("is not a valid user@FQDN")
		}
	default:
		if _, err := netip.ParseAddr(id); err == nil {
			return
		}
		if len(id) > 253 || !fqdnID.MatchString(id) {
			bad("is not a valid FQDN")
		}
	}
}

// ValidateList checks what concerns several tunnels: unique names, and
// identities that let charon tell the tunnels apart (a remote_id used by
// two tunnels from the same local address would hand the branch whichever
// tunnel charon finds first). Fields are "[i].field", relative to the list.
func ValidateList(cs []Config, report func(field, msg string)) {
	for i, c := range cs {
		f := func(name string) string { return fmt.Sprintf("[%d].%s", i, name) }
		for j, d := range cs[:i] {
			if c.Name != "" && c.Name == d.Name {
				report(f("name"), fmt.Sprintf("tunnel %q is defined twice (also [%d])", c.Name, j))
			}
			if c.RemoteID != "" && strings.EqualFold(c.RemoteID, d.RemoteID) && c.Local == d.Local {
				report(f("remote_id"), fmt.Sprintf("tunnel %q: remote_id %q is already tunnel %q's on local address %s",
					c.Name, c.RemoteID, d.Name, c.Local))
			}
		}
	}
}

// Equal reports whether c and o configure the same tunnel.
func (c Config) Equal(o Config) bool {
	ptrEq := func(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	he, oe := c.HealthCheck.Enabled, o.HealthCheck.Enabled
	return c.Name == o.Name && c.Local == o.Local && c.Remote == o.Remote && c.LocalID == o.LocalID &&
		c.RemoteID == o.RemoteID && c.PSKFile == o.PSKFile && c.Address == o.Address && c.MTU == o.MTU &&
		slices.Equal(c.IKEProposals, o.IKEProposals) && slices.Equal(c.ESPProposals, o.ESPProposals) &&
		c.Rekey == o.Rekey && ptrEq(c.ReplayWindow, o.ReplayWindow) && c.Initiator == o.Initiator && c.DPD == o.DPD &&
		(he == nil) == (oe == nil) && (he == nil || *he == *oe) &&
		c.HealthCheck.Type == o.HealthCheck.Type && c.HealthCheck.Rate == o.HealthCheck.Rate &&
		c.HealthCheck.Direction == o.HealthCheck.Direction && c.HealthCheck.Target == o.HealthCheck.Target
}
