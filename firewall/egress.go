package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Egress policies
//
// [CompileEgress] turns firewall.egress into rules at the top of the
// postrouting NAT chain, ahead of the WAN masquerade. Each policy's
// expression must be conditions joined by and/or (at most maxAlts
// alternatives once expanded), so a policy is a few rules of that one
// chain and never a chain of its own. Conditions compile as the firewall
// rules' do: identity.email and identity.groups become interval sets of
// the matching users' source addresses ("eid4_<n>", "eid6_<n>", filled and
// updated in place by [Table.UpdateIdentities] with the rules' identity
// sets), larger "in {…}" sets become named constant sets ("e_s<n>"). So a
// change of who is in a group changes set elements, not rules, and the
// cost of 10,000 identities is one interval-set lookup per policy.
//
// The NAT chain sees the first packet of each connection only; conntrack
// keeps the chosen address for the rest of the flow, so established flows
// keep their egress when identities change and new flows take the new one.
//
// Each rule is "<alternative> meta nfproto <family of the address>
// oifname <interface> counter name eg<i> snat to <address>". A second
// kind of rule keeps the gateway's own packets from an egress address
// (upstream DNS sourced from it) from being masqueraded to the primary
// address: "oifname <interface> ip saddr <address> accept".

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
	counter string
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
		counter: fmt.Sprintf("%s%d", EgressCounterPrefix, i+1)}, nil
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

// natRules returns the rules for the top of the postrouting chain, and
// the counters they name. An address whose interface is unknown (no
// interface and no WAN) gets no rules: SNAT without an output interface
// would rewrite LAN-bound traffic too.
func (e *Egress) natRules(wan string) ([][]expr.Any, []string) {
	if e == nil {
		return nil, nil
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
	for _, p := range e.policies {
		a := e.addrs[p.egress]
		ifc := ifaceOf(a, wan)
		if ifc == "" {
			continue
		}
		ctrs = append(ctrs, p.counter)
		v4 := a.Address.Is4()
		fam := unix.NFPROTO_IPV6
		if v4 {
			fam = unix.NFPROTO_IPV4
		}
		for _, x := range p.alts {
			x, ok := combine(x, alt{nfproto: family(v4), l4proto: -1})
			if !ok {
				continue // a condition of the other family: never this address
			}
			r := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(ifc)},
			}
			r = append(r, x.lower()...)
			r = append(r,
				&expr.Objref{Type: objCounter, Name: p.counter},
				&expr.Immediate{Register: 1, Data: a.Address.AsSlice()},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(fam), RegAddrMin: 1, RegAddrMax: 1},
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
	return out, ctrs
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
	if e == nil {
		return EgressChoice{}, false
	}
	rec := rules.NewRecord(rules.FirewallSchema())
	if src.IsValid() {
		_ = rec.Set("ip.src", rules.IPValue(src.Unmap()))
	}
	if hasID {
		if email != "" {
			_ = rec.Set("identity.email", rules.StringValue(email))
		}
		_ = rec.Set("identity.groups", rules.StringsValue(groups...))
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
			if c, ok := e.For(p.Addr(), id.Email, id.Groups, true); ok {
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
// chain sees the first packet of a connection only).
func (t *Table) EgressCounts() (map[string]Counter, error) {
	cs, err := t.ReadCounts()
	return cs.Egress, err
}
