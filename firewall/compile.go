package firewall

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Compilation of rules
//
// Rules become nft rules in the base chain "rules" (filter, hook
// prerouting, priority -300, policy accept), in order. A rule whose
// expression is a small disjunction of conjunctions (at most maxAlts after
// expanding and/or) becomes one nft rule per alternative, each ending in
// the rule's action. Any other rule (not, xor, larger and/or trees) gets its
// own chain "r<i>", entered with jump, in which the expression is compiled
// to control flow: every sub-expression is emitted with two continuations,
// T and F, each a verdict (the action, return, or goto to a further
// chain). "not X" swaps T and F, "X and Y" sends X's T to a chain that
// tests Y, "X or Y" sends X's F to a chain that tests Y, and xor tests Y in
// two chains. Conditions are never negated inside a match, so a condition
// on an absent field is false and "not" negates it exactly as package rules
// defines. Only the first jump pushes a return address (goto does not), so
// the jump stack never grows past one.

// maxAlts bounds the alternatives a rule may expand to before it is
// compiled to chains instead.
const maxAlts = 8

// Counters are named objects so that every nft rule of one edgegw rule
// shares one counter; nftables.Objref type 1 is a counter.
const objCounter = 1

// Rate-limit meters forget a source this long after its last packet.
const meterTimeout = time.Minute

// meterSize bounds the sources a rate-limit meter tracks.
const meterSize = 65536

// Set is a named set of the table.
type Set struct {
	Name     string
	Key      nftables.SetDatatype
	Interval bool
	Elements []nftables.SetElement

	// Dynamic sets are rate-limit meters filled by the packet path.
	Dynamic bool
	// Size bounds a Dynamic set; 0 is meterSize.
	Size uint32
	// Map sets are verdict maps; their elements carry VerdictData.
	Map bool

	// List is the config list the set holds (one set per family);
	// Table.UpdateList changes its elements in place.
	List string
	// Identity, when set, is the condition on identity.email,
	// identity.groups or device.posture.* whose users' source addresses
	// the set holds;
	// Table.UpdateIdentities and Table.Apply fill it.
	Identity *rules.Program
	// Geo, when set, is the condition on a geo field (ip.src.country …
	// ip.dst.asnum) whose networks the set holds; Table.UpdateGeo and
	// Table.Apply fill it from the GeoIP snapshot (geo.go).
	Geo *rules.Program
	// V6 tells which family a List, Identity or Geo set is for.
	V6 bool
	// Alias, when set, is the ingress alias ("wan" or "lan") whose
	// interface names the set holds, filled by Compile from the Spec.
	Alias string
	// egressMap, when set, makes the set an identity map of egress
	// policies (egress.go): client address → egress address, with a
	// counter per element; Table.UpdateIdentities and Table.Apply fill it.
	egressMap *egressMap
}

// RuleInfo describes one compiled rule.
type RuleInfo struct {
	ID          string
	Description string
	Action      string // block, allow or rate_limit
	Rate        Rate   // rate_limit only
	Counter     string // name of its counter object
	// Position is the rule's 1-based place in Config.Rules, disabled rules
	// included: the n of the flow-sampling log prefix "ef/<n>/<v>".
	Position int
}

// Ruleset is a firewall [Config] compiled to nftables: the fragment that
// [Compile] places into the table. It is immutable.
type Ruleset struct {
	rules   []RuleInfo
	progs   []*rules.Program
	aliased []bool         // progs[i] names an ingress alias
	aliases []string       // the aliases the rules use, sorted
	owners  map[string]int // counter or chain name → Position of its rule
	lists   map[string][]netip.Prefix
	base    [][]expr.Any
	chains  []Chain
	sets    []Set
}

// RuleError is a rule that does not compile.
type RuleError struct {
	Index int    // position in Config.Rules
	ID    string // the rule's id
	Err   error  // a rules.ErrorList, or a construct nftables cannot express
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("rule %q (rules[%d]): %v", e.ID, e.Index, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// CompileRules type-checks every enabled rule of c against
// rules.FirewallSchema and compiles it to nftables. It is pure. The error
// joins one *RuleError per bad rule (with line, column and excerpt) and
// list errors; nothing is returned unless everything compiles.
func CompileRules(c *Config) (*Ruleset, error) {
	var errs []error
	rs := &Ruleset{lists: make(map[string][]netip.Prefix, len(c.Lists))}
	for _, name := range slices.Sorted(maps.Keys(c.Lists)) {
		rs.lists[name] = []netip.Prefix{}
		for _, s := range c.Lists[name] {
			p, err := ParseListItem(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("list %s: %w", name, err))
				continue
			}
			rs.lists[name] = append(rs.lists[name], p)
		}
	}
	resolve := c.listResolver()
	comp := newCompiler()
	comp.geoip = c.GeoIP
	for i, r := range c.Rules {
		if r.Enabled != nil && !*r.Enabled {
			continue
		}
		prog, err := rules.Compile(r.Expression, rules.FirewallSchema(), resolve)
		if err != nil {
			errs = append(errs, &RuleError{Index: i, ID: r.ID, Err: c.suggestLists(err)})
			continue
		}
		info := RuleInfo{ID: r.ID, Description: r.Description, Action: r.Action,
			Counter: fmt.Sprintf("r%d", i), Position: i + 1}
		if r.Action == "rate_limit" {
			info.Rate = r.Rate
		}
		if err := comp.rule(i, info, r.Rate, prog); err != nil {
			errs = append(errs, &RuleError{Index: i, ID: r.ID, Err: err})
			continue
		}
		rs.rules = append(rs.rules, info)
		rs.progs = append(rs.progs, prog)
		rs.aliased = append(rs.aliased, usesAlias(prog.Expr))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	rs.base, rs.chains, rs.sets = comp.dispatch()
	rs.aliases = comp.aliases
	rs.owners = comp.owners
	for _, r := range rs.rules {
		rs.owners[r.Counter] = r.Position
		if r.Action == "rate_limit" {
			rs.owners[rateDropCounter(r.Counter)] = r.Position
		}
	}
	for _, e := range comp.predList {
		for _, v6 := range []bool{false, true} {
			rs.sets = append(rs.sets, Set{
				Name: identitySetName(comp.preds[e.String()], !v6), Key: addrKey(v6), Interval: true,
				Identity: &rules.Program{Expr: e, Source: e.String(), Schema: rules.FirewallSchema()}, V6: v6,
			})
		}
	}
	rs.sets = append(rs.sets, comp.geoSets()...)
	return rs, nil
}

// listResolver resolves $name to the config's lists for type checking;
// each list is built once.
func (c *Config) listResolver() rules.ListResolver {
	built := map[string]rules.List{}
	return func(name string) (rules.List, bool) {
		if l, ok := built[name]; ok {
			return l, true
		}
		items, ok := c.Lists[name]
		if !ok {
			return nil, false
		}
		l, err := rules.NewList(rules.TypeIP, items...)
		if err != nil {
			l, _ = rules.NewList(rules.TypeIP) // reported by Validate
		}
		built[name] = l
		return l, true
	}
}

// Rules returns the compiled rules in order.
func (r *Ruleset) Rules() []RuleInfo { return slices.Clone(r.rules) }

// List returns the parsed entries of list name (shared: do not modify), so
// that an update in place uses what was compiled rather than parsing the
// configuration again.
func (r *Ruleset) List(name string) ([]netip.Prefix, bool) {
	l, ok := r.lists[name]
	return l, ok
}

// Match evaluates the rules in order on one packet with the pure
// evaluator and returns the first rule that matches; false means the
// default, allow. Lists are those of the Config. The ingress aliases stand
// only for interfaces literally named "wan" and "lan"; [Spec.Match] maps
// them to the Spec's interfaces.
func (r *Ruleset) Match(v rules.Values) (RuleInfo, bool) {
	return (&Spec{Rules: r}).Match(v)
}

// Match evaluates s.Rules on one packet with the pure evaluator, with the
// ingress aliases "wan" and "lan" standing for s.WAN and s.LAN as in the
// kernel, and returns the first rule that matches; false means the
// default, allow (also when s has no rules).
func (s *Spec) Match(v rules.Values) (RuleInfo, bool) {
	r := s.Rules
	if r == nil {
		return RuleInfo{}, false
	}
	for i, p := range r.progs {
		if r.aliased[i] {
			p = &rules.Program{Expr: s.resolveAliases(p.Expr), Source: p.Source, Schema: p.Schema}
		}
		if p.Eval(v) {
			return r.rules[i], true
		}
	}
	return RuleInfo{}, false
}

// ByPosition returns the rule at 1-based position n of Config.Rules, as
// the flow-sampling prefix "ef/<n>/<v>" names it; false for 0 (no rule
// matched) and for positions of disabled or absent rules.
func (r *Ruleset) ByPosition(n int) (RuleInfo, bool) {
	i, ok := slices.BinarySearchFunc(r.rules, n, func(x RuleInfo, n int) int { return x.Position - n })
	if !ok {
		return RuleInfo{}, false
	}
	return r.rules[i], true
}

func listSetName(list string, v4 bool) string {
	if v4 {
		return "l4_" + list
	}
	return "l6_" + list
}

func identitySetName(k int, v4 bool) string {
	if v4 {
		return fmt.Sprintf("id4_%d", k)
	}
	return fmt.Sprintf("id6_%d", k)
}

func addrKey(v6 bool) nftables.SetDatatype {
	if v6 {
		return nftables.TypeIP6Addr
	}
	return nftables.TypeIPAddr
}

// compiler collects what all rules need.
type compiler struct {
	base     []entry
	chains   []Chain
	sets     []Set
	preds    map[string]int // identity condition → set number
	predList []rules.Expr
	setNames map[string]string // elements → set name
	aliases  []string          // ingress aliases used, sorted
	owners   map[string]int    // rate-limit chain → Position of its rule
	geoip    *GeoIP            // the configured databases; nil: geo fields are refused
	geoPreds map[string]int    // geo condition → set number
	geoList  []rules.Expr
}

func newCompiler() *compiler {
	return &compiler{preds: map[string]int{}, setNames: map[string]string{}, owners: map[string]int{},
		geoPreds: map[string]int{}}
}

func (c *compiler) identityPred(e rules.Expr) int {
	k, ok := c.preds[e.String()]
	if !ok {
		k = len(c.predList)
		c.preds[e.String()] = k
		c.predList = append(c.predList, e)
	}
	return k
}

// ruleCompiler compiles one rule; it names its chains and sets after the
// rule's index.
type ruleCompiler struct {
	c       *compiler
	idx     int
	nchains int
}

// newSet returns the name of a constant set of the intervals rs, shared
// by every rule that uses the same elements.
func (c *compiler) newSet(key nftables.SetDatatype, rs []interval) string {
	var id strings.Builder
	id.WriteString(key.Name)
	for _, r := range rs {
		id.WriteString("|" + string(r.lo) + "-" + string(r.hi))
	}
	if name, ok := c.setNames[id.String()]; ok {
		return name
	}
	name := fmt.Sprintf("s%d", len(c.setNames))
	c.setNames[id.String()] = name
	s := Set{Name: name, Key: key, Interval: !singletons(rs)}
	if s.Interval {
		s.Elements = intervalElements(rs)
	} else {
		for _, r := range rs {
			s.Elements = append(s.Elements, nftables.SetElement{Key: r.lo})
		}
	}
	c.sets = append(c.sets, s)
	return name
}

// newChain adds an empty regular chain and returns its index.
func (rc *ruleCompiler) newChain() int {
	name := fmt.Sprintf("r%d", rc.idx)
	if rc.nchains > 0 {
		name = fmt.Sprintf("r%d_%d", rc.idx, rc.nchains)
	}
	rc.nchains++
	rc.c.chains = append(rc.c.chains, Chain{Name: name})
	return len(rc.c.chains) - 1
}

func verdict(k expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: k, Chain: chain}
}

func (c *compiler) rule(i int, info RuleInfo, rate Rate, prog *rules.Program) error {
	rc := &ruleCompiler{c: c, idx: i}
	ctr := &expr.Objref{Type: objCounter, Name: info.Counter}
	var T []expr.Any
	switch info.Action {
	case "allow":
		T = []expr.Any{ctr, verdict(expr.VerdictAccept, "")}
	case "block":
		T = []expr.Any{ctr, verdict(expr.VerdictDrop, "")}
	case "rate_limit":
		if rate.Packets == 0 || rate.Packets > 1<<32-1 {
			return errors.New("rate_limit needs a rate such as 1000/second")
		}
		rl := rc.rateLimit(ctr, rate)
		c.owners[rl] = info.Position
		T = []expr.Any{verdict(expr.VerdictGoto, rl)}
	default:
		return fmt.Errorf("unknown action %q", info.Action)
	}
	alts, ok, err := rc.dnf(prog.Expr)
	if err != nil {
		return rc.withSource(err, prog)
	}
	if ok {
		for _, a := range alts {
			c.base = append(c.base, entry{a: &a, tail: T})
		}
		return nil
	}
	ret := []expr.Any{verdict(expr.VerdictReturn, "")}
	// "X and Y" with a simple X: test X in the base chain and jump only
	// when it holds, so most packets never leave the base chain.
	if l, ok := prog.Expr.(*rules.Logical); ok && l.Op == rules.OpAnd {
		xs, ok, err := rc.dnf(l.X)
		if err != nil {
			return rc.withSource(err, prog)
		}
		if ok {
			if len(xs) == 0 {
				return nil
			}
			ch := rc.newChain()
			for _, a := range xs {
				c.base = append(c.base, entry{a: &a, tail: []expr.Any{verdict(expr.VerdictJump, c.chains[ch].Name)}})
			}
			return rc.withSource(rc.emit(ch, l.Y, T, ret), prog)
		}
	}
	ch := rc.newChain()
	c.base = append(c.base, entry{tail: []expr.Any{verdict(expr.VerdictJump, c.chains[ch].Name)}})
	return rc.withSource(rc.emit(ch, prog.Expr, T, ret), prog)
}

// withSource adds the excerpt of the expression to an errUnsupported.
func (rc *ruleCompiler) withSource(err error, prog *rules.Program) error {
	var eu *errUnsupported
	if errors.As(err, &eu) {
		eu.src = prog.Source
	}
	return err
}

// rateLimit adds the chain that counts, accepts a source's packets within
// rate and drops the rest, with one meter per family.
//
// The meter's update is the match: "limit rate N" holds within the rate,
// and the update fails (the rule does not match) when the meter is full
// and cannot take a new source. So a packet is accepted only when its
// source is metered and within its rate; over the rate, or with a full
// meter, it falls through to the drop. (The opposite form, "limit rate
// over N drop" then accept, accepts everything once a flood of sources
// has filled the meter.)
func (rc *ruleCompiler) rateLimit(ctr *expr.Objref, rate Rate) string {
	name := fmt.Sprintf("r%d_rl", rc.idx)
	units := map[string]expr.LimitTime{
		"second": expr.LimitTimeSecond, "minute": expr.LimitTimeMinute,
		"hour": expr.LimitTimeHour, "day": expr.LimitTimeDay,
	}
	ch := Chain{Name: name, Rules: [][]expr.Any{{ctr}}}
	for _, v6 := range []bool{false, true} {
		set := fmt.Sprintf("r%d_rl%d", rc.idx, map[bool]int{false: 4, true: 6}[v6])
		rc.c.sets = append(rc.c.sets, Set{Name: set, Key: addrKey(v6), Dynamic: true, V6: v6})
		a := alt{nfproto: family(!v6), l4proto: -1}
		r := append(a.lower(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader,
				Offset: addrLoad("ip.src", !v6).off, Len: addrLoad("ip.src", !v6).len},
			&expr.Dynset{SrcRegKey: 1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE,
				Timeout: meterTimeout, Exprs: []expr.Any{&expr.Limit{
					Type: expr.LimitTypePkts, Rate: rate.Packets, Unit: units[rate.Unit]}}},
			verdict(expr.VerdictAccept, ""))
		ch.Rules = append(ch.Rules, r)
	}
	ch.Rules = append(ch.Rules, []expr.Any{
		&expr.Objref{Type: objCounter, Name: rateDropCounter(ctr.Name)},
		verdict(expr.VerdictDrop, ""),
	})
	rc.c.chains = append(rc.c.chains, ch)
	return name
}

// rateDropCounter names the counter of the packets a rate_limit rule
// dropped: over the rate, or with the meter full.
func rateDropCounter(rule string) string { return rule + "_drop" }

// dnf expands e into at most maxAlts alternatives if it is built of
// conditions, and and or only.
func (rc *ruleCompiler) dnf(e rules.Expr) ([]alt, bool, error) {
	switch e := e.(type) {
	case *rules.Not:
		return nil, false, nil
	case *rules.Logical:
		if e.Op == rules.OpXor {
			return nil, false, nil
		}
		x, ok, err := rc.dnf(e.X)
		if !ok || err != nil {
			return nil, ok, err
		}
		y, ok, err := rc.dnf(e.Y)
		if !ok || err != nil {
			return nil, ok, err
		}
		if e.Op == rules.OpOr {
			if len(x)+len(y) > maxAlts {
				return nil, false, nil
			}
			return append(x, y...), true, nil
		}
		if len(x)*len(y) > maxAlts {
			return nil, false, nil
		}
		var out []alt
		for _, a := range x {
			for _, b := range y {
				if ab, ok := combine(a, b); ok {
					out = append(out, ab)
				}
			}
		}
		return out, true, nil
	}
	alts, err := rc.leaf(e)
	return alts, err == nil, err
}

// emit fills chain ch (empty) with rules that continue with T when e holds
// and with F when it does not. T and F end in a verdict.
func (rc *ruleCompiler) emit(ch int, e rules.Expr, T, F []expr.Any) error {
	if alts, ok, err := rc.dnf(e); err != nil {
		return err
	} else if ok {
		for _, a := range alts {
			rc.add(ch, append(a.lower(), T...))
		}
		if !isReturn(F) { // a regular chain returns at its end
			rc.add(ch, slices.Clone(F))
		}
		return nil
	}
	gotoChain := func(i int) []expr.Any { return []expr.Any{verdict(expr.VerdictGoto, rc.c.chains[i].Name)} }
	switch e := e.(type) {
	case *rules.Not:
		return rc.emit(ch, e.X, F, T)
	case *rules.Logical:
		y := rc.newChain()
		switch e.Op {
		case rules.OpAnd:
			if err := rc.emit(y, e.Y, T, F); err != nil {
				return err
			}
			return rc.emit(ch, e.X, gotoChain(y), F)
		case rules.OpOr:
			if err := rc.emit(y, e.Y, T, F); err != nil {
				return err
			}
			return rc.emit(ch, e.X, T, gotoChain(y))
		default: // xor: X true → not Y, X false → Y
			ny := rc.newChain()
			if err := rc.emit(ny, e.Y, F, T); err != nil {
				return err
			}
			if err := rc.emit(y, e.Y, T, F); err != nil {
				return err
			}
			return rc.emit(ch, e.X, gotoChain(ny), gotoChain(y))
		}
	}
	return fmt.Errorf("firewall: cannot compile %s", e)
}

func (rc *ruleCompiler) add(ch int, r []expr.Any) {
	rc.c.chains[ch].Rules = append(rc.c.chains[ch].Rules, r)
}

func isReturn(t []expr.Any) bool {
	v, ok := t[len(t)-1].(*expr.Verdict)
	return ok && len(t) == 1 && v.Kind == expr.VerdictReturn
}

// errorMessage renders a compile error for a config report: the rules
// package's line:col, message and caret excerpt.
func errorMessage(err error) string {
	return strings.TrimRight(err.Error(), "\n")
}
