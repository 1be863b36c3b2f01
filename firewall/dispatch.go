package firewall

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Dispatch
//
// A long linear chain costs every packet every rule. With many rules the
// base chain is grouped instead: a verdict map on the transport protocol
// sends a packet to a chain holding only the rules that can match that
// protocol, and for TCP and UDP a second verdict map on the destination
// port sends it to a chain with only the rules for that port (plus those
// for any port). Each group keeps the rules in their original order, so
// the first rule to match is the same as in the linear chain; a rule that
// could match several groups is copied into each, sharing its counter and
// sub-chains. Groups are entered with goto, so a packet that reaches the
// end of one leaves the rules chain with its policy, accept.

// entry is one rule of the base chain: the alternative it tests (nil:
// always) followed by tail, which ends in a verdict.
type entry struct {
	a    *alt
	tail []expr.Any
}

func (e entry) lower() []expr.Any {
	if e.a == nil {
		return e.tail
	}
	return append(e.a.lower(), e.tail...)
}

// dispatchMin is the number of base rules from which dispatch pays off.
const dispatchMin = 32

// maxCopies bounds how much port dispatch may grow the rules of one
// protocol: copies of port-agnostic rules into every port chain.
const maxCopies = 4

// dstPort returns the destination port e tests with ==, if it tests one.
func (e entry) dstPort() (uint16, bool) {
	if e.a == nil {
		return 0, false
	}
	for _, m := range e.a.ms {
		if !m.ld.isMeta && m.ld.base == expr.PayloadBaseTransportHeader && m.ld.off == 2 && m.ld.len == 2 &&
			m.mask == nil && m.set == "" && m.op == expr.CmpOpEq {
			return uint16(m.data[0])<<8 | uint16(m.data[1]), true
		}
	}
	return 0, false
}

// canMatch reports whether e can match a packet of transport proto.
func (e entry) canMatch(proto int16) bool {
	return e.a == nil || e.a.l4proto < 0 || e.a.l4proto == proto
}

func lowerAll(es []entry) [][]expr.Any {
	out := make([][]expr.Any, len(es))
	for i, e := range es {
		out[i] = e.lower()
	}
	return out
}

// dispatch returns the rules of the base chain and the chains and sets
// they need, grouping the base rules by protocol and port when there are
// many.
func (c *compiler) dispatch() ([][]expr.Any, []Chain, []Set) {
	chains, sets := c.chains, c.sets
	protos := map[int16]bool{}
	for _, e := range c.base {
		if e.a != nil && e.a.l4proto >= 0 {
			protos[e.a.l4proto] = true
		}
	}
	if len(c.base) < dispatchMin || len(protos) == 0 {
		return lowerAll(c.base), chains, sets
	}
	var elems []nftables.SetElement
	for _, p := range slices.Sorted(maps.Keys(protos)) {
		name := fmt.Sprintf("p%d", p)
		var group []entry
		for _, e := range c.base {
			if e.canMatch(p) {
				group = append(group, e)
			}
		}
		var sub []Chain
		var subSets []Set
		rules := lowerAll(group)
		if p == unix.IPPROTO_TCP || p == unix.IPPROTO_UDP {
			rules, sub, subSets = portDispatch(name, group)
		}
		chains = append(chains, Chain{Name: name, Rules: rules})
		chains = append(chains, sub...)
		sets = append(sets, subSets...)
		elems = append(elems, nftables.SetElement{Key: []byte{byte(p)},
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: name}})
	}
	sets = append(sets, Set{Name: "proto_map", Key: nftables.TypeInetProto, Map: true, Elements: elems})
	base := [][]expr.Any{{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: "proto_map", IsDestRegSet: true, DestRegister: 0},
	}}
	for _, e := range c.base {
		if e.a == nil || e.a.l4proto < 0 { // the rules for every other protocol
			base = append(base, e.lower())
		}
	}
	return base, chains, sets
}

// portDispatch groups the rules of one protocol chain by destination port
// when that does not copy too many rules. It is linear in the rules plus
// the copies.
func portDispatch(name string, group []entry) ([][]expr.Any, []Chain, []Set) {
	type tagged struct {
		e    entry
		port uint16
		ok   bool
	}
	tags := make([]tagged, len(group))
	ports := map[uint16][][]expr.Any{}
	agnostic := 0
	for i, e := range group {
		p, ok := e.dstPort()
		tags[i] = tagged{e, p, ok}
		if ok {
			ports[p] = nil
		} else {
			agnostic++
		}
	}
	if len(ports) < 4 || len(ports)*agnostic > maxCopies*len(group) {
		return lowerAll(group), nil, nil
	}
	var rest [][]expr.Any // the rules for other ports
	for _, t := range tags {
		r := t.e.lower()
		if t.ok {
			ports[t.port] = append(ports[t.port], r)
			continue
		}
		for p := range ports {
			ports[p] = append(ports[p], r)
		}
		rest = append(rest, r)
	}
	var chains []Chain
	var elems []nftables.SetElement
	for _, port := range slices.SortedFunc(maps.Keys(ports), cmp.Compare) {
		ch := fmt.Sprintf("%s_%d", name, port)
		chains = append(chains, Chain{Name: ch, Rules: ports[port]})
		elems = append(elems, nftables.SetElement{Key: be(uint64(port), 2),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: ch}})
	}
	mapName := name + "_ports"
	rules := append([][]expr.Any{{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: mapName, IsDestRegSet: true, DestRegister: 0},
	}}, rest...)
	return rules, chains, []Set{{Name: mapName, Key: nftables.TypeInetService, Map: true, Elements: elems}}
}
