package rules

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	lists := testLists(t)
	tests := []struct {
		src   string
		shape string // sexpr of the tree
	}{
		// Comparison operators, symbol and word forms, normalised to symbols.
		{"tcp.dstport == 22", "[tcp.dstport == 22]"},
		{"tcp.dstport eq 22", "[tcp.dstport == 22]"},
		{"tcp.dstport != 22", "[tcp.dstport != 22]"},
		{"tcp.dstport ne 22", "[tcp.dstport != 22]"},
		{"ip.len < 100", "[ip.len < 100]"},
		{"ip.len lt 100", "[ip.len < 100]"},
		{"ip.len <= 100", "[ip.len <= 100]"},
		{"ip.len le 100", "[ip.len <= 100]"},
		{"ip.len > 100", "[ip.len > 100]"},
		{"ip.len gt 100", "[ip.len > 100]"},
		{"ip.len >= 100", "[ip.len >= 100]"},
		{"ip.len ge 100", "[ip.len >= 100]"},
		{"ip.ttl==0x40", "[ip.ttl == 64]"},
		{"ip.src >= 10.0.0.1", "[ip.src >= 10.0.0.1]"},
		// Constants by name, bare or quoted.
		{"ip.proto == tcp", `[ip.proto == "tcp"]`},
		{`ip.proto == "UDP"`, `[ip.proto == "udp"]`},
		{"ip.proto in {tcp 17 \"icmp\"}", `[ip.proto in {"tcp" 17 "icmp"}]`},
		// Sets: values, ranges, CIDRs, strings.
		{"tcp.dstport in {80 443 8000..8999}", "[tcp.dstport in {80 443 8000..8999}]"},
		{"ip.src in {10.0.0.0/8 192.168.1.1}", "[ip.src in {10.0.0.0/8 192.168.1.1}]"},
		{"ip.src in {10.0.0.1/32 ::1/128 2001:db8::/32}", "[ip.src in {10.0.0.1 ::1 2001:db8::/32}]"},
		{"ip.src in {10.0.0.1..10.0.0.9 fe80::1..fe80::ff}", "[ip.src in {10.0.0.1..10.0.0.9 fe80::1..fe80::ff}]"},
		{`ingress in {"wan" "wg0"}`, `[ingress in {"wan" "wg0"}]`},
		{`identity.groups in {"eng" "ops"}`, `[identity.groups in {"eng" "ops"}]`},
		// Lists.
		{"ip.src in $bad_ips", "[ip.src in $bad_ips]"},
		{"ip.dst in $cf.malware", "[ip.dst in $cf.malware]"},
		{"tcp.dstport in $admin_ports", "[tcp.dstport in $admin_ports]"},
		{"identity.groups in $blocked_groups", "[identity.groups in $blocked_groups]"},
		// contains.
		{`ingress contains "gre"`, `[ingress contains "gre"]`},
		{`identity.groups contains "eng"`, `[identity.groups contains "eng"]`},
		// Strings and escapes.
		{`identity.email == "a\"b\\c\n\t\r\x00é"`, `[identity.email == "a\"b\\c\n\t\r\x00é"]`},
		// Bit tests.
		{"tcp.flags & 0x02 != 0", "[tcp.flags & 0x2 != 0]"},
		{"tcp.flags & 0x02", "[tcp.flags & 0x2 != 0]"},
		{"tcp.flags bitwise_and 0x12 == 0x12", "[tcp.flags & 0x12 == 18]"},
		{"tcp.flags & 0x12 in {0x02 0x12}", "[tcp.flags & 0x12 in {2 18}]"},
		{"tcp.flags&2&&ip.ttl<3", "(and [tcp.flags & 0x2 != 0] [ip.ttl < 3])"},
		// Boolean fields.
		{"tcp.flags.syn", "[tcp.flags.syn]"},
		{"not tcp.flags.ack", "(not [tcp.flags.ack])"},
		{"!tcp.flags.ack", "(not [tcp.flags.ack])"},
		{"!!tcp.flags.ack", "(not (not [tcp.flags.ack]))"},
		// Logical operators and precedence: not > and > xor > or.
		{"tcp.flags.syn and tcp.flags.ack", "(and [tcp.flags.syn] [tcp.flags.ack])"},
		{"tcp.flags.syn && tcp.flags.ack", "(and [tcp.flags.syn] [tcp.flags.ack])"},
		{"tcp.flags.syn xor tcp.flags.ack", "(xor [tcp.flags.syn] [tcp.flags.ack])"},
		{"tcp.flags.syn ^^ tcp.flags.ack", "(xor [tcp.flags.syn] [tcp.flags.ack])"},
		{"tcp.flags.syn or tcp.flags.ack", "(or [tcp.flags.syn] [tcp.flags.ack])"},
		{"tcp.flags.syn || tcp.flags.ack", "(or [tcp.flags.syn] [tcp.flags.ack])"},
		{"tcp.flags.fin or tcp.flags.syn and tcp.flags.ack", "(or [tcp.flags.fin] (and [tcp.flags.syn] [tcp.flags.ack]))"},
		{"tcp.flags.fin and tcp.flags.syn or tcp.flags.ack", "(or (and [tcp.flags.fin] [tcp.flags.syn]) [tcp.flags.ack])"},
		{"tcp.flags.fin xor tcp.flags.syn and tcp.flags.ack", "(xor [tcp.flags.fin] (and [tcp.flags.syn] [tcp.flags.ack]))"},
		{"tcp.flags.fin or tcp.flags.syn xor tcp.flags.ack", "(or [tcp.flags.fin] (xor [tcp.flags.syn] [tcp.flags.ack]))"},
		{"not tcp.flags.fin and tcp.flags.syn", "(and (not [tcp.flags.fin]) [tcp.flags.syn])"},
		{"not tcp.dstport == 22", "(not [tcp.dstport == 22])"},
		{"not (tcp.flags.fin and tcp.flags.syn)", "(not (and [tcp.flags.fin] [tcp.flags.syn]))"},
		{"tcp.flags.fin and tcp.flags.syn and tcp.flags.ack", "(and (and [tcp.flags.fin] [tcp.flags.syn]) [tcp.flags.ack])"},
		{"tcp.flags.fin and (tcp.flags.syn and tcp.flags.ack)", "(and [tcp.flags.fin] (and [tcp.flags.syn] [tcp.flags.ack]))"},
		{"(tcp.flags.fin or tcp.flags.syn) and tcp.flags.ack", "(and (or [tcp.flags.fin] [tcp.flags.syn]) [tcp.flags.ack])"},
		{"((tcp.flags.fin))", "[tcp.flags.fin]"},
		{"tcp.flags.fin\n\tand\r\n tcp.flags.syn", "(and [tcp.flags.fin] [tcp.flags.syn])"},
	}
	for _, tt := range tests {
		p, err := Compile(tt.src, FirewallSchema(), lists)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.src, err)
			continue
		}
		if got := sexpr(p.Expr); got != tt.shape {
			t.Errorf("Compile(%q)\n got %s\nwant %s", tt.src, got, tt.shape)
		}
		// The canonical form compiles to the same tree.
		q, err := Compile(p.String(), FirewallSchema(), lists)
		if err != nil {
			t.Errorf("recompile %q: %v", p.String(), err)
			continue
		}
		stripPos(p.Expr)
		stripPos(q.Expr)
		if !reflect.DeepEqual(p.Expr, q.Expr) {
			t.Errorf("recompile of %q (%q) differs", tt.src, p.String())
		}
	}
}

func TestCanonicalString(t *testing.T) {
	tests := []struct{ src, want string }{
		{"tcp.flags.fin || tcp.flags.syn && !tcp.flags.ack", "tcp.flags.fin or tcp.flags.syn and not tcp.flags.ack"},
		{"(tcp.flags.fin || tcp.flags.syn) && tcp.flags.ack", "(tcp.flags.fin or tcp.flags.syn) and tcp.flags.ack"},
		{"tcp.flags.fin and (tcp.flags.syn and tcp.flags.ack)", "tcp.flags.fin and (tcp.flags.syn and tcp.flags.ack)"},
		{"not (not tcp.flags.fin)", "not not tcp.flags.fin"},
		{"tcp.flags.fin xor (tcp.flags.syn or tcp.flags.ack)", "tcp.flags.fin xor (tcp.flags.syn or tcp.flags.ack)"},
		{"ip.src eq 10.0.0.0/8", "ip.src == 10.0.0.0/8"},
	}
	for _, tt := range tests {
		p, err := Compile(tt.src, FirewallSchema(), nil)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tt.src, err)
		}
		if got := p.String(); got != tt.want {
			t.Errorf("Compile(%q).String() = %q, want %q", tt.src, got, tt.want)
		}
	}
}

func TestPositions(t *testing.T) {
	p, err := Compile("tcp.flags.syn and\n  ip.src in {10.0.0.0/8}", FirewallSchema(), nil)
	if err != nil {
		t.Fatal(err)
	}
	and := p.Expr.(*Logical)
	if got, want := and.OpPos, (Pos{Offset: 14, Line: 1, Col: 15}); got != want {
		t.Errorf("and at %+v, want %+v", got, want)
	}
	in := and.Y.(*InSet)
	if got, want := in.Pos(), (Pos{Offset: 20, Line: 2, Col: 3}); got != want {
		t.Errorf("ip.src at %+v, want %+v", got, want)
	}
	if got, want := in.Elems[0].Lo.Pos, (Pos{Offset: 31, Line: 2, Col: 14}); got != want {
		t.Errorf("10.0.0.0/8 at %+v, want %+v", got, want)
	}
	lo, hi := in.Elems[0].IPBounds()
	if lo.String() != "10.0.0.0" || hi.String() != "10.255.255.255" {
		t.Errorf("IPBounds = %v, %v", lo, hi)
	}
}

func TestSchemaErrors(t *testing.T) {
	for _, f := range []Field{
		{Name: "", Type: TypeInt},
		{Name: "Ip.src", Type: TypeIP},
		{Name: "ip..src", Type: TypeIP},
		{Name: "in", Type: TypeBool},
		{Name: "x", Type: TypeInvalid},
		{Name: "x", Type: TypeString, Consts: map[string]uint64{"a": 1}},
		{Name: "x", Type: TypeInt, Bits: 4, Consts: map[string]uint64{"a": 16}},
	} {
		if _, err := NewSchema(f); err == nil {
			t.Errorf("NewSchema(%+v) succeeded", f)
		}
	}
	if _, err := NewSchema(Field{Name: "a", Type: TypeInt}, Field{Name: "a", Type: TypeInt}); err == nil {
		t.Error("NewSchema with a duplicate succeeded")
	}
}

// TestOtherSchema compiles against a DNS-policy-like schema, showing the
// schema is a parameter.
func TestOtherSchema(t *testing.T) {
	s, err := NewSchema(
		Field{Name: "dns.fqdn", Type: TypeString, Noun: "domain name"},
		Field{Name: "dns.domains", Type: TypeStrings, Noun: "domain name"},
		Field{Name: "dns.qtype", Type: TypeInt, Bits: 16, Noun: "query type",
			Consts: map[string]uint64{"a": 1, "aaaa": 28, "txt": 16}},
		Field{Name: "dns.src_ip", Type: TypeIP},
		Field{Name: "identity.groups", Type: TypeStrings},
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(`dns.domains contains "example.com" and dns.qtype in {a aaaa} and not identity.groups contains "admins"`, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecord(s)
	for _, kv := range []struct {
		name string
		v    Value
	}{
		{"dns.fqdn", StringValue("www.example.com")},
		{"dns.domains", StringsValue("www.example.com", "example.com", "com")},
		{"dns.qtype", IntValue(28)},
		{"identity.groups", StringsValue("eng")},
	} {
		if err := r.Set(kv.name, kv.v); err != nil {
			t.Fatal(err)
		}
	}
	if !p.Eval(r) {
		t.Errorf("%s: false for %s", p, r)
	}
	if _, err := Compile("ip.src == 10.0.0.1", s, nil); err == nil {
		t.Error("firewall field accepted by the DNS schema")
	}
}

func TestMustCompile(t *testing.T) {
	if MustCompile("tcp.flags.syn", FirewallSchema(), nil) == nil {
		t.Fatal("nil program")
	}
	defer func() {
		if recover() == nil {
			t.Error("MustCompile did not panic")
		}
	}()
	MustCompile("tcp.flags.syn ==", FirewallSchema(), nil)
}
