// Package firewall owns edgegw's nftables table, `inet edgegw`. Everything
// edgegw does in netfilter (masquerade on the WAN, the Magic-Firewall-style
// rules, MSS clamping for tunnels, flow sampling into NFLOG) is compiled into one
// Program value first and then applied in a single netlink batch that
// replaces the whole table, so the kernel never sees a half-applied ruleset
// and a batch the kernel rejects leaves the previous table in place.
//
// # Rules
//
// [CompileRules] type-checks a [Config] (expressions in the language of
// package rules, against rules.FirewallSchema) and compiles it, purely, to
// a [Ruleset]; [Compile] places it in a [Program]; [Table.Apply] sends it.
// The rules run in the base chain "rules" at hook prerouting, priority raw
// (-300), before conntrack: a dropped packet never creates a conntrack
// entry. They see every packet the gateway receives, forwarded or local,
// except loopback traffic, which is exempt. Rules are evaluated in order,
// the first match wins, and a packet no rule matches is accepted:
//
//   - allow accepts the packet (no later rule of ours sees it);
//   - block drops it;
//   - rate_limit counts packets per source address in a meter (one per
//     family, up to 65,536 sources, each forgotten a minute after its last
//     packet) and drops those over the rate; packets within the rate are
//     accepted, as for allow. The bucket holds one interval's worth of
//     packets (rate 1000/second lets a burst of 1000 through). When the
//     meter is full, packets of sources it does not hold are dropped,
//     never accepted.
//
// Every rule has a named counter, read by [Table.Counters] and exported by
// [Collector]; counters restart from zero on every Apply.
//
// # Compilation
//
// A condition becomes one or more alternatives, each a conjunction of nft
// matches that carries the dependencies of the header it reads ("meta
// nfproto ipv4" before an IPv4 header field, "meta l4proto tcp" before a
// TCP port), so a condition on a field the packet lacks is false, as
// package rules defines. Small "in {…}" sets (up to four intervals) become
// one alternative per interval; larger ones become named constant sets,
// shared by the rules that use the same elements. Expressions made of and
// and or that expand to at most eight alternatives become that many rules
// in the base chain. Anything else (not, xor, bigger trees) is compiled to
// control flow in chains of its own; see compile.go. Negation never turns
// into a negated match, so "not tcp.dstport == 22" is true for UDP. From
// 32 base rules on, rules are grouped by transport protocol and TCP/UDP
// destination port with verdict maps, keeping their order, so a packet
// walks only the rules that can match it (dispatch.go).
//
// Lists ($name) become two named interval sets, l4_<name> and l6_<name>,
// which [Table.UpdateList] changes in place, element by element, without
// touching rules. Conditions on identity.email and identity.groups become
// sets of the source addresses of the users for whom the condition holds,
// filled from the snapshot given to [Table.UpdateIdentities]. Conditions on
// the geo fields (ip.src.country, ip.dst.country, ip.src.asnum, ip.dst.asnum)
// become sets of the networks of the GeoIP database for which the condition
// holds, filled from the snapshot given to [Table.UpdateGeo] and changed in
// place when the database changes (geo.go); a rule on a geo field whose
// database [Config.GeoIP] does not name is refused. ingress is the
// input interface name (iifname); "contains" on it is not supported. The
// aliases ingress == "wan" and "lan" stand for [Spec.WAN] and [Spec.LAN]
// (alias.go).
//
// # Anti-spoofing
//
// [Spec.Tunnels] names the source addresses each tunnel interface owns. A
// packet with such a source that arrived on another interface is dropped
// at the top of the rules chain, before any rule, identity set or flow
// sample sees it, and counted (antispoof.go). Identity sets hold only
// addresses the WireGuard interface owns, so an identity holds only for
// packets that came through its tunnel.
//
// # Egress
//
// [Spec.Egress] ([CompileEgress], egress.go) SNATs forwarded traffic to the
// egress address its first matching egress policy chooses, in the
// postrouting NAT chain ahead of the WAN masquerade, no chain per policy:
// a run of consecutive identity-only policies is one map lookup per
// output link and family (client address → egress address, an interval
// map filled like the rules' identity sets and updated in place), any
// other policy one rule per alternative in its place in the order. The
// gateway's own packets from an egress address keep it; other egress
// links masquerade what no policy chose. [Egress.Geofeed] is the RFC 8805
// feed of the egress prefixes.
//
// # Flow sampling
//
// With [Spec.Sampling] on, 1 in Rate packets takes a copy of the rules that
// logs every verdict to an NFLOG group with the prefix "ef/<n>/<a|b>": the
// position of the deciding rule (0: none) and whether the packet passed
// (sample.go). [Ruleset.ByPosition] maps n back to the rule and
// [Ruleset.ID] names the ruleset.
//
// Interval sets are given merged, non-overlapping intervals with exclusive
// end keys; values are in network byte order, as the payload expressions
// load them. Set elements are sent in chunks below the 64 KiB attribute
// limit, and batches go through the netlink socket with forced large
// buffers and a single acknowledgement (batch.go).
package firewall

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the one nftables table edgegw owns (family inet).
// Nothing else may write to it; a start after a crash deletes it.
const TableName = "edgegw"

// Spec is the desired state of the table.
type Spec struct {
	// WAN is the uplink; forwarded traffic leaving through it is
	// masqueraded to the uplink's address. Empty: no NAT. Rules name it
	// ingress == "wan".
	WAN string
	// WANAddress, when valid, is the IPv4 address forwarded traffic
	// leaving through WAN is translated to instead of the interface's
	// primary address (snat, not masquerade): the HA pair's virtual WAN
	// address, so connections keep their address when the other node
	// takes over with the synced conntrack entries. IPv6 is masqueraded.
	WANAddress netip.Addr
	// LAN are the office interfaces; rules name them ingress == "lan".
	LAN []string
	// Rules are the Magic-Firewall-style rules from [CompileRules]; nil:
	// no rules chain.
	Rules *Ruleset
	// Clamp lowers the TCP MSS of SYNs through tunnel interfaces.
	Clamp []Clamp
	// Sampling sends 1 in Sampling.Rate packets through a copy of the
	// rules that logs each verdict to NFLOG (see sample.go); with it on,
	// the rules chain exists even without Rules.
	Sampling Sampling
	// Tunnels are the tunnel interfaces and the source addresses only
	// they may carry: anything else arriving with such a source is
	// dropped and counted before any rule (antispoof.go). With tunnels,
	// the rules chain exists even without Rules.
	Tunnels []TunnelSources
	// IdentityInterface, when set, is the interface identities arrive
	// through (the WireGuard interface): identity sets then hold only the
	// addresses that Tunnels reserve to it alone, so identity.email and
	// identity.groups hold only for packets that came through it. An
	// identity's address outside those (a peer allowed 0.0.0.0/0, or a
	// prefix a GRE tunnel routes too) carries no identity. Empty: identity
	// sets hold every identity's addresses as given.
	IdentityInterface string
	// DenyForward drops every forwarded packet (a forward chain with
	// policy drop): the table of a gateway that must not forward at all,
	// such as the fallback, whatever the forwarding sysctls say.
	DenyForward bool
	// Egress, from [CompileEgress], SNATs forwarded traffic to the
	// address its first matching egress policy chooses, ahead of the WAN
	// masquerade (egress.go); nil: everything is masqueraded.
	Egress *Egress
}

// Chain is one chain of the compiled program: a base chain when Hook is
// set, else a regular chain entered by jump or goto.
type Chain struct {
	Name     string
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
	// Policy is a base chain's policy; nil: accept.
	Policy *nftables.ChainPolicy
	Rules  [][]expr.Any
}

// DenyForwardChain is the base chain of [Spec.DenyForward].
const DenyForwardChain = "deny_forward"

func ptr[T any](v T) *T { return &v }

// Program is a compiled Spec: the complete contents of the table. Apply
// creates its sets, counters and chains before any rule, so rules may
// refer to them in any order.
type Program struct {
	Chains   []Chain
	Sets     []Set
	Counters []string       // named counter objects
	Rules    []RuleInfo     // the firewall rules in order, with their counters
	Spoof    []SpoofCounter // the anti-spoofing counters, by owner

	// identityScope, when not nil, bounds the identity sets: the
	// addresses Spec.IdentityInterface alone owns, per family (index 1:
	// IPv6).
	identityScope *[2][]interval
	// egress is Spec.Egress, whose counters [Table.EgressCounts] reads.
	egress *Egress
}

// RulesChain is the base chain of the firewall rules: hooked at
// prerouting before conntrack (priority raw, -300), so a dropped packet
// never creates a conntrack entry.
const RulesChain = "rules"

// Compile turns a Spec into a Program. It is pure, so tests check it without
// a kernel.
func Compile(s Spec) *Program {
	p := &Program{identityScope: s.identityScope()}
	spoofBase, spoofChains, spoofSets, spoofCtrs := s.antispoof()
	if rs := s.Rules; rs != nil || s.Sampling.Rate > 0 || len(spoofBase) > 0 {
		if rs == nil {
			rs = &Ruleset{}
		}
		base := Chain{
			Name:     RulesChain,
			Type:     nftables.ChainTypeFilter,
			Hook:     nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityRaw,
		}
		// Loopback traffic is the gateway talking to itself: exempt.
		base.Rules = append(base.Rules, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
			verdict(expr.VerdictAccept, ""),
		})
		// Forged tunnel sources go first: no rule, identity set or
		// flow sample may see them.
		base.Rules = append(base.Rules, spoofBase...)
		for _, c := range spoofCtrs {
			p.Counters = append(p.Counters, c.Counter)
		}
		p.Spoof = spoofCtrs
		if s.Sampling.Rate > 0 {
			base.Rules = append(base.Rules, sampleEntry(s.Sampling.Rate))
		}
		base.Rules = append(base.Rules, rs.base...)
		p.Chains = append(p.Chains, base)
		p.Chains = append(p.Chains, rs.chains...)
		p.Chains = append(p.Chains, spoofChains...)
		p.Sets = append(p.Sets, spoofSets...)
		var sampledMaps []Set
		if s.Sampling.Rate > 0 {
			var chains []Chain
			chains, sampledMaps = sampleRules(rs, s.Sampling)
			p.Chains = append(p.Chains, chains...)
		}
		for _, name := range slices.Sorted(maps.Keys(rs.lists)) {
			v4, v6 := prefixIntervals(rs.lists[name])
			p.Sets = append(p.Sets,
				Set{Name: listSetName(name, true), Key: nftables.TypeIPAddr, Interval: true, List: name, Elements: intervalElements(v4)},
				Set{Name: listSetName(name, false), Key: nftables.TypeIP6Addr, Interval: true, List: name, V6: true, Elements: intervalElements(v6)})
		}
		p.Sets = append(p.Sets, rs.sets...)
		p.Sets = append(p.Sets, sampledMaps...)
		for _, a := range rs.aliases {
			p.Sets = append(p.Sets, s.aliasSet(a))
		}
		for _, r := range rs.rules {
			p.Counters = append(p.Counters, r.Counter)
			if r.Action == "rate_limit" {
				p.Counters = append(p.Counters, rateDropCounter(r.Counter))
			}
		}
		p.Rules = slices.Clone(rs.rules)
	}
	post := Chain{
		Name:     "postrouting",
		Type:     nftables.ChainTypeNAT,
		Hook:     nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
	p.egress = s.Egress
	egressRules, egressCtrs, egressSets := s.Egress.natRules(s.WAN)
	post.Rules = append(post.Rules, egressRules...)
	p.Counters = append(p.Counters, egressCtrs...)
	p.Sets = append(p.Sets, egressSets...)
	if s.WAN != "" && s.WANAddress.Is4() {
		// oifname "wan" iifname "" accept: the node's own packets keep
		// their source. A standby's connections (Logpush, DNS, the
		// identity provider) would otherwise leave from the virtual
		// address, whose answers go to the active node; and what the
		// active node sends from the virtual address itself (WireGuard,
		// GRE, IKE) must not be masqueraded to its own.
		post.Rules = append(post.Rules, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.WAN)},
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("")},
			&expr.Counter{},
			verdict(expr.VerdictAccept, ""),
		})
		// oifname "wan" meta nfproto ipv4 snat ip to <address>
		post.Rules = append(post.Rules, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.WAN)},
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Counter{},
			&expr.Immediate{Register: 1, Data: s.WANAddress.AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1},
		})
	}
	if s.WAN != "" {
		// oifname "wan" masquerade
		post.Rules = append(post.Rules, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.WAN)},
			&expr.Counter{},
			&expr.Masq{},
		})
	}
	p.Chains = append(p.Chains, post)
	if len(s.Clamp) > 0 {
		p.Chains = append(p.Chains, clampChain(s.Clamp))
	}
	if s.DenyForward {
		p.Chains = append(p.Chains, Chain{
			Name:     DenyForwardChain,
			Type:     nftables.ChainTypeFilter,
			Hook:     nftables.ChainHookForward,
			Priority: nftables.ChainPriorityFilter,
			Policy:   ptr(nftables.ChainPolicyDrop),
			Rules:    [][]expr.Any{{&expr.Counter{}, verdict(expr.VerdictDrop, "")}},
		})
	}
	return p
}

// ifname is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
