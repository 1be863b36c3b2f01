package firewall

import (
	"fmt"
	"slices"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/google/nftables"
)

// Ingress aliases
//
// Rules name interfaces by role rather than by device: ingress == "wan"
// holds for packets that came in on the WAN interface (Spec.WAN, from
// interfaces.wan) and ingress == "lan" for any LAN interface (Spec.LAN,
// from interfaces.lan). An interface literally named "wan" or "lan" is
// included too, so an appliance whose ports carry those names works
// without configuration. The aliases apply to ==, != and in {…}, the
// operators the language allows on ingress that nftables can express.
//
// A rule that uses an alias compiles to a lookup in the set if_wan or
// if_lan (type ifname), which Compile fills from the Spec: the rules do
// not depend on which device plays which role, and the pure evaluator
// ([Spec.Match]) gets the same mapping.

// Aliases of the ingress field.
const (
	AliasWAN = "wan"
	AliasLAN = "lan"
)

func isAlias(s string) bool { return s == AliasWAN || s == AliasLAN }

func aliasSetName(alias string) string { return "if_" + alias }

// alias records that a rule uses alias and returns the name of its set.
func (c *compiler) alias(a string) string {
	if !slices.Contains(c.aliases, a) {
		c.aliases = append(c.aliases, a)
		slices.Sort(c.aliases)
	}
	return aliasSetName(a)
}

// aliasNames returns the interface names alias stands for in s: the alias
// itself and the configured interfaces, without duplicates or names the
// kernel could not have.
func (s *Spec) aliasNames(alias string) []string {
	names := []string{alias}
	switch alias {
	case AliasWAN:
		names = append(names, s.WAN)
	case AliasLAN:
		names = append(names, s.LAN...)
	}
	var out []string
	for _, n := range names {
		if n != "" && len(n) < ifnameLen && !containsNUL(n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// aliasSet is the set of interface names behind alias.
func (s *Spec) aliasSet(alias string) Set {
	set := Set{Name: aliasSetName(alias), Key: nftables.TypeIFName, Alias: alias}
	for _, n := range s.aliasNames(alias) {
		set.Elements = append(set.Elements, nftables.SetElement{Key: ifname(n)})
	}
	return set
}

// usesAlias reports whether e has a condition on ingress that names an
// alias with ==, != or in {…}.
func usesAlias(e rules.Expr) bool {
	switch e := e.(type) {
	case *rules.Logical:
		return usesAlias(e.X) || usesAlias(e.Y)
	case *rules.Not:
		return usesAlias(e.X)
	case *rules.Compare:
		return e.Field.Name == "ingress" && (e.Op == rules.OpEq || e.Op == rules.OpNe) && isAlias(e.Value.Str)
	case *rules.InSet:
		if e.Field.Name != "ingress" {
			return false
		}
		for _, el := range e.Elems {
			if isAlias(el.Lo.Str) {
				return true
			}
		}
	}
	return false
}

// resolveAliases returns e with every alias condition spelled out for the
// evaluator: ingress == "wan" becomes a disjunction of == over the names
// of the alias, != a conjunction of != (false when ingress is absent, as
// != is), and an in {…} naming an alias is or-ed with == over the names
// the set lacks.
func (s *Spec) resolveAliases(e rules.Expr) rules.Expr {
	switch e := e.(type) {
	case *rules.Logical:
		return &rules.Logical{Op: e.Op, OpPos: e.OpPos, X: s.resolveAliases(e.X), Y: s.resolveAliases(e.Y)}
	case *rules.Not:
		return &rules.Not{NotPos: e.NotPos, X: s.resolveAliases(e.X)}
	case *rules.Compare:
		if !usesAlias(e) {
			return e
		}
		join := rules.OpOr
		if e.Op == rules.OpNe {
			join = rules.OpAnd
		}
		return s.nameChain(e, e.Op, join, s.aliasNames(e.Value.Str))
	case *rules.InSet:
		if !usesAlias(e) {
			return e
		}
		var extra []string
		for _, el := range e.Elems {
			if isAlias(el.Lo.Str) {
				for _, n := range s.aliasNames(el.Lo.Str) {
					if !slices.ContainsFunc(e.Elems, func(x rules.SetElem) bool { return x.Lo.Str == n }) && !slices.Contains(extra, n) {
						extra = append(extra, n)
					}
				}
			}
		}
		if len(extra) == 0 {
			return e
		}
		return &rules.Logical{Op: rules.OpOr, OpPos: e.InPos, X: e, Y: s.nameChain(e, rules.OpEq, rules.OpOr, extra)}
	}
	return e
}

// nameChain joins "ingress op name" for every name with join.
func (s *Spec) nameChain(at rules.Expr, op rules.CmpOp, join rules.LogicalOp, names []string) rules.Expr {
	var ref rules.FieldRef
	switch at := at.(type) {
	case *rules.Compare:
		ref = at.FieldRef
	case *rules.InSet:
		ref = at.FieldRef
	default:
		panic(fmt.Sprintf("firewall: nameChain on %T", at))
	}
	var out rules.Expr
	for _, n := range names {
		c := &rules.Compare{FieldRef: ref, Op: op, OpPos: at.Pos(),
			Value: rules.Literal{Pos: at.Pos(), Type: rules.TypeString, Str: n}}
		if out == nil {
			out = c
		} else {
			out = &rules.Logical{Op: join, OpPos: at.Pos(), X: out, Y: c}
		}
	}
	return out
}
