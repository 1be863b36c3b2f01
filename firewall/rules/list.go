package rules

import (
	"fmt"
	"strings"
)

// List is a named set of values, written $name in an expression: IP
// addresses and CIDRs, integers, or strings. An [InList] node keeps the List
// returned by the [ListResolver] and asks it at evaluation time, so an
// implementation may change its contents without recompiling (it must then
// be safe for concurrent use).
type List interface {
	// ElemType is the type of the elements: TypeInt, TypeIP or TypeString.
	ElemType() Type
	// Contains reports whether v, a value of ElemType, is in the list.
	Contains(v Value) bool
}

// StaticList is an immutable [List].
type StaticList struct {
	typ Type
	idx setIndex
	n   int
}

// NewList returns a list of type t (TypeInt, TypeIP or TypeString) holding
// elems. Integer elements are numbers or ranges ("80", "8000..8999"); IP
// elements are addresses, CIDRs or ranges of addresses ("10.0.0.0/8",
// "2001:db8::1", "10.0.0.1..10.0.0.9"); string elements are taken as they
// are, without quotes. A CIDR with host bits set is an error.
func NewList(t Type, elems ...string) (*StaticList, error) {
	if t != TypeInt && t != TypeIP && t != TypeString {
		return nil, fmt.Errorf("list of %v: element type must be int, IP or string", t)
	}
	set := make([]SetElem, 0, len(elems))
	for _, s := range elems {
		var el SetElem
		var err error
		if t == TypeString {
			el.Lo = Literal{Type: TypeString, Str: s}
		} else {
			el, err = parseListElem(t, strings.TrimSpace(s))
		}
		if err != nil {
			return nil, fmt.Errorf("list element %q: %w", s, err)
		}
		set = append(set, el)
	}
	return &StaticList{typ: t, idx: buildIndex(set), n: len(elems)}, nil
}

func parseListElem(t Type, s string) (SetElem, error) {
	lo, hi, isRange := strings.Cut(s, "..")
	var el SetElem
	var err error
	if el.Lo, err = parseListValue(t, lo); err != nil {
		return el, err
	}
	if !isRange {
		return el, nil
	}
	el.Range = true
	if el.Hi, err = parseListValue(t, hi); err != nil {
		return el, err
	}
	switch {
	case t == TypeInt && el.Lo.Int > el.Hi.Int:
		return el, fmt.Errorf("empty range")
	case t == TypeIP && (!el.Lo.Prefix.IsSingleIP() || !el.Hi.Prefix.IsSingleIP()):
		return el, fmt.Errorf("a range runs between addresses, not CIDRs")
	case t == TypeIP && el.Lo.Prefix.Addr().Is4() != el.Hi.Prefix.Addr().Is4():
		return el, fmt.Errorf("range mixes IPv4 and IPv6")
	case t == TypeIP && el.Lo.Prefix.Addr().Compare(el.Hi.Prefix.Addr()) > 0:
		return el, fmt.Errorf("empty range")
	}
	return el, nil
}

func parseListValue(t Type, s string) (Literal, error) {
	if s == "" || wordLen(s, isWordByte) != len(s) {
		return Literal{}, fmt.Errorf("expected %s", t.noun())
	}
	tok := classify(s, Pos{})
	switch {
	case tok.kind == tokError:
		return Literal{}, fmt.Errorf("%s", tok.text)
	case t == TypeInt && tok.kind == tokInt:
		return Literal{Type: TypeInt, Int: tok.val}, nil
	case t == TypeIP && tok.kind == tokIP:
		if m := tok.ip.Masked(); m != tok.ip {
			return Literal{}, fmt.Errorf("CIDR %s has host bits set; use %s", s, m)
		}
		if tok.ip.Addr().Zone() != "" {
			return Literal{}, fmt.Errorf("zones are not allowed")
		}
		return Literal{Type: TypeIP, Prefix: tok.ip}, nil
	}
	return Literal{}, fmt.Errorf("expected %s, got %s", t.noun(), tok.describe())
}

// ElemType implements [List].
func (l *StaticList) ElemType() Type { return l.typ }

// Contains implements [List].
func (l *StaticList) Contains(v Value) bool { return v.Type == l.typ && l.idx.contains(&v) }

// Len returns the number of elements the list was made with.
func (l *StaticList) Len() int { return l.n }
