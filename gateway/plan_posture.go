package gateway

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
)

// QuarantineGroup is the group a quarantined device has in the firewall's
// identity sets, instead of its own groups and email: rules that allow
// by identity stop holding for it, and the quarantine rule catches it.
// The colon keeps it apart from group names a provider would send; a
// provider group of that name is dropped (withDeviceIdentities).
const QuarantineGroup = "edgegw:quarantined"

// QuarantineRuleID names the rule in front of the configured firewall
// rules that confines quarantined devices; its counter is the number of
// their packets dropped.
const QuarantineRuleID = "edgegw-posture-quarantine"

// quarantineExpression is what a quarantined device may not reach:
// anything but the gateway's WireGuard address on DNS (53) and the Access
// listener's port (posture reports, enrollment), and posture.quarantine_allow.
func quarantineExpression(cfg *config.Config, pol *posture.Policy) (string, error) {
	wg := cfg.Tunnels.WireGuard
	if wg == nil || cfg.Access == nil {
		return "", fmt.Errorf("posture needs tunnels.wireguard and an access: section")
	}
	_, port, err := net.SplitHostPort(cfg.Access.Listen)
	if err != nil {
		return "", fmt.Errorf("access.listen %q: %w", cfg.Access.Listen, err)
	}
	ports := []string{"53"}
	if port != "53" {
		ports = append(ports, port)
	}
	e := fmt.Sprintf(`identity.groups contains %q and not (ip.dst == %s and (udp.dstport == 53 or tcp.dstport in {%s}))`,
		QuarantineGroup, wg.Address.Addr(), strings.Join(ports, " "))
	if allow := pol.QuarantineAllow(); len(allow) > 0 {
		s := make([]string, len(allow))
		for i, p := range allow {
			s[i] = p.String()
		}
		e += fmt.Sprintf(" and not ip.dst in {%s}", strings.Join(s, " "))
	}
	return e, nil
}

// withQuarantineRule returns the firewall section with the quarantine
// rule first (fw may be nil: then it is the only rule). fw is not changed.
func withQuarantineRule(fw *firewall.Config, expr string) *firewall.Config {
	out := &firewall.Config{}
	if fw != nil {
		c := *fw
		out = &c
	}
	on := true
	out.Rules = append([]firewall.Rule{{
		ID:          QuarantineRuleID,
		Description: "posture: quarantined devices reach only the gateway's DNS and posture endpoint, and posture.quarantine_allow",
		Expression:  expr,
		Action:      "block",
		Enabled:     &on,
	}}, slices.Clone(out.Rules)...)
	return out
}

// deviceIdentity is the firewall's identity of an enrolled device: a
// quarantined one (with posture on) has only QuarantineGroup, and nobody
// else has that group.
func deviceIdentity(d identity.Device, quarantine bool) (email string, groups []string) {
	if quarantine && d.Quarantined {
		return "", []string{QuarantineGroup}
	}
	if !slices.Contains(d.Groups, QuarantineGroup) {
		return d.Email, d.Groups
	}
	return d.Email, slices.DeleteFunc(slices.Clone(d.Groups), func(g string) bool { return g == QuarantineGroup })
}
