package rules

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// testLists resolves the lists the tests use.
func testLists(t testing.TB) ListResolver {
	t.Helper()
	must := func(l *StaticList, err error) List {
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	m := map[string]List{
		"bad_ips":        must(NewList(TypeIP, "203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.7")),
		"admin_ports":    must(NewList(TypeInt, "22", "3389", "8000..8999")),
		"blocked_groups": must(NewList(TypeString, "contractors", "guests")),
		"cf.malware":     must(NewList(TypeIP, "192.0.2.66")),
	}
	return func(name string) (List, bool) {
		l, ok := m[name]
		return l, ok
	}
}

// sexpr prints e fully parenthesised, to show the tree's shape.
func sexpr(e Expr) string {
	switch e := e.(type) {
	case *Logical:
		return fmt.Sprintf("(%s %s %s)", e.Op, sexpr(e.X), sexpr(e.Y))
	case *Not:
		return fmt.Sprintf("(not %s)", sexpr(e.X))
	}
	return "[" + e.String() + "]"
}

// stripPos zeroes every position in e, so trees can be compared.
func stripPos(e Expr) {
	ref := func(r *FieldRef) { r.FieldPos = Pos{} }
	Walk(e, func(e Expr) bool {
		switch e := e.(type) {
		case *Logical:
			e.OpPos = Pos{}
		case *Not:
			e.NotPos = Pos{}
		case *BoolField:
			ref(&e.FieldRef)
		case *Compare:
			ref(&e.FieldRef)
			e.OpPos, e.Value.Pos = Pos{}, Pos{}
		case *InSet:
			ref(&e.FieldRef)
			e.InPos = Pos{}
			for i := range e.Elems {
				e.Elems[i].Lo.Pos, e.Elems[i].Hi.Pos = Pos{}, Pos{}
			}
		case *InList:
			ref(&e.FieldRef)
			e.InPos, e.ListPos = Pos{}, Pos{}
		case *Contains:
			ref(&e.FieldRef)
			e.OpPos, e.Value.Pos = Pos{}, Pos{}
		}
		return true
	})
}

// packet builds a firewall record from "field=value" pairs.
func packet(t testing.TB, desc string) *Record {
	t.Helper()
	s := FirewallSchema()
	r := NewRecord(s)
	for kv := range strings.FieldsSeq(desc) {
		name, val, _ := strings.Cut(kv, "=")
		f, ok := s.Field(name)
		if !ok {
			t.Fatalf("packet %q: unknown field %s", desc, name)
		}
		var v Value
		switch f.Type {
		case TypeBool:
			v = BoolValue(val == "true" || val == "")
		case TypeInt:
			var n uint64
			if _, err := fmt.Sscan(val, &n); err != nil {
				t.Fatalf("packet %q: %s: %v", desc, name, err)
			}
			v = IntValue(n)
		case TypeIP:
			v = IPValue(netip.MustParseAddr(val))
		case TypeString:
			v = StringValue(val)
		case TypeStrings:
			v = StringsValue(strings.Split(val, ",")...)
			if val == "" {
				v = StringsValue()
			}
		}
		if err := r.Set(name, v); err != nil {
			t.Fatalf("packet %q: %v", desc, err)
		}
	}
	return r
}
