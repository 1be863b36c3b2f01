package rules

import (
	"net/netip"
	"strconv"
	"strings"
)

// Expr is a node of the typed syntax tree: one of *[Logical], *[Not],
// *[BoolField], *[Compare], *[InSet], *[InList] and *[Contains]. A tree
// returned by [Compile] is fully type-checked: every field exists in the
// schema, every literal has the field's type and fits its width, and every
// operator is valid for its operand. Trees are immutable and safe for
// concurrent use.
type Expr interface {
	// Pos returns the position of the node's first character.
	Pos() Pos
	// String formats the node in canonical syntax, which compiles back to
	// the same tree (positions aside).
	String() string

	eval(Values) bool
	print(b *strings.Builder, minPrec int)
}

// LogicalOp is a binary logical operator.
type LogicalOp uint8

// Logical operators, in order of increasing precedence.
const (
	OpOr  LogicalOp = iota + 1 // or, ||
	OpXor                      // xor, ^^
	OpAnd                      // and, &&
)

// String returns the canonical word form: "or", "xor" or "and".
func (op LogicalOp) String() string {
	switch op {
	case OpOr:
		return "or"
	case OpXor:
		return "xor"
	case OpAnd:
		return "and"
	}
	return "LogicalOp(" + strconv.Itoa(int(op)) + ")"
}

// CmpOp is a comparison operator.
type CmpOp uint8

// Comparison operators.
const (
	OpEq CmpOp = iota + 1 // ==, eq
	OpNe                  // !=, ne
	OpLt                  // <, lt
	OpLe                  // <=, le
	OpGt                  // >, gt
	OpGe                  // >=, ge
)

// String returns the canonical symbol form, e.g. "==".
func (op CmpOp) String() string {
	switch op {
	case OpEq:
		return "=="
	case OpNe:
		return "!="
	case OpLt:
		return "<"
	case OpLe:
		return "<="
	case OpGt:
		return ">"
	case OpGe:
		return ">="
	}
	return "CmpOp(" + strconv.Itoa(int(op)) + ")"
}

// Precedence levels for printing.
const (
	precOr = 1 + iota
	precXor
	precAnd
	precNot
)

func (op LogicalOp) prec() int {
	switch op {
	case OpOr:
		return precOr
	case OpXor:
		return precXor
	}
	return precAnd
}

// Logical is X op Y. Chains are left-associative: "a and b and c" is
// Logical{And, Logical{And, a, b}, c}. Eval short-circuits and and or.
type Logical struct {
	Op    LogicalOp
	OpPos Pos // position of the operator
	X, Y  Expr
}

// Not is "not X" (also written "!X"): true when X is false, including when
// X is false because a field is absent.
type Not struct {
	NotPos Pos
	X      Expr
}

// FieldRef is the left-hand side of a condition: a field, for integers
// optionally masked ("tcp.flags & 0x12"). Comparisons apply to the masked
// value.
type FieldRef struct {
	FieldPos Pos
	Field    *Field // from the schema passed to Compile
	Masked   bool   // written "field & Mask"; only for TypeInt fields
	Mask     uint64 // fits the field's width
}

// BoolField is a TypeBool field standing alone ("tcp.flags.syn"): true when
// the field is present and true.
type BoolField struct {
	FieldRef // never masked
}

// Compare is "field op value". For TypeInt fields every CmpOp is valid.
// For TypeIP fields, == and != test membership of Value.Prefix (an address
// is a full-length prefix) and the ordering operators compare addresses;
// an address of the other family makes the comparison false. TypeString
// fields take == and != only. A masked field alone, "tcp.flags & 0x02", is
// a Compare with Op OpNe and Value 0.
type Compare struct {
	FieldRef
	Op    CmpOp
	OpPos Pos
	Value Literal // of the field's type (TypeString for TypeStrings fields)
}

// InSet is "field in {elements}". For TypeStrings fields it is true when
// any element of the array is in the set. An IP set may mix IPv4 and IPv6
// elements; a packet is matched against those of its own family. Elements are kept as written
// (not sorted or merged); the set is never empty.
type InSet struct {
	FieldRef
	InPos Pos
	Elems []SetElem

	idx setIndex
}

// InList is "field in $name". The list's element type matches the field:
// TypeInt, TypeIP, or TypeString for TypeString and TypeStrings fields
// (any element of the array). Membership is decided by List.Contains at
// evaluation time, so a list can change without recompiling.
type InList struct {
	FieldRef
	InPos    Pos
	ListPos  Pos
	Name     string // without the $
	ElemType Type
	List     List // as returned by the ListResolver
}

// Contains is "field contains value". For a TypeString field it is a
// substring test; for a TypeStrings field, membership of Value in the array.
type Contains struct {
	FieldRef
	OpPos Pos
	Value Literal // TypeString
}

// Literal is a constant operand.
type Literal struct {
	Pos    Pos
	Type   Type         // TypeInt, TypeIP, TypeString or TypeVersion
	Int    uint64       // TypeInt
	Name   string       // TypeInt: the constant's name (e.g. "tcp") if written by name
	Prefix netip.Prefix // TypeIP: masked; a single address has full length
	Str    string       // TypeString, TypeVersion (as written)
	Ver    Version      // TypeVersion: Str parsed
}

// SetElem is one element of a set: a value, a CIDR (Lo.Prefix shorter than
// the address), or an inclusive range Lo..Hi of integers or of addresses of
// one family.
type SetElem struct {
	Lo    Literal
	Range bool
	Hi    Literal // valid when Range
}

// IntBounds returns the inclusive bounds of an integer element.
func (e SetElem) IntBounds() (lo, hi uint64) {
	if e.Range {
		return e.Lo.Int, e.Hi.Int
	}
	return e.Lo.Int, e.Lo.Int
}

// IPBounds returns the first and last address of an IP element.
func (e SetElem) IPBounds() (lo, hi netip.Addr) {
	if e.Range {
		return e.Lo.Prefix.Addr(), e.Hi.Prefix.Addr()
	}
	return e.Lo.Prefix.Addr(), lastAddr(e.Lo.Prefix)
}

// lastAddr returns the last address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 12
	}
	for i := p.Bits(); i < p.Addr().BitLen(); i++ {
		b[off+i/8] |= 0x80 >> (i % 8)
	}
	if p.Addr().Is4() {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

// Pos returns the position of X.
func (e *Logical) Pos() Pos { return e.X.Pos() }

// Pos returns the position of the not.
func (e *Not) Pos() Pos { return e.NotPos }

// Pos returns the position of the field.
func (r *FieldRef) Pos() Pos { return r.FieldPos }

// Walk calls fn for e and, if fn returns true, for its operands, depth first
// in source order.
func Walk(e Expr, fn func(Expr) bool) {
	if !fn(e) {
		return
	}
	switch e := e.(type) {
	case *Logical:
		Walk(e.X, fn)
		Walk(e.Y, fn)
	case *Not:
		Walk(e.X, fn)
	}
}

func (e *Logical) String() string   { return exprString(e) }
func (e *Not) String() string       { return exprString(e) }
func (e *BoolField) String() string { return exprString(e) }
func (e *Compare) String() string   { return exprString(e) }
func (e *InSet) String() string     { return exprString(e) }
func (e *InList) String() string    { return exprString(e) }
func (e *Contains) String() string  { return exprString(e) }

func exprString(e Expr) string {
	var b strings.Builder
	e.print(&b, 0)
	return b.String()
}

func (e *Logical) print(b *strings.Builder, minPrec int) {
	p := e.Op.prec()
	if p < minPrec {
		b.WriteByte('(')
	}
	e.X.print(b, p)
	b.WriteByte(' ')
	b.WriteString(e.Op.String())
	b.WriteByte(' ')
	e.Y.print(b, p+1)
	if p < minPrec {
		b.WriteByte(')')
	}
}

func (e *Not) print(b *strings.Builder, _ int) {
	b.WriteString("not ")
	e.X.print(b, precNot)
}

func (r *FieldRef) print(b *strings.Builder) {
	b.WriteString(r.Field.Name)
	if r.Masked {
		b.WriteString(" & 0x")
		b.WriteString(strconv.FormatUint(r.Mask, 16))
	}
}

func (e *BoolField) print(b *strings.Builder, _ int) { e.FieldRef.print(b) }

func (e *Compare) print(b *strings.Builder, _ int) {
	e.FieldRef.print(b)
	b.WriteByte(' ')
	b.WriteString(e.Op.String())
	b.WriteByte(' ')
	b.WriteString(e.Value.String())
}

func (e *InSet) print(b *strings.Builder, _ int) {
	e.FieldRef.print(b)
	b.WriteString(" in {")
	for i, el := range e.Elems {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(el.String())
	}
	b.WriteByte('}')
}

func (e *InList) print(b *strings.Builder, _ int) {
	e.FieldRef.print(b)
	b.WriteString(" in $")
	b.WriteString(e.Name)
}

func (e *Contains) print(b *strings.Builder, _ int) {
	e.FieldRef.print(b)
	b.WriteString(" contains ")
	b.WriteString(e.Value.String())
}

// String formats the literal in canonical syntax: decimal integers, a
// constant's name quoted, addresses without /length, strings quoted.
func (l Literal) String() string {
	switch l.Type {
	case TypeInt:
		if l.Name != "" {
			return quote(l.Name)
		}
		return strconv.FormatUint(l.Int, 10)
	case TypeIP:
		if l.Prefix.IsSingleIP() {
			return l.Prefix.Addr().String()
		}
		return l.Prefix.String()
	case TypeString, TypeVersion:
		return quote(l.Str)
	}
	return "<invalid>"
}

// String formats the element: "80", "10.0.0.0/8", "8000..8999".
func (e SetElem) String() string {
	if e.Range {
		return e.Lo.String() + ".." + e.Hi.String()
	}
	return e.Lo.String()
}
