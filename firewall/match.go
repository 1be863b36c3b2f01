package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// This file turns one condition of the rules language (a leaf of the
// expression tree) into alternatives: a condition holds exactly when one of
// its alternatives does, and each alternative is a conjunction of nft
// matches that fits in one rule. Every alternative carries the
// dependencies (address family, transport protocol) of the header fields it
// reads, which gives the "absent field is false" semantics of package rules
// for free: "tcp dport != 22" does not match a UDP packet.

// Address families as meta nfproto reports them.
const (
	nfIPv4 = unix.NFPROTO_IPV4
	nfIPv6 = unix.NFPROTO_IPV6
)

// alt is one alternative: a conjunction.
type alt struct {
	nfproto byte  // 0: any family
	l4proto int16 // -1: any transport
	ms      []match
}

// load says where a match reads its operand from.
type load struct {
	meta   expr.MetaKey // used when base is 0xff
	base   expr.PayloadBase
	off    uint32
	len    uint32
	isMeta bool
	kind   valueKind // for rendering the values compared
}

// valueKind is how a loaded value is printed.
type valueKind uint8

const (
	kindInt valueKind = iota
	kindAddr
	kindIfname
)

// match is "load [& mask] op data" or "load [& mask] @set".
type match struct {
	ld   load
	mask []byte // nil: unmasked
	op   expr.CmpOp
	data []byte
	set  string // lookup instead of cmp when not empty
	inv  bool   // the lookup is negated: the value is not in set
}

// combine returns the conjunction of a and b, or false if they can never
// hold together (different families or transports).
func combine(a, b alt) (alt, bool) {
	r := alt{nfproto: a.nfproto, l4proto: a.l4proto}
	if b.nfproto != 0 {
		if r.nfproto != 0 && r.nfproto != b.nfproto {
			return alt{}, false
		}
		r.nfproto = b.nfproto
	}
	if b.l4proto >= 0 {
		if r.l4proto >= 0 && r.l4proto != b.l4proto {
			return alt{}, false
		}
		r.l4proto = b.l4proto
	}
	r.ms = append(append(make([]match, 0, len(a.ms)+len(b.ms)), a.ms...), b.ms...)
	return r, true
}

// intField is where an integer field lives, per family.
type intField struct {
	nfproto byte
	l4proto int16
	ld      load
	mask    uint64 // bits of the loaded bytes that form the field
}

func meta(k expr.MetaKey, n uint32, kind valueKind) load {
	return load{meta: k, isMeta: true, len: n, kind: kind}
}

func nh(off, n uint32) load {
	return load{base: expr.PayloadBaseNetworkHeader, off: off, len: n}
}

func th(off, n uint32) load {
	return load{base: expr.PayloadBaseTransportHeader, off: off, len: n}
}

// intFields maps the integer fields of rules.FirewallSchema to headers.
func intFields(name string) []intField {
	const any4 = -1
	switch name {
	case "ip.proto":
		return []intField{{0, any4, meta(expr.MetaKeyL4PROTO, 1, kindInt), 0xff}}
	case "ip.len":
		return []intField{{nfIPv4, any4, nh(2, 2), 0xffff}, {nfIPv6, any4, nh(4, 2), 0xffff}}
	case "ip.ttl":
		return []intField{{nfIPv4, any4, nh(8, 1), 0xff}, {nfIPv6, any4, nh(7, 1), 0xff}}
	case "ip.hdr_len":
		return []intField{{nfIPv4, any4, nh(0, 1), 0x0f}}
	case "tcp.srcport":
		return []intField{{0, unix.IPPROTO_TCP, th(0, 2), 0xffff}}
	case "tcp.dstport":
		return []intField{{0, unix.IPPROTO_TCP, th(2, 2), 0xffff}}
	case "tcp.flags":
		return []intField{{0, unix.IPPROTO_TCP, th(13, 1), 0xff}}
	case "udp.srcport":
		return []intField{{0, unix.IPPROTO_UDP, th(0, 2), 0xffff}}
	case "udp.dstport":
		return []intField{{0, unix.IPPROTO_UDP, th(2, 2), 0xffff}}
	case "icmp.type":
		return []intField{{nfIPv4, unix.IPPROTO_ICMP, th(0, 1), 0xff}, {nfIPv6, unix.IPPROTO_ICMPV6, th(0, 1), 0xff}}
	case "icmp.code":
		return []intField{{nfIPv4, unix.IPPROTO_ICMP, th(1, 1), 0xff}, {nfIPv6, unix.IPPROTO_ICMPV6, th(1, 1), 0xff}}
	}
	return nil
}

// be returns v big-endian in n bytes.
func be(v uint64, n uint32) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return append([]byte(nil), b[8-n:]...)
}

// addrLoad is the payload load of ip.src or ip.dst for a family.
func addrLoad(field string, v4 bool) load {
	src := field == "ip.src"
	var l load
	switch {
	case v4 && src:
		l = nh(12, 4)
	case v4:
		l = nh(16, 4)
	case src:
		l = nh(8, 16)
	default:
		l = nh(24, 16)
	}
	l.kind = kindAddr
	return l
}

func family(v4 bool) byte {
	if v4 {
		return nfIPv4
	}
	return nfIPv6
}

var cmpOps = map[rules.CmpOp]expr.CmpOp{
	rules.OpEq: expr.CmpOpEq, rules.OpNe: expr.CmpOpNeq,
	rules.OpLt: expr.CmpOpLt, rules.OpLe: expr.CmpOpLte,
	rules.OpGt: expr.CmpOpGt, rules.OpGe: expr.CmpOpGte,
}

// errUnsupported is returned for conditions nftables cannot express.
type errUnsupported struct {
	pos rules.Pos
	msg string
	src string // the expression, for the excerpt
}

// Error renders "line:col: msg" and a caret excerpt like rules.Error.
func (e *errUnsupported) Error() string {
	s := fmt.Sprintf("%d:%d: %s", e.pos.Line, e.pos.Col, e.msg)
	lines := strings.Split(e.src, "\n")
	if e.pos.Line < 1 || e.pos.Line > len(lines) {
		return s
	}
	line := lines[e.pos.Line-1]
	caret := strings.Repeat(" ", max(0, utf8.RuneCountInString(line[:min(len(line), e.pos.Offset-lineStart(e.src, e.pos.Line))])))
	return s + "\n  " + line + "\n  " + caret + "^"
}

// lineStart is the byte offset of line n (1-based) in src.
func lineStart(src string, n int) int {
	off := 0
	for i := 1; i < n; i++ {
		off += strings.IndexByte(src[off:], '\n') + 1
	}
	return off
}

// leaf returns the alternatives of one condition, adding the sets it needs
// to the compiler.
func (rc *ruleCompiler) leaf(e rules.Expr) ([]alt, error) {
	var ref *rules.FieldRef
	switch e := e.(type) {
	case *rules.BoolField:
		ref = &e.FieldRef
	case *rules.Compare:
		ref = &e.FieldRef
	case *rules.InSet:
		ref = &e.FieldRef
	case *rules.InList:
		ref = &e.FieldRef
	case *rules.Contains:
		ref = &e.FieldRef
	default:
		return nil, fmt.Errorf("firewall: unexpected node %T", e)
	}
	name := ref.Field.Name
	if _, _, ok := rules.GeoField(name); ok {
		return rc.geo(ref, e)
	}
	switch {
	case name == "identity.email" || name == "identity.groups" || rules.IsPostureField(name):
		return rc.identity(e), nil
	case name == "ip.src" || name == "ip.dst":
		return rc.addr(name, e)
	case name == "ingress":
		return rc.ingress(e)
	}
	if bit, ok := rules.TCPFlagBit(name); ok {
		ld := th(13, 1)
		return []alt{{l4proto: unix.IPPROTO_TCP, ms: []match{
			{ld: ld, mask: []byte{bit}, op: expr.CmpOpNeq, data: []byte{0}},
		}}}, nil
	}
	fs := intFields(name)
	if fs == nil {
		return nil, &errUnsupported{pos: ref.FieldPos, msg: fmt.Sprintf("field %s is not supported by the nftables compiler", name)}
	}
	var out []alt
	for _, f := range fs {
		mask := f.mask
		if ref.Masked {
			mask &= ref.Mask
		}
		m := match{ld: f.ld}
		if full := uint64(1)<<(8*f.ld.len) - 1; mask != full {
			m.mask = be(mask, f.ld.len)
		}
		a := alt{nfproto: f.nfproto, l4proto: f.l4proto}
		switch e := e.(type) {
		case *rules.Compare:
			m.op, m.data = cmpOps[e.Op], be(e.Value.Int, f.ld.len)
			a.ms = []match{m}
		case *rules.InSet:
			var rs []interval
			for _, el := range e.Elems {
				lo, hi := el.IntBounds() // within the field's width
				rs = append(rs, interval{be(lo, f.ld.len), be(hi, f.ld.len)})
			}
			for _, ms := range rc.setMatch(m, rs, intKeyType(name, f.ld.len)) {
				out = append(out, alt{nfproto: f.nfproto, l4proto: f.l4proto, ms: ms})
			}
			continue
		default:
			return nil, &errUnsupported{pos: ref.FieldPos, msg: fmt.Sprintf("this operator on %s is not supported by the nftables compiler", name)}
		}
		out = append(out, a)
	}
	return out, nil
}

// intKeyType is the nft set key type for an integer field's values.
func intKeyType(name string, n uint32) nftables.SetDatatype {
	switch name {
	case "ip.proto":
		return nftables.TypeInetProto
	case "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport":
		return nftables.TypeInetService
	}
	t := nftables.TypeInteger
	t.Bytes = n
	return t
}

// smallSet is the most intervals an "in {…}" is expanded to, one
// alternative each, instead of a set: the kernel finds sets by name in a
// list, so tens of thousands of sets make a batch quadratic.
const smallSet = 4

// setMatch matches m's load against the intervals rs and returns the
// alternatives: one per interval (a cmp for a value, two for a range) for
// small sets, else a lookup in a set. None when rs is empty.
func (rc *ruleCompiler) setMatch(m match, rs []interval, key nftables.SetDatatype) [][]match {
	rs = mergeIntervals(rs)
	if len(rs) > smallSet {
		m.set = rc.c.newSet(key, rs)
		return [][]match{{m}}
	}
	var out [][]match
	for _, r := range rs {
		if string(r.lo) == string(r.hi) {
			eq := m
			eq.op, eq.data = expr.CmpOpEq, r.lo
			out = append(out, []match{eq})
			continue
		}
		lo, hi := m, m
		lo.op, lo.data = expr.CmpOpGte, r.lo
		hi.op, hi.data = expr.CmpOpLte, r.hi
		out = append(out, []match{lo, hi})
	}
	return out
}

// addr compiles conditions on ip.src and ip.dst.
func (rc *ruleCompiler) addr(field string, e rules.Expr) ([]alt, error) {
	switch e := e.(type) {
	case *rules.Compare:
		p := e.Value.Prefix
		v4 := p.Addr().Is4()
		m := match{ld: addrLoad(field, v4), op: cmpOps[e.Op]}
		a := alt{nfproto: family(v4), l4proto: -1}
		switch e.Op {
		case rules.OpEq, rules.OpNe:
			if p.Bits() == 0 {
				if e.Op == rules.OpNe {
					return nil, nil // never: every address is in ::/0
				}
				return []alt{a}, nil
			}
			if p.Bits() < p.Addr().BitLen() {
				m.mask = prefixMask(p)
			}
			m.data = p.Addr().AsSlice()
		default:
			m.data = p.Addr().AsSlice()
		}
		a.ms = []match{m}
		return []alt{a}, nil
	case *rules.InSet:
		var r4, r6 []interval
		for _, el := range e.Elems {
			lo, hi := el.IPBounds()
			iv := interval{lo.AsSlice(), hi.AsSlice()}
			if lo.Is4() {
				r4 = append(r4, iv)
			} else {
				r6 = append(r6, iv)
			}
		}
		var out []alt
		for _, v4 := range []bool{true, false} {
			rs, key := r6, nftables.TypeIP6Addr
			if v4 {
				rs, key = r4, nftables.TypeIPAddr
			}
			for _, ms := range rc.setMatch(match{ld: addrLoad(field, v4)}, rs, key) {
				out = append(out, alt{nfproto: family(v4), l4proto: -1, ms: ms})
			}
		}
		return out, nil
	case *rules.InList:
		return []alt{
			{nfproto: nfIPv4, l4proto: -1, ms: []match{{ld: addrLoad(field, true), set: listSetName(e.Name, true)}}},
			{nfproto: nfIPv6, l4proto: -1, ms: []match{{ld: addrLoad(field, false), set: listSetName(e.Name, false)}}},
		}, nil
	}
	return nil, &errUnsupported{pos: e.Pos(), msg: "this operator on " + field + " is not supported by the nftables compiler"}
}

func prefixMask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// ifnameLen is the size of an interface name as the kernel compares it.
const ifnameLen = unix.IFNAMSIZ

// ingress compiles conditions on the ingress interface name. The aliases
// "wan" and "lan" in ==, != and in {…} become lookups in the sets
// if_wan and if_lan, which Compile fills from the Spec (see aliasNames).
func (rc *ruleCompiler) ingress(e rules.Expr) ([]alt, error) {
	ld := meta(expr.MetaKeyIIFNAME, ifnameLen, kindIfname)
	one := func(ms ...match) []alt { return []alt{{l4proto: -1, ms: ms}} }
	switch e := e.(type) {
	case *rules.Compare:
		s := e.Value.Str
		if isAlias(s) && (e.Op == rules.OpEq || e.Op == rules.OpNe) {
			return one(match{ld: ld, set: rc.c.alias(s), inv: e.Op == rules.OpNe}), nil
		}
		long := len(s) >= ifnameLen || containsNUL(s)
		switch {
		case long && e.Op == rules.OpEq:
			return nil, nil // no interface has such a name
		case long && e.Op == rules.OpNe:
			return one(), nil
		}
		return one(match{ld: ld, op: cmpOps[e.Op], data: ifname(s)}), nil
	case *rules.InSet:
		var rs []interval
		var out []alt
		for _, el := range e.Elems {
			s := el.Lo.Str
			switch {
			case isAlias(s):
				out = append(out, one(match{ld: ld, set: rc.c.alias(s)})...)
			case len(s) < ifnameLen && !containsNUL(s):
				rs = append(rs, interval{ifname(s), ifname(s)})
			}
		}
		if len(rs) > 0 {
			for _, ms := range rc.setMatch(match{ld: ld}, rs, nftables.TypeIFName) {
				out = append(out, one(ms...)...)
			}
		}
		return out, nil
	}
	return nil, &errUnsupported{pos: e.Pos(), msg: "only ==, !=, <, <=, >, >= and in {…} are supported on ingress; use a list of names with in {…}"}
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// identity compiles any condition on identity.email, identity.groups or a
// device.posture.* field to membership of the source address in a set
// that holds the addresses of the users (devices) for whom the condition
// is true (see Table.UpdateIdentities): a posture change is a set update,
// and no packet is looked up in user space.
func (rc *ruleCompiler) identity(e rules.Expr) []alt {
	k := rc.c.identityPred(e)
	return []alt{
		{nfproto: nfIPv4, l4proto: -1, ms: []match{{ld: addrLoad("ip.src", true), set: identitySetName(k, true)}}},
		{nfproto: nfIPv6, l4proto: -1, ms: []match{{ld: addrLoad("ip.src", false), set: identitySetName(k, false)}}},
	}
}

// lower turns an alternative into nft expressions that leave the verdict
// to what follows.
func (a alt) lower() []expr.Any {
	var out []expr.Any
	if a.nfproto != 0 {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{a.nfproto}})
	}
	if a.l4proto >= 0 {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(a.l4proto)}})
	}
	for _, m := range a.ms {
		if m.ld.isMeta {
			out = append(out, &expr.Meta{Key: m.ld.meta, Register: 1})
		} else {
			out = append(out, &expr.Payload{DestRegister: 1, Base: m.ld.base, Offset: m.ld.off, Len: m.ld.len})
		}
		if m.mask != nil {
			out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: m.ld.len,
				Mask: m.mask, Xor: make([]byte, m.ld.len)})
		}
		if m.set != "" {
			out = append(out, &expr.Lookup{SourceRegister: 1, SetName: m.set, Invert: m.inv})
		} else {
			out = append(out, &expr.Cmp{Op: m.op, Register: 1, Data: m.data})
		}
	}
	return out
}
