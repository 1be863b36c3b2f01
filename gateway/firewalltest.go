package gateway

import (
	"fmt"
	"net"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

// TestPacket evaluates a packet described in the words of
// `edgegw firewall test` against a prepared plan's rules: the one
// evaluator the CLI and the console's "test a packet" form share. An
// error wrapping admin.ErrBadPacket is the description's fault.
func TestPacket(cfg *config.Config, spec *firewall.Spec, desc string) (admin.FirewallTestResult, error) {
	pkt, err := firewall.ParsePacket(desc)
	if err != nil {
		return admin.FirewallTestResult{}, fmt.Errorf("%w %w", admin.ErrBadPacket, err)
	}
	CompletePacket(cfg, pkt)
	rule, ok := spec.Match(pkt)
	// Show the flags byte only; the flag fields follow from it.
	for _, f := range []string{"fin", "syn", "reset", "push", "ack", "urg", "ecn", "cwr"} {
		pkt.Clear("tcp.flags." + f)
	}
	res := admin.FirewallTestResult{Packet: pkt.String(), Verdict: "allow"}
	if !ok {
		return res, nil
	}
	res.Rule = &admin.FirewallTestRule{ID: rule.ID, Description: rule.Description, Position: rule.Position, Action: rule.Action}
	res.Verdict = rule.Action
	if rule.Action == "rate_limit" {
		res.Rule.Rate = rule.Rate.String()
	}
	return res, nil
}

// firewallTest serves the console's "test a packet" against the running
// plan.
func (g *Gateway) firewallTest(desc string) (admin.FirewallTestResult, error) {
	g.mu.Lock()
	pl := g.plan
	g.mu.Unlock()
	return TestPacket(pl.Config, &pl.Firewall, desc)
}

// CompletePacket fills in what the gateway knows about a packet: the
// interface an ingress alias stands for, and the identity behind the
// source address (static WireGuard peers with email or groups).
func CompletePacket(cfg *config.Config, pkt *rules.Record) {
	schema := rules.FirewallSchema()
	get := func(name string) (rules.Value, bool) {
		f, _ := schema.Field(name)
		return pkt.Get(f)
	}
	if in, ok := get("ingress"); ok {
		switch {
		case in.Str == firewall.AliasWAN && cfg.Interfaces.WAN != "":
			_ = pkt.Set("ingress", rules.StringValue(cfg.Interfaces.WAN))
		case in.Str == firewall.AliasLAN && len(cfg.Interfaces.LAN) > 0:
			_ = pkt.Set("ingress", rules.StringValue(cfg.Interfaces.LAN[0]))
		}
	}
	src, ok := get("ip.src")
	_, hasEmail := get("identity.email")
	_, hasGroups := get("identity.groups")
	if !ok || hasEmail || hasGroups || cfg.Tunnels.WireGuard == nil {
		return
	}
	var ids []firewall.Identity
	for _, p := range cfg.Tunnels.WireGuard.Peers {
		if p.Email != "" || len(p.Groups) > 0 {
			ids = append(ids, firewall.Identity{Email: p.Email, Groups: p.Groups, Addrs: p.AllowedIPs})
		}
	}
	if id, ok := firewall.IdentityOf(ids, src.IP); ok {
		if id.Email != "" {
			_ = pkt.Set("identity.email", rules.StringValue(id.Email))
		}
		_ = pkt.Set("identity.groups", rules.StringsValue(id.Groups...))
	}
}

// enrollPort is the port of the Access listener that serves /enroll, for
// the console's enrollment link; false when enrollment is off.
func (g *Gateway) enrollPort() (string, bool) {
	g.mu.Lock()
	cfg := g.plan.Config
	g.mu.Unlock()
	wg := cfg.Tunnels.WireGuard
	if wg == nil || wg.Enrollment == nil || !wg.Enrollment.Enabled || cfg.Access == nil {
		return "", false
	}
	if cfg.Access.Listen == "" {
		return "443", true // access.listen's default
	}
	_, port, err := net.SplitHostPort(cfg.Access.Listen)
	if err != nil {
		return "", false
	}
	return port, true
}

// enrollURL is tunnels.wireguard.enrollment.url; "" when unset or
// enrollment is off.
func (g *Gateway) enrollURL() string {
	g.mu.Lock()
	cfg := g.plan.Config
	g.mu.Unlock()
	if wg := cfg.Tunnels.WireGuard; wg != nil && wg.Enrollment != nil {
		return wg.Enrollment.URL
	}
	return ""
}
