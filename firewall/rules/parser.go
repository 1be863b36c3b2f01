package rules

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// keywords are the word forms of operators; no field may be named so.
var keywords = map[string]bool{
	"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"in": true, "contains": true, "matches": true, "wildcard": true, "strict": true,
	"not": true, "and": true, "xor": true, "or": true, "bitwise_and": true,
}

var cmpOps = map[string]CmpOp{
	"==": OpEq, "eq": OpEq, "!=": OpNe, "ne": OpNe,
	"<": OpLt, "lt": OpLt, "<=": OpLe, "le": OpLe,
	">": OpGt, "gt": OpGt, ">=": OpGe, "ge": OpGe,
}

var logicalOps = map[string]LogicalOp{
	"or": OpOr, "||": OpOr, "xor": OpXor, "^^": OpXor, "and": OpAnd, "&&": OpAnd,
}

// ListResolver returns the named list (the name is written $name in an
// expression, and passed without the $), or false if there is none.
type ListResolver func(name string) (List, bool)

// Program is a compiled expression. It is immutable and safe for concurrent
// use.
type Program struct {
	// Expr is the typed syntax tree.
	Expr Expr
	// Source is the expression as passed to Compile.
	Source string
	// Schema is the schema it was compiled against.
	Schema *Schema
}

// String returns the expression in canonical syntax.
func (p *Program) String() string { return p.Expr.String() }

// Eval reports whether the packet or record v matches. It does not allocate
// unless v or a List does.
func (p *Program) Eval(v Values) bool { return p.Expr.eval(v) }

// Compile parses src and type-checks it against schema, resolving $lists
// with lists, which may be nil when no lists exist. On failure the error is
// an [ErrorList] of every error found; after a syntax error, checking stops.
func Compile(src string, schema *Schema, lists ListResolver) (*Program, error) {
	p := &parser{src: src, toks: lex(src), schema: schema, lists: lists}
	e := p.parse()
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return &Program{Expr: e, Source: src, Schema: schema}, nil
}

// MustCompile is like [Compile] but panics on error. It is for tests and
// for expressions fixed in the program.
func MustCompile(src string, schema *Schema, lists ListResolver) *Program {
	p, err := Compile(src, schema, lists)
	if err != nil {
		panic("rules: compile " + quote(src) + ":\n" + err.Error())
	}
	return p
}

type parser struct {
	src    string
	toks   []token
	i      int
	schema *Schema
	lists  ListResolver
	errs   ErrorList
	depth  int
}

// bailout is panicked on a syntax error and recovered by parse.
type bailout struct{}

// maxErrors is how many errors Compile reports before it gives up.
const maxErrors = 20

// maxDepth bounds nesting so that hostile input cannot exhaust the stack.
const maxDepth = 200

func (p *parser) parse() (e Expr) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(bailout); !ok {
				panic(r)
			}
			e = nil
		}
	}()
	if p.tok().kind == tokEOF {
		p.fail(p.tok().pos, "empty expression")
	}
	e = p.parseOr()
	if t := p.tok(); t.kind != tokEOF {
		if t.kind == tokPunct && t.text == ")" {
			p.fail(t.pos, "unexpected ) without (")
		}
		p.lowercase(t)
		p.fail(t.pos, "expected and, or, xor or end of expression, got %s", t.describe())
	}
	return e
}

func (p *parser) tok() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

// errorf records a type error and lets parsing go on.
func (p *parser) errorf(pos Pos, format string, args ...any) {
	start := strings.LastIndexByte(p.src[:pos.Offset], '\n') + 1
	end := strings.IndexByte(p.src[pos.Offset:], '\n')
	if end < 0 {
		end = len(p.src)
	} else {
		end += pos.Offset
	}
	line := strings.TrimSuffix(p.src[start:end], "\r")
	p.errs = append(p.errs, &Error{Line: pos.Line, Col: pos.Col, Msg: fmt.Sprintf(format, args...), text: line})
	if len(p.errs) >= maxErrors {
		p.errs = append(p.errs, &Error{Line: pos.Line, Col: pos.Col, Msg: "too many errors"})
		panic(bailout{})
	}
}

// fail records a syntax error and abandons the parse.
func (p *parser) fail(pos Pos, format string, args ...any) {
	p.errorf(pos, format, args...)
	panic(bailout{})
}

// lowercase fails on an operator keyword written in capitals.
func (p *parser) lowercase(t token) {
	if w := strings.ToLower(t.text); t.kind == tokIdent && w != t.text && keywords[w] {
		p.fail(t.pos, "keywords are lowercase: write %s", w)
	}
}

// check fails on a lexical error token.
func (p *parser) check() token {
	t := p.tok()
	if t.kind == tokError {
		p.fail(t.pos, "%s", t.text)
	}
	return t
}

// logicalOp returns the logical operator at the current token, if any.
func (p *parser) logicalOp() (LogicalOp, bool) {
	t := p.check()
	if t.kind != tokIdent && t.kind != tokPunct {
		return 0, false
	}
	op, ok := logicalOps[t.text]
	return op, ok
}

func (p *parser) parseBinary(op LogicalOp, operand func() Expr) Expr {
	x := operand()
	for {
		o, ok := p.logicalOp()
		if !ok || o != op {
			return x
		}
		t := p.next()
		x = &Logical{Op: op, OpPos: t.pos, X: x, Y: operand()}
	}
}

func (p *parser) parseOr() Expr  { return p.parseBinary(OpOr, p.parseXor) }
func (p *parser) parseXor() Expr { return p.parseBinary(OpXor, p.parseAnd) }
func (p *parser) parseAnd() Expr { return p.parseBinary(OpAnd, p.parseUnary) }

func (p *parser) parseUnary() Expr {
	p.depth++
	defer func() { p.depth-- }()
	t := p.check()
	if p.depth > maxDepth {
		p.fail(t.pos, "expression nested too deeply")
	}
	if t.kind == tokIdent && t.text == "not" || t.kind == tokPunct && t.text == "!" {
		p.next()
		return &Not{NotPos: t.pos, X: p.parseUnary()}
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() Expr {
	t := p.check()
	switch {
	case t.kind == tokPunct && t.text == "(":
		p.next()
		e := p.parseOr()
		if c := p.check(); c.kind != tokPunct || c.text != ")" {
			p.fail(c.pos, "expected ), got %s", c.describe())
		}
		p.next()
		return e
	case t.kind == tokIdent && !keywords[t.text]:
		return p.parseCondition()
	}
	p.fail(t.pos, "expected a field, not or (, got %s", t.describe())
	return nil
}

// parseCondition parses a field and what follows it.
func (p *parser) parseCondition() Expr {
	ft := p.next()
	ref := FieldRef{FieldPos: ft.pos}
	f, ok := p.schema.Field(ft.text)
	switch {
	case ok:
		ref.Field = f
	case keywords[strings.ToLower(ft.text)]:
		p.errorf(ft.pos, "keywords are lowercase: write %s", strings.ToLower(ft.text))
	default:
		if s := p.schema.closest(ft.text); s != "" {
			p.errorf(ft.pos, "unknown field %q (did you mean %q?)", ft.text, s)
		} else {
			p.errorf(ft.pos, "unknown field %q", ft.text)
		}
	}
	typ := TypeInvalid
	if f != nil {
		typ = f.Type
	}

	if t := p.check(); t.kind == tokPunct && t.text == "&" || t.kind == tokIdent && t.text == "bitwise_and" {
		p.next()
		m := p.check()
		if m.kind != tokInt {
			p.fail(m.pos, "expected an integer mask after &, got %s", m.describe())
		}
		p.next()
		ref.Masked, ref.Mask = true, m.val
		switch {
		case f == nil:
		case typ != TypeInt:
			p.errorf(t.pos, "operator & not valid for %v field %s", typ, f.Name)
		case m.val > f.Max():
			p.errorf(m.pos, "mask %s wider than %s (0..%#x)", m.src, f.Name, f.Max())
		}
	}

	opTok := p.check()
	p.lowercase(opTok)
	opText := ""
	if opTok.kind == tokIdent || opTok.kind == tokPunct {
		opText = opTok.text
	}
	opValid := func(valid bool) {
		if f != nil && !valid {
			p.errorf(opTok.pos, "operator %s not valid for %v field %s%s", opText, typ, f.Name, opHint(typ))
		}
	}

	if op, ok := cmpOps[opText]; ok {
		p.next()
		switch typ {
		case TypeInt, TypeVersion:
			opValid(true)
		case TypeIP, TypeString:
			opValid(op == OpEq || op == OpNe || typ == TypeIP)
		default:
			opValid(false)
		}
		vt := p.value()
		c := &Compare{FieldRef: ref, Op: op, OpPos: opTok.pos}
		if lit, ok := p.literal(f, vt); ok {
			c.Value = lit
			if typ == TypeIP && op != OpEq && op != OpNe && !lit.Prefix.IsSingleIP() {
				p.errorf(vt.pos, "operator %s needs an address, not a CIDR", opText)
			}
		}
		return c
	}

	switch opText {
	case "in":
		p.next()
		opValid(typ != TypeBool)
		if lt := p.check(); lt.kind == tokList {
			p.next()
			return p.inList(ref, opTok.pos, lt)
		}
		return p.inSet(ref, opTok.pos)
	case "contains":
		p.next()
		opValid(typ == TypeString || typ == TypeStrings)
		vt := p.value()
		c := &Contains{FieldRef: ref, OpPos: opTok.pos}
		if lit, ok := p.literal(f, vt); ok {
			c.Value = lit
		}
		return c
	case "matches", "~", "wildcard", "strict":
		p.fail(opTok.pos, "operator %s is not supported", opText)
	}

	// No operator: a boolean field, or a masked integer as a bit test.
	if ref.Masked {
		return &Compare{FieldRef: ref, Op: OpNe, OpPos: opTok.pos, Value: Literal{Pos: opTok.pos, Type: TypeInt}}
	}
	if f != nil && typ != TypeBool {
		p.errorf(ft.pos, "%v field %s cannot stand alone; compare it with a value", typ, f.Name)
	}
	return &BoolField{FieldRef: ref}
}

func opHint(t Type) string {
	switch t {
	case TypeBool:
		return " (use it alone, or with not)"
	case TypeString:
		return " (use ==, !=, in or contains)"
	case TypeStrings:
		return " (use contains or in)"
	case TypeVersion:
		return " (compare it with a quoted version: ==, !=, <, <=, >, >= or in)"
	}
	return ""
}

// value consumes one value token.
func (p *parser) value() token {
	t := p.check()
	switch t.kind {
	case tokInt, tokIP, tokString, tokIdent:
		if t.kind == tokIdent && keywords[t.text] {
			break
		}
		p.next()
		return t
	}
	p.fail(t.pos, "expected a value, got %s", t.describe())
	return t
}

// literal converts a value token to a literal of f's type, recording any
// error. f is nil for an unknown field.
func (p *parser) literal(f *Field, t token) (Literal, bool) {
	if f == nil {
		return Literal{}, false
	}
	lit := Literal{Pos: t.pos}
	switch f.Type {
	case TypeInt:
		lit.Type = TypeInt
		switch {
		case t.kind == tokInt:
			if t.val > f.Max() {
				p.errorf(t.pos, "%s %s out of range 0..%d", f.noun(), t.src, f.Max())
				return lit, false
			}
			lit.Int = t.val
			return lit, true
		case (t.kind == tokIdent || t.kind == tokString) && len(f.Consts) > 0:
			name := strings.ToLower(t.text)
			if v, ok := f.Consts[name]; ok {
				lit.Int, lit.Name = v, name
				return lit, true
			}
			msg := fmt.Sprintf("unknown %s %q", f.noun(), t.text)
			if s := closestConst(f, name); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.errorf(t.pos, "%s", msg)
			return lit, false
		}
	case TypeIP:
		lit.Type = TypeIP
		if t.kind == tokIP {
			if m := t.ip.Masked(); m != t.ip {
				p.errorf(t.pos, "CIDR %s has host bits set; use %s", t.src, m)
				return lit, false
			}
			if t.ip.Addr().Zone() != "" {
				p.errorf(t.pos, "IP address %s: zones are not allowed", t.src)
				return lit, false
			}
			lit.Prefix = t.ip
			return lit, true
		}
	case TypeString, TypeStrings:
		lit.Type = TypeString
		if t.kind == tokString {
			lit.Str = t.text
			return lit, true
		}
		if t.kind == tokIdent {
			p.errorf(t.pos, "expected %s, got %s (strings are quoted: %s)", f.noun(), t.describe(), quote(t.text))
			return lit, false
		}
	case TypeVersion:
		lit.Type = TypeVersion
		if t.kind == tokString {
			v, err := ParseVersion(t.text)
			if err != nil {
				p.errorf(t.pos, "expected %s: %v", f.noun(), err)
				return lit, false
			}
			lit.Str, lit.Ver = t.text, v
			return lit, true
		}
		if t.kind == tokIdent || t.kind == tokInt {
			p.errorf(t.pos, "expected %s, got %s (versions are quoted: %s)", f.noun(), t.describe(), quote(t.src))
			return lit, false
		}
	case TypeBool:
		return lit, false // the operator was already rejected
	}
	p.errorf(t.pos, "expected %s, got %s", f.noun(), t.describe())
	return lit, false
}

func closestConst(f *Field, name string) string {
	best, bestD := "", len(name)/2+2
	for _, k := range slices.Sorted(maps.Keys(f.Consts)) {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// inSet parses "{ elem … }" after in.
func (p *parser) inSet(ref FieldRef, inPos Pos) Expr {
	open := p.check()
	if open.kind != tokPunct || open.text != "{" {
		p.fail(open.pos, "expected { or $list after in, got %s", open.describe())
	}
	p.next()
	s := &InSet{FieldRef: ref, InPos: inPos}
	f := ref.Field
	valid := true
	for {
		if t := p.check(); t.kind == tokPunct && t.text == "}" {
			p.next()
			break
		} else if t.kind == tokEOF {
			p.fail(t.pos, "expected } to close the set at %d:%d", open.pos.Line, open.pos.Col)
		}
		lt := p.value()
		lo, ok := p.literal(f, lt)
		el := SetElem{Lo: lo}
		if t := p.check(); t.kind == tokPunct && t.text == ".." {
			p.next()
			ht := p.value()
			hi, hok := p.literal(f, ht)
			el.Range, el.Hi = true, hi
			if ok && hok {
				ok = p.checkRange(lt, ht, lo, hi)
			}
			ok = ok && hok
		}
		valid = valid && ok
		s.Elems = append(s.Elems, el)
	}
	if len(s.Elems) == 0 {
		p.errorf(open.pos, "empty set")
		valid = false
	}
	if valid && f != nil && f.Type != TypeBool {
		s.idx = buildIndex(s.Elems)
	}
	return s
}

func (p *parser) checkRange(lt, ht token, lo, hi Literal) bool {
	switch lo.Type {
	case TypeInt:
		if lo.Int > hi.Int {
			p.errorf(lt.pos, "empty range %s..%s; write %s..%s", lt.src, ht.src, ht.src, lt.src)
			return false
		}
		return true
	case TypeIP:
		for _, x := range []struct {
			t token
			l Literal
		}{{lt, lo}, {ht, hi}} {
			if !x.l.Prefix.IsSingleIP() {
				p.errorf(x.t.pos, "a range runs between addresses, not CIDRs")
				return false
			}
		}
		if lo.Prefix.Addr().Is4() != hi.Prefix.Addr().Is4() {
			p.errorf(lt.pos, "range %s..%s mixes IPv4 and IPv6", lt.src, ht.src)
			return false
		}
		if lo.Prefix.Addr().Compare(hi.Prefix.Addr()) > 0 {
			p.errorf(lt.pos, "empty range %s..%s; write %s..%s", lt.src, ht.src, ht.src, lt.src)
			return false
		}
		return true
	}
	p.errorf(lt.pos, "ranges are only for integers and IP addresses")
	return false
}

// inList resolves "$name" after in.
func (p *parser) inList(ref FieldRef, inPos Pos, lt token) Expr {
	e := &InList{FieldRef: ref, InPos: inPos, ListPos: lt.pos, Name: lt.text}
	var l List
	ok := false
	if p.lists != nil {
		l, ok = p.lists(lt.text)
	}
	if !ok || l == nil {
		p.errorf(lt.pos, "unknown list $%s", lt.text)
		return e
	}
	e.List, e.ElemType = l, l.ElemType()
	f := ref.Field
	if f == nil || f.Type == TypeBool {
		return e
	}
	want := f.Type
	if want == TypeStrings {
		want = TypeString
	}
	if e.ElemType != want {
		p.errorf(lt.pos, "list $%s holds %v values, but %s is %v", lt.text, e.ElemType, f.Name, f.Type)
	}
	return e
}
