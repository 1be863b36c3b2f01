package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Egress policies
//
// [CompileEgress] turns firewall.egress into rules at the top of the
// postrouting NAT chain, ahead of the WAN masquerade. Each policy's
// expression must be conditions joined by and/or (at most maxAlts
// alternatives once expanded), so a policy is a few rules of that one
// chain and never a chain of its own.
//
// A policy whose every condition is on the identity (identity.email,
// identity.groups, device.posture.*) is identity-only, and consecutive identity-only
// policies form a run. A run compiles to one rule per output link and
// family, whatever its number of policies and users:
//
//	oifname "<link>" meta nfproto ipv4 snat ip to ip saddr map @egm4_<run>_<link>
//
// an interval map from each identity address to the address of the first
// policy of the run, on that link and family, that the identity matches
// (evaluated as [Egress.For] does, so the order of first match is the
// configuration's). A client none of them matches misses the map and
// falls through to the next rule, as it would past the run's policies
// one by one. So a client of the last of 8 policies costs one map lookup
// on each new connection, not 8 set lookups. [Table.UpdateIdentities]
// changes the maps' elements in place, in one batch with the identity
// sets. Each map element carries a counter; the connections of a policy
// are the sum over the elements it owns, plus those of elements a change
// of identities removed ([Table.EgressCounts]).
//
// Other policies (a condition on the destination, ports, protocol or
// source prefixes) compile as the firewall rules do, in their place in
// the order: identity.email and identity.groups become interval sets of
// the matching users' source addresses ("eid4_<n>", "eid6_<n>", updated
// in place with the rules' identity sets), larger "in {…}" sets become
// named constant sets ("e_s<n>"), and each rule is "<alternative> meta
// nfproto <family of the address> oifname <interface> counter name
// eg<i> snat to <address>".
//
// The NAT chain sees the first packet of each connection only; conntrack
// keeps the chosen address for the rest of the flow, so established flows
// keep their egress when identities change and new flows take the new one.
//
// A second kind of rule keeps the gateway's own packets from an egress
// address (upstream DNS sourced from it) from being masqueraded to the
// primary address: "oifname <interface> ip saddr <address> accept".

// Egress is a compiled [EgressConfig]: what [Spec.Egress] places in the
// table, and the pure evaluator Gateway DNS and the admin API use to tell
// which address a client leaves from. It is immutable.
type Egress struct {
	addrs    []EgressAddress
	policies []egressPolicy
	sets     []Set
}

type egressPolicy struct {
	id      string
	egress  int // index into addrs
	prog    *rules.Program
	alts    []alt
	counter string // for a policy compiled to rules; identity-only ones count per map element
	// identityOnly: every condition is on the identity, so the policy
	// belongs to a run compiled to identity maps.
	identityOnly bool
}

// EgressCounterPrefix starts the names of the policies' counters:
// "eg<position>" for the policy at 1-based position position.
const EgressCounterPrefix = "eg"

// CompileEgress type-checks and compiles c.Egress against
// rules.FirewallSchema and c's lists; nil without an egress section. It
// is pure.
func CompileEgress(c *Config) (*Egress, error) {
	if c == nil || c.Egress == nil {
		return nil, nil
	}
	ec := c.Egress.Clone()
	ec.SetDefaults()
	var errs []error
	ec.validate(c, func(field, msg string) { errs = append(errs, fmt.Errorf("firewall.%s: %s", field, msg)) })
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	e := &Egress{addrs: ec.Addresses}
	comp := newCompiler()
	resolve := c.listResolver()
	for i, p := range ec.Policies {
		pol, err := compileEgressPolicy(comp, i, p, c, resolve)
		if err != nil {
			return nil, fmt.Errorf("firewall.egress.policies[%d]: %w", i, err)
		}
		e.policies = append(e.policies, pol)
	}
	// The compiler names its sets as the rules' compiler does; rename
	// them so both live in one table.
	rename := map[string]string{}
	for _, s := range comp.sets {
		rename[s.Name] = "e_" + s.Name
		s.Name = rename[s.Name]
		e.sets = append(e.sets, s)
	}
	for _, x := range comp.predList {
		k := comp.preds[x.String()]
		for _, v6 := range []bool{false, true} {
			name := identitySetName(k, !v6)
			rename[name] = "e" + name
			e.sets = append(e.sets, Set{
				Name: "e" + name, Key: addrKey(v6), Interval: true, V6: v6,
				Identity: &rules.Program{Expr: x, Source: x.String(), Schema: rules.FirewallSchema()},
			})
		}
	}
	for i := range e.policies {
		for j := range e.policies[i].alts {
			ms := e.policies[i].alts[j].ms
			for k := range ms {
				if n, ok := rename[ms[k].set]; ok {
					ms[k].set = n
				}
			}
		}
	}
	return e, nil
}

// compileEgressPolicy compiles policy i with comp, whose sets it adds to.
func compileEgressPolicy(comp *compiler, i int, p EgressPolicy, fw *Config, resolve rules.ListResolver) (egressPolicy, error) {
	prog, err := rules.Compile(p.Expression, rules.FirewallSchema(), resolve)
	if err != nil {
		return egressPolicy{}, err
	}
	if usesAlias(prog.Expr) {
		return egressPolicy{}, errors.New(`the ingress aliases "wan" and "lan" are for firewall rules; name the interface`)
	}
	rc := &ruleCompiler{c: comp, idx: i}
	alts, ok, err := rc.dnf(prog.Expr)
	if err != nil {
		return egressPolicy{}, rc.withSource(err, prog)
	}
	if !ok {
		return egressPolicy{}, fmt.Errorf("an egress policy is conditions joined by and/or (at most %d alternatives once expanded); "+
			"not and xor are for firewall rules", maxAlts)
	}
	egress := -1
	if fw.Egress != nil {
		for j, a := range fw.Egress.Addresses {
			if a.Name == p.Egress {
				egress = j
			}
		}
	}
	return egressPolicy{id: p.ID, egress: egress, prog: prog, alts: alts,
		counter: fmt.Sprintf("%s%d", EgressCounterPrefix, i+1), identityOnly: identityOnly(alts)}, nil
}

// identityOnly reports whether every alternative is made of identity set
// lookups alone (rc.identity's "ip.src @id4_<n>"), so the policy holds for
// an address exactly when its identity's email and groups satisfy it.
func identityOnly(alts []alt) bool {
	for _, a := range alts {
		if len(a.ms) == 0 || a.l4proto >= 0 {
			return false
		}
		for _, m := range a.ms {
			if m.inv || !(strings.HasPrefix(m.set, "id4_") || strings.HasPrefix(m.set, "id6_")) {
				return false
			}
		}
	}
	return len(alts) > 0
}

// Addresses returns the egress addresses, with their default prefixes.
func (e *Egress) Addresses() []EgressAddress {
	if e == nil {
		return nil
	}
	return append([]EgressAddress(nil), e.addrs...)
}

// ifaceOf is the interface egress address a leaves through; wan stands
// in for an empty one. Empty: unknown.
func ifaceOf(a EgressAddress, wan string) string {
	if a.Interface != "" {
		return a.Interface
	}
	return wan
}

// natRules returns the rules for the top of the postrouting chain, the
// counters they name and the sets they look up (the identity maps of the
// runs, and the sets of the policies compiled to rules). An address whose
// interface is unknown (no interface and no WAN) gets no rules: SNAT
// without an output interface would rewrite LAN-bound traffic too.
func (e *Egress) natRules(wan string) ([][]expr.Any, []string, []Set) {
	if e == nil {
		return nil, nil, nil
	}
	var out [][]expr.Any
	var ctrs []string
	for _, a := range e.addrs {
		ifc := ifaceOf(a, wan)
		if ifc == "" {
			continue
		}
		v4 := a.Address.Is4()
		out = append(out, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(ifc)},
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family(v4)}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader,
				Offset: addrLoad("ip.src", v4).off, Len: addrLoad("ip.src", v4).len},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.Address.AsSlice()},
			verdict(expr.VerdictAccept, ""),
		})
	}
	used := map[string]bool{} // sets the rules look up
	var maps []Set
	run := 0
	for i := 0; i < len(e.policies); {
		if e.policies[i].identityOnly {
			j := i + 1
			for j < len(e.policies) && e.policies[j].identityOnly {
				j++
			}
			rs, ms := e.runRules(run, e.policies[i:j], wan)
			out, maps = append(out, rs...), append(maps, ms...)
			run++
			i = j
			continue
		}
		p := e.policies[i]
		i++
		a := e.addrs[p.egress]
		ifc := ifaceOf(a, wan)
		if ifc == "" {
			continue
		}
		ctrs = append(ctrs, p.counter)
		v4 := a.Address.Is4()
		for _, x := range p.alts {
			x, ok := combine(x, alt{nfproto: family(v4), l4proto: -1})
			if !ok {
				continue // a condition of the other family: never this address
			}
			for _, m := range x.ms {
				used[m.set] = true
			}
			r := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(ifc)},
			}
			r = append(r, x.lower()...)
			r = append(r,
				&expr.Objref{Type: objCounter, Name: p.counter},
				&expr.Immediate{Register: 1, Data: a.Address.AsSlice()},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(natFamily(v4)), RegAddrMin: 1, RegAddrMax: 1},
			)
			out = append(out, r)
		}
	}
	// Other links masquerade what no policy chose, as the WAN does:
	// nothing leaves them with an inside address.
	seen := map[string]bool{wan: true}
	for _, a := range e.addrs {
		if ifc := ifaceOf(a, wan); !seen[ifc] {
			seen[ifc] = true
			out = append(out, []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(ifc)},
				&expr.Counter{},
				&expr.Masq{},
			})
		}
	}
	// Only the sets some rule looks up: an identity set of policies that
	// went into maps would be 10,000 elements kept up to date for nothing.
	var sets []Set
	for _, s := range e.sets {
		if used[s.Name] {
			sets = append(sets, s)
		}
	}
	return out, ctrs, append(sets, maps...)
}

func natFamily(v4 bool) int {
	if v4 {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

// runRules compiles run number run, the identity-only policies pols, to
// one rule and one identity map per output link and family, in the order
// the links and families first appear in the run.
func (e *Egress) runRules(run int, pols []egressPolicy, wan string) ([][]expr.Any, []Set) {
	type key struct {
		link string
		v6   bool
	}
	var order []key
	byKey := map[key]*egressMap{}
	for _, p := range pols {
		a := e.addrs[p.egress]
		ifc := ifaceOf(a, wan)
		if ifc == "" {
			continue
		}
		k := key{ifc, !a.Address.Is4()}
		if byKey[k] == nil {
			order = append(order, k)
			byKey[k] = &egressMap{}
		}
		m := byKey[k]
		m.policies = append(m.policies, p.id)
		m.progs = append(m.progs, p.prog)
		m.addrs = append(m.addrs, a.Address)
	}
	var rs [][]expr.Any
	var sets []Set
	for _, k := range order {
		v4 := !k.v6
		fam := byte(4)
		if k.v6 {
			fam = 6
		}
		name := fmt.Sprintf("egm%d_%d_%s", fam, run, k.link)
		ld := addrLoad("ip.src", v4)
		rs = append(rs, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(k.link)},
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family(v4)}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ld.off, Len: ld.len},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: name},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(natFamily(v4)), RegAddrMin: 1, RegAddrMax: 1},
		})
		sets = append(sets, Set{Name: name, Key: addrKey(k.v6), Interval: true, V6: k.v6, egressMap: byKey[k]})
	}
	return rs, sets
}

// egressMap is what an identity map holds: for a run of identity-only
// policies, those whose address is on the map's link and family, in
// order. Table.Apply and Table.UpdateIdentities fill it.
type egressMap struct {
	policies []string // the policies' ids
	progs    []*rules.Program
	addrs    []netip.Addr
}

// mapElem is one element of an identity map: an interval's start, which
// maps to an egress address and is owned by a policy (whose connections
// its counter counts), or an interval's end.
type mapElem struct {
	key    []byte
	end    bool
	val    []byte // the egress address; nil on an end
	policy string // the owning policy's id; "" on an end
}

// id is the element's identity in the kernel's set: its key and whether
// it ends an interval (an end and the next start share a key when two
// intervals touch).
func (m mapElem) id() string {
	if m.end {
		return "e" + string(m.key)
	}
	return "s" + string(m.key)
}

// elements returns the contents of identity map m of family v6 for ids,
// within scope (nil: every address): each identity address maps to the
// address of the first policy the identity satisfies, as [Egress.For]
// evaluates them. An address of several identities goes to the first
// policy any of them satisfies.
func (m *egressMap) elements(v6 bool, ids []Identity, scope []interval, scoped bool) []mapElem {
	rec := rules.NewRecord(rules.FirewallSchema())
	type owned struct {
		iv  interval
		pol int
	}
	var all []owned
	var claimed []interval
	for i, prog := range m.progs {
		var ps []netip.Prefix
		for _, id := range ids {
			rec.Reset()
			id.fill(rec)
			if prog.Eval(rec) {
				ps = append(ps, id.Addrs...)
			}
		}
		v4s, v6s := prefixIntervals(ps)
		rs := v4s
		if v6 {
			rs = v6s
		}
		if scoped {
			rs = intersectIntervals(rs, scope)
		}
		rs = subtractIntervals(rs, claimed)
		for _, r := range rs {
			all = append(all, owned{r, i})
		}
		claimed = mergeIntervals(append(claimed, rs...))
	}
	slices.SortFunc(all, func(a, b owned) int { return bytes.Compare(a.iv.lo, b.iv.lo) })
	out := make([]mapElem, 0, 2*len(all))
	for _, o := range all {
		out = append(out, mapElem{key: o.iv.lo, val: m.addrs[o.pol].AsSlice(), policy: m.policies[o.pol]})
		if end, ok := next(o.iv.hi); ok {
			out = append(out, mapElem{key: end, end: true})
		}
	}
	return out
}

// subtractIntervals returns the parts of a that are not in b; both are
// sorted and merged, as mergeIntervals returns them, and so is the result.
func subtractIntervals(a, b []interval) []interval {
	var out []interval
	j := 0
	for _, r := range a {
		for j < len(b) && bytes.Compare(b[j].hi, r.lo) < 0 {
			j++
		}
		lo, whole := r.lo, true
		for k := j; k < len(b) && bytes.Compare(b[k].lo, r.hi) <= 0; k++ {
			if bytes.Compare(b[k].lo, lo) > 0 {
				out = append(out, interval{lo, prev(b[k].lo)})
			}
			nx, ok := next(b[k].hi)
			if !ok || bytes.Compare(nx, r.hi) > 0 {
				whole = false
				break
			}
			lo = nx
		}
		if whole {
			out = append(out, interval{lo, r.hi})
		}
	}
	return out
}

// nftElements encodes identity-map elements for the kernel.
func nftElements(es []mapElem) []nftables.SetElement {
	out := make([]nftables.SetElement, len(es))
	for i, e := range es {
		out[i] = nftables.SetElement{Key: e.key, Val: e.val, IntervalEnd: e.end}
	}
	return out
}

// EgressChoice is the address a client leaves from and the policy that
// chose it.
type EgressChoice struct {
	Address EgressAddress
	Policy  string // the policy's id
}

// For evaluates the policies in order, with the pure evaluator, for
// traffic from src by the user email in groups (hasID false: no
// identity), and returns the first match among the policies whose
// address is of src's family. Conditions on the destination, ports or
// protocol are false here (they are absent): this is the egress of
// traffic about which only the sender is known, which is what a DNS query
// is. False: no policy matches, the traffic is masqueraded.
func (e *Egress) For(src netip.Addr, email string, groups []string, hasID bool) (EgressChoice, bool) {
	return e.ForIdentity(src, Identity{Email: email, Groups: groups}, hasID)
}

// ForIdentity is [Egress.For] for the identity id, its device's posture
// (device.posture.*) included, as the identity maps in the kernel see it.
// id.Addrs is not used.
func (e *Egress) ForIdentity(src netip.Addr, id Identity, hasID bool) (EgressChoice, bool) {
	if e == nil {
		return EgressChoice{}, false
	}
	rec := rules.NewRecord(rules.FirewallSchema())
	if src.IsValid() {
		_ = rec.Set("ip.src", rules.IPValue(src.Unmap()))
	}
	if hasID {
		id.fill(rec)
	}
	for _, p := range e.policies {
		a := e.addrs[p.egress]
		if src.IsValid() && a.Address.Is4() != src.Unmap().Is4() {
			continue
		}
		if p.prog.Eval(rec) {
			return EgressChoice{Address: a, Policy: p.id}, true
		}
	}
	return EgressChoice{}, false
}

// EgressAssignment is who leaves from where: one identity and the
// address its traffic without a destination condition leaves from.
type EgressAssignment struct {
	Email   string
	Addr    netip.Prefix // one of the identity's source addresses
	Egress  string       // the egress address's name; "" masqueraded
	Address netip.Addr   // the egress address; invalid when masqueraded
	Country string
	Policy  string
}

// Assignments evaluates [Egress.For] for each address of each identity:
// what the admin API shows as "which identity leaves from where".
func (e *Egress) Assignments(ids []Identity) []EgressAssignment {
	var out []EgressAssignment
	for _, id := range ids {
		for _, p := range id.Addrs {
			a := EgressAssignment{Email: id.Email, Addr: p}
			if c, ok := e.ForIdentity(p.Addr(), id, true); ok {
				a.Egress, a.Address, a.Country, a.Policy = c.Address.Name, c.Address.Address, c.Address.Country, c.Policy
			}
			out = append(out, a)
		}
	}
	return out
}

// Geofeed returns the RFC 8805 geofeed of the egress addresses:
// "ip_prefix,alpha2code,region,city,postal_code" lines, one per distinct
// prefix, in configuration order, after a comment naming the format.
func (e *Egress) Geofeed() []byte {
	var b strings.Builder
	b.WriteString("# RFC 8805 geofeed of edgegw's egress addresses: ip_prefix,alpha2code,region,city,postal_code\n")
	if e == nil {
		return []byte(b.String())
	}
	seen := map[netip.Prefix]bool{}
	for _, a := range e.addrs {
		p := a.Prefix
		if !p.IsValid() {
			p = netip.PrefixFrom(a.Address, a.Address.BitLen())
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		fmt.Fprintf(&b, "%s,%s,%s,%s,\n", p, a.Country, a.Region, a.City)
	}
	return []byte(b.String())
}

// EgressCounts reads the egress policies' counters, by policy id: the
// connections each policy gave its address since the last Apply (the NAT
// chain sees the first packet of a connection only). A policy compiled
// to rules counts with its named counter; an identity-only one is the sum
// of the counters of the identity-map elements it owns, plus those of
// the elements identity updates removed since (read just before each
// update's batch: a connection in between is not counted). Every policy
// of a map is present, at zero until used.
func (t *Table) EgressCounts() (map[string]Counter, error) {
	cs, err := t.ReadCounts()
	return cs.Egress, err
}
