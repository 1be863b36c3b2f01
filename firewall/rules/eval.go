package rules

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Values supplies the fields of one packet or record to [Program.Eval].
type Values interface {
	// Get returns the value of field f (a field of the program's schema)
	// and whether the packet has it. A value whose Type is not f.Type
	// counts as absent.
	Get(f *Field) (Value, bool)
}

// Record is a [Values] held in a slice indexed by [Field.Index]. The zero
// Record is not usable; make one with [NewRecord].
type Record struct {
	schema *Schema
	vals   []Value
}

// NewRecord returns a record of schema s with every field absent.
func NewRecord(s *Schema) *Record {
	return &Record{schema: s, vals: make([]Value, len(s.fields))}
}

// Set sets the named field, checking its type and, for integers, its range.
func (r *Record) Set(name string, v Value) error {
	f, ok := r.schema.Field(name)
	if !ok {
		return fmt.Errorf("unknown field %q", name)
	}
	if v.Type != f.Type {
		return fmt.Errorf("field %s: got %v value, want %v", name, v.Type, f.Type)
	}
	if v.Type == TypeInt && v.Int > f.Max() {
		return fmt.Errorf("field %s: %d out of range 0..%d", name, v.Int, f.Max())
	}
	if v.Type == TypeIP {
		v.IP = v.IP.WithZone("")
	}
	r.vals[f.index] = v
	return nil
}

// Clear makes the named field absent.
func (r *Record) Clear(name string) {
	if f, ok := r.schema.Field(name); ok {
		r.vals[f.index] = Value{}
	}
}

// Reset makes every field absent.
func (r *Record) Reset() { clear(r.vals) }

// Get implements [Values].
func (r *Record) Get(f *Field) (Value, bool) {
	if f.schema != r.schema {
		var ok bool
		if f, ok = r.schema.Field(f.Name); !ok {
			return Value{}, false
		}
	}
	v := r.vals[f.index]
	return v, v.Type != TypeInvalid
}

// String lists the present fields as a conjunction of equalities, e.g.
// `ip.src == 10.0.0.1 and tcp.dstport == 22`, booleans alone or with not,
// and string arrays as one contains per element.
func (r *Record) String() string {
	var parts []string
	for i, v := range r.vals {
		if v.Type == TypeInvalid {
			continue
		}
		name := r.schema.fields[i].Name
		switch v.Type {
		case TypeBool:
			if v.Bool {
				parts = append(parts, name)
			} else {
				parts = append(parts, "not "+name)
			}
		case TypeStrings:
			for _, x := range v.Strs {
				parts = append(parts, name+" contains "+StringValue(x).String())
			}
		default:
			parts = append(parts, name+" == "+v.String())
		}
	}
	return strings.Join(parts, " and ")
}

// get fetches the field's value, or nil if it is absent. Values held in a
// Record of the same schema are read in place; others are copied to buf.
func (r *FieldRef) get(vs Values, buf *Value) *Value {
	f := r.Field
	v := buf
	if rec, ok := vs.(*Record); ok && rec.schema == f.schema {
		v = &rec.vals[f.index]
	} else if *buf, ok = vs.Get(f); !ok {
		return nil
	}
	if v.Type != f.Type {
		return nil
	}
	return v
}

// int returns the masked integer value.
func (r *FieldRef) int(v *Value) uint64 {
	if r.Masked {
		return v.Int & r.Mask
	}
	return v.Int
}

func (e *Logical) eval(vs Values) bool {
	switch e.Op {
	case OpAnd:
		return e.X.eval(vs) && e.Y.eval(vs)
	case OpOr:
		return e.X.eval(vs) || e.Y.eval(vs)
	}
	return e.X.eval(vs) != e.Y.eval(vs)
}

func (e *Not) eval(vs Values) bool { return !e.X.eval(vs) }

func (e *BoolField) eval(vs Values) bool {
	var buf Value
	v := e.get(vs, &buf)
	return v != nil && v.Bool
}

func (e *Compare) eval(vs Values) bool {
	var buf Value
	v := e.get(vs, &buf)
	if v == nil {
		return false
	}
	var c int
	switch v.Type {
	case TypeInt:
		c = cmp.Compare(e.int(v), e.Value.Int)
	case TypeIP:
		a, p := v.IP.WithZone(""), e.Value.Prefix
		if a.Is4() != p.Addr().Is4() {
			return false // the other family: absent
		}
		switch e.Op {
		case OpEq:
			return p.Contains(a)
		case OpNe:
			return !p.Contains(a)
		}
		c = a.Compare(p.Addr())
	case TypeString:
		c = strings.Compare(v.Str, e.Value.Str)
	case TypeVersion:
		ver, err := ParseVersion(v.Str)
		if err != nil {
			return false // an unparsable version is no version: absent
		}
		c = ver.Compare(e.Value.Ver)
	default:
		return false
	}
	switch e.Op {
	case OpEq:
		return c == 0
	case OpNe:
		return c != 0
	case OpLt:
		return c < 0
	case OpLe:
		return c <= 0
	case OpGt:
		return c > 0
	case OpGe:
		return c >= 0
	}
	return false
}

func (e *InSet) eval(vs Values) bool {
	var buf Value
	v := e.get(vs, &buf)
	if v == nil {
		return false
	}
	if v.Type == TypeInt {
		return e.idx.hasInt(e.int(v))
	}
	return e.idx.contains(v)
}

func (e *InList) eval(vs Values) bool {
	var buf Value
	v := e.get(vs, &buf)
	if v == nil || e.List == nil {
		return false
	}
	switch v.Type {
	case TypeInt:
		return e.List.Contains(IntValue(e.int(v)))
	case TypeStrings:
		for _, s := range v.Strs {
			if e.List.Contains(StringValue(s)) {
				return true
			}
		}
		return false
	}
	return e.List.Contains(*v)
}

func (e *Contains) eval(vs Values) bool {
	var buf Value
	v := e.get(vs, &buf)
	if v == nil {
		return false
	}
	switch v.Type {
	case TypeString:
		return strings.Contains(v.Str, e.Value.Str)
	case TypeStrings:
		return slices.Contains(v.Strs, e.Value.Str)
	}
	return false
}

// setIndex answers membership for a set of integers, addresses or strings:
// sorted, merged, disjoint intervals searched by bisection, and a map for
// strings.
type setIndex struct {
	vers []Version // TypeVersion elements, searched in order (sets are short)
	ints []intRange
	v4   []addrRange
	v6   []addrRange
	strs map[string]struct{}
}

type intRange struct{ lo, hi uint64 }

type addrRange struct{ lo, hi netip.Addr }

func buildIndex(elems []SetElem) setIndex {
	var ix setIndex
	for _, el := range elems {
		switch el.Lo.Type {
		case TypeInt:
			lo, hi := el.IntBounds()
			ix.ints = append(ix.ints, intRange{lo, hi})
		case TypeIP:
			lo, hi := el.IPBounds()
			if lo.Is4() {
				ix.v4 = append(ix.v4, addrRange{lo, hi})
			} else {
				ix.v6 = append(ix.v6, addrRange{lo, hi})
			}
		case TypeVersion:
			ix.vers = append(ix.vers, el.Lo.Ver)
		case TypeString:
			if ix.strs == nil {
				ix.strs = make(map[string]struct{})
			}
			ix.strs[el.Lo.Str] = struct{}{}
		}
	}
	ix.ints = mergeInts(ix.ints)
	ix.v4 = mergeAddrs(ix.v4)
	ix.v6 = mergeAddrs(ix.v6)
	return ix
}

func mergeInts(rs []intRange) []intRange {
	slices.SortFunc(rs, func(a, b intRange) int { return cmp.Compare(a.lo, b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].hi == 1<<64-1 || r.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

func mergeAddrs(rs []addrRange) []addrRange {
	slices.SortFunc(rs, func(a, b addrRange) int { return a.lo.Compare(b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if next := last.hi.Next(); !next.IsValid() || r.lo.Compare(next) <= 0 {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

func (ix *setIndex) contains(v *Value) bool {
	switch v.Type {
	case TypeInt:
		return ix.hasInt(v.Int)
	case TypeIP:
		return ix.hasAddr(v.IP.WithZone(""))
	case TypeString:
		_, ok := ix.strs[v.Str]
		return ok
	case TypeVersion:
		ver, err := ParseVersion(v.Str)
		if err != nil {
			return false
		}
		for _, w := range ix.vers {
			if ver.Compare(w) == 0 {
				return true
			}
		}
		return false
	case TypeStrings:
		for _, s := range v.Strs {
			if _, ok := ix.strs[s]; ok {
				return true
			}
		}
	}
	return false
}

func (ix *setIndex) hasInt(x uint64) bool {
	rs := ix.ints
	lo, hi := 0, len(rs)
	for lo < hi { // first range with hi >= x
		m := int(uint(lo+hi) >> 1)
		if rs[m].hi < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(rs) && rs[lo].lo <= x
}

func (ix *setIndex) hasAddr(a netip.Addr) bool {
	rs := ix.v6
	if a.Is4() {
		rs = ix.v4
	}
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].hi.Less(a) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(rs) && rs[lo].lo.Compare(a) <= 0
}
