package rules

import (
	"fmt"
	"net/netip"
	"testing"
)

// Packets for the evaluation table.
const (
	tcpSYN    = "ip.src=10.1.2.3 ip.dst=192.168.1.10 ip.proto=6 ip.len=60 ip.ttl=64 ip.hdr_len=5 tcp.srcport=40000 tcp.dstport=22 tcp.flags=2 tcp.flags.syn=true tcp.flags.ack=false tcp.flags.fin=false tcp.flags.reset=false tcp.flags.push=false tcp.flags.urg=false tcp.flags.ecn=false tcp.flags.cwr=false ingress=wan"
	tcpSYNACK = "ip.src=192.168.1.10 ip.dst=10.1.2.3 ip.proto=6 ip.len=60 ip.ttl=63 ip.hdr_len=5 tcp.srcport=22 tcp.dstport=40000 tcp.flags=18 tcp.flags.syn=true tcp.flags.ack=true tcp.flags.fin=false tcp.flags.reset=false tcp.flags.push=false tcp.flags.urg=false tcp.flags.ecn=false tcp.flags.cwr=false ingress=lan"
	udpDNS    = "ip.src=192.168.1.20 ip.dst=1.1.1.1 ip.proto=17 ip.len=70 ip.ttl=64 ip.hdr_len=5 udp.srcport=5353 udp.dstport=53 ingress=lan identity.email=ann@example.com identity.groups=eng,ops"
	geoTCP    = "ip.src=203.0.113.9 ip.dst=192.0.2.1 ip.proto=6 tcp.dstport=443 ip.src.country=KP ip.src.asnum=64512 ip.dst.country=GB"
	icmp6     = "ip.src=2001:db8:bad::1 ip.dst=2001:db8::2 ip.proto=58 ip.len=64 ip.ttl=255 icmp.type=128 icmp.code=0 ingress=wg0 identity.groups="
)

func TestEval(t *testing.T) {
	lists := testLists(t)
	tests := []struct {
		expr   string
		packet string
		want   bool
	}{
		// Comparisons.
		{"tcp.dstport == 22", tcpSYN, true},
		{"tcp.dstport eq 23", tcpSYN, false},
		{"tcp.dstport != 23", tcpSYN, true},
		{"tcp.dstport < 23", tcpSYN, true},
		{"tcp.dstport <= 22", tcpSYN, true},
		{"tcp.dstport > 22", tcpSYN, false},
		{"tcp.dstport >= 22", tcpSYN, true},
		{"ip.proto == tcp", tcpSYN, true},
		{`ip.proto == "udp"`, udpDNS, true},
		{"ip.proto == icmpv6", icmp6, true},
		{"ip.src == 10.1.2.3", tcpSYN, true},
		{"ip.src == 10.0.0.0/8", tcpSYN, true},
		{"ip.src != 10.0.0.0/8", tcpSYN, false},
		{"ip.src != 172.16.0.0/12", tcpSYN, true},
		{"ip.src > 10.1.2.2 and ip.src < 10.1.2.4", tcpSYN, true},
		{"ip.src == 2001:db8::/32", icmp6, true},
		{`ingress == "wan"`, tcpSYN, true},
		{`ingress != "wan"`, udpDNS, true},
		{`identity.email == "ann@example.com"`, udpDNS, true},
		// Sets.
		{"tcp.dstport in {80 443 8000..8999}", tcpSYN, false},
		{"tcp.dstport in {80 443 20..22}", tcpSYN, true},
		{"tcp.srcport in {80 443 8000..65535}", tcpSYN, true},
		{"ip.src in {10.0.0.0/8 192.168.1.1}", tcpSYN, true},
		{"ip.src in {10.1.2.0..10.1.2.2 ::/0}", tcpSYN, false},
		{"ip.src in {10.1.2.0..10.1.2.3}", tcpSYN, true},
		{"ip.src in {0.0.0.0/0}", icmp6, false},
		{"ip.src in {::/0}", icmp6, true},
		{`ingress in {"lan" "wg0"}`, udpDNS, true},
		{`identity.groups in {"ops" "sales"}`, udpDNS, true},
		{`identity.groups in {"sales"}`, udpDNS, false},
		{"ip.proto in {tcp udp}", udpDNS, true},
		// Lists.
		{"ip.src in $bad_ips", icmp6, true},
		{"ip.src in $bad_ips", tcpSYN, false},
		{"tcp.dstport in $admin_ports", tcpSYN, true},
		{"identity.groups in $blocked_groups", udpDNS, false},
		// contains.
		{`ingress contains "w"`, icmp6, true},
		{`ingress contains "x"`, icmp6, false},
		{`identity.groups contains "eng"`, udpDNS, true},
		{`identity.groups contains "en"`, udpDNS, false},
		{`identity.groups contains "eng"`, icmp6, false},
		// Bit tests and flags.
		{"tcp.flags & 0x02 != 0", tcpSYN, true},
		{"tcp.flags & 0x02", tcpSYN, true},
		{"tcp.flags & 0x10", tcpSYN, false},
		{"tcp.flags & 0x12 == 0x12", tcpSYNACK, true},
		{"tcp.flags & 0x12 in {0x02}", tcpSYNACK, false},
		{"tcp.flags.syn and not tcp.flags.ack", tcpSYN, true},
		{"tcp.flags.syn and not tcp.flags.ack", tcpSYNACK, false},
		// Logic.
		{"tcp.flags.syn xor tcp.flags.ack", tcpSYN, true},
		{"tcp.flags.syn ^^ tcp.flags.ack", tcpSYNACK, false},
		{"tcp.flags.fin or tcp.flags.syn and tcp.flags.ack", tcpSYN, false},
		{"(tcp.flags.fin or tcp.flags.syn) and not tcp.flags.ack", tcpSYN, true},
		{"tcp.flags.fin || tcp.flags.ack || ip.ttl == 64", tcpSYN, true},
		// Absent fields: every comparison is false, not negates.
		{"tcp.dstport == 53", udpDNS, false},
		{"tcp.dstport != 53", udpDNS, false},
		{"tcp.dstport < 65535", udpDNS, false},
		{"not tcp.dstport == 53", udpDNS, true},
		{"not tcp.dstport != 53", udpDNS, true},
		{"tcp.dstport in {0..65535}", udpDNS, false},
		{"tcp.dstport in $admin_ports", udpDNS, false},
		{"tcp.flags & 0xff == 0", udpDNS, false},
		{"tcp.flags.syn", udpDNS, false},
		{"not tcp.flags.syn", udpDNS, true},
		{"ip.hdr_len == 5", icmp6, false},
		{`identity.email contains ""`, tcpSYN, false},
		{`not identity.groups contains "eng"`, tcpSYN, true},
		{"udp.dstport == 53 or tcp.dstport == 53", udpDNS, true},
		// Address of the other family counts as absent.
		{"ip.src != 10.0.0.1", icmp6, false},
		{"ip.src != ::1", tcpSYN, false},
		{"ip.src < ::1", tcpSYN, false},
		{"not ip.src == ::1", tcpSYN, true},
		// Geo fields; absent without a database entry.
		{`ip.src.country in {"KP" "IR"}`, geoTCP, true},
		{`ip.src.country == "IR"`, geoTCP, false},
		{`ip.dst.country == "GB"`, geoTCP, true},
		{"ip.src.asnum == 64512", geoTCP, true},
		{"ip.src.asnum in {64512..65534 4200000000}", geoTCP, true},
		{"ip.dst.asnum == 64512", geoTCP, false},
		{"ip.dst.asnum != 64512", geoTCP, false},
		{"not ip.dst.asnum == 64512", geoTCP, true},
		{`ip.src.country != "KP"`, tcpSYN, false},
		{`not ip.src.country == "KP"`, tcpSYN, true},
	}
	for _, tt := range tests {
		p, err := Compile(tt.expr, FirewallSchema(), lists)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.expr, err)
			continue
		}
		r := packet(t, tt.packet)
		if got := p.Eval(r); got != tt.want {
			t.Errorf("%q on %s = %v, want %v", tt.expr, r, got, tt.want)
		}
		// The canonical form agrees.
		q, err := Compile(p.String(), FirewallSchema(), lists)
		if err != nil {
			t.Errorf("recompile %q: %v", p.String(), err)
		} else if q.Eval(r) != tt.want {
			t.Errorf("%q (canonical of %q) disagrees", p.String(), tt.expr)
		}
	}
}

// fields is a Values implementation other than Record.
type fields map[string]Value

func (m fields) Get(f *Field) (Value, bool) { v, ok := m[f.Name]; return v, ok }

func TestEvalWrongType(t *testing.T) {
	p, err := Compile("not tcp.dstport == 22", FirewallSchema(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A value of the wrong type counts as absent.
	if !p.Eval(fields{"tcp.dstport": StringValue("22")}) {
		t.Error("string value for an int field was not treated as absent")
	}
	if p.Eval(fields{"tcp.dstport": IntValue(22)}) {
		t.Error("int value ignored")
	}
}

func TestRecord(t *testing.T) {
	r := NewRecord(FirewallSchema())
	if err := r.Set("tcp.dstport", IntValue(70000)); err == nil {
		t.Error("out of range port accepted")
	}
	if err := r.Set("tcp.dstport", StringValue("x")); err == nil {
		t.Error("string for port accepted")
	}
	if err := r.Set("nope", IntValue(1)); err == nil {
		t.Error("unknown field accepted")
	}
	if err := r.Set("ip.src", IPValue(netip.MustParseAddr("fe80::1%eth0"))); err != nil {
		t.Fatal(err)
	}
	p, err := Compile("ip.src == fe80::1", FirewallSchema(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Eval(r) {
		t.Error("zone not ignored")
	}
	r.Clear("ip.src")
	if p.Eval(r) {
		t.Error("cleared field still present")
	}
	if got := fmt.Sprint(packet(t, "ip.src=10.0.0.1 tcp.dstport=22 tcp.flags.syn=true tcp.flags.ack=false")); got != "ip.src == 10.0.0.1 and tcp.dstport == 22 and tcp.flags.syn and not tcp.flags.ack" {
		t.Errorf("String = %q", got)
	}
}

func TestNewList(t *testing.T) {
	l, err := NewList(TypeIP, "10.0.0.0/8", "10.0.0.0/9", "192.168.0.1..192.168.0.9", "::/1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"10.200.0.1", true}, {"11.0.0.0", false}, {"192.168.0.9", true},
		{"192.168.0.10", false}, {"::1", true}, {"8000::", false},
	} {
		if got := l.Contains(IPValue(netip.MustParseAddr(tt.addr))); got != tt.want {
			t.Errorf("Contains(%s) = %v", tt.addr, got)
		}
	}
	if l.Contains(IntValue(1)) {
		t.Error("int in an IP list")
	}
	for _, bad := range [][]string{{"10.0.0.1/8"}, {"10.0.0.9..10.0.0.1"}, {"x"}, {"1.2.3.4 5"}, {""}} {
		if _, err := NewList(TypeIP, bad...); err == nil {
			t.Errorf("NewList(IP, %q) succeeded", bad)
		}
	}
	if _, err := NewList(TypeInt, "90..80"); err == nil {
		t.Error("empty int range accepted")
	}
	if _, err := NewList(TypeBool); err == nil {
		t.Error("bool list accepted")
	}
}

func TestSetMerge(t *testing.T) {
	p, err := Compile("tcp.dstport in {5..9 1..3 4 20 0xffff 65534 10..10}", FirewallSchema(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ix := p.Expr.(*InSet).idx
	if got := fmt.Sprint(ix.ints); got != "[{1 10} {20 20} {65534 65535}]" {
		t.Errorf("merged = %s", got)
	}
	for port, want := range map[uint64]bool{0: false, 1: true, 10: true, 11: false, 20: true, 21: false, 65535: true} {
		if ix.hasInt(port) != want {
			t.Errorf("hasInt(%d) != %v", port, want)
		}
	}
	p, err = Compile("ip.src in {::/0 ffff::1 0.0.0.0/1 128.0.0.0/1}", FirewallSchema(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ix = p.Expr.(*InSet).idx
	if len(ix.v4) != 1 || len(ix.v6) != 1 {
		t.Errorf("merged = %v %v", ix.v4, ix.v6)
	}
}

const benchRule = `ip.src in {10.0.0.0/8 172.16.0.0/12 192.168.0.0/16} and ip.proto == tcp and tcp.dstport in {22 80 443 8000..8999} and tcp.flags.syn and not tcp.flags.ack and not ip.dst in $bad_ips`

func TestEvalAllocs(t *testing.T) {
	p, err := Compile(benchRule, FirewallSchema(), testLists(t))
	if err != nil {
		t.Fatal(err)
	}
	r := packet(t, tcpSYN)
	if !p.Eval(r) {
		t.Fatal("benchmark rule does not match")
	}
	if n := testing.AllocsPerRun(100, func() { p.Eval(r) }); n != 0 {
		t.Errorf("Eval of a Record allocates %v times", n)
	}
	m := fields{}
	for _, f := range FirewallSchema().Fields() {
		if v, ok := r.Get(f); ok {
			m[f.Name] = v
		}
	}
	if !p.Eval(m) {
		t.Fatal("benchmark rule does not match the map")
	}
	if n := testing.AllocsPerRun(100, func() { p.Eval(m) }); n != 0 {
		t.Errorf("Eval of another Values allocates %v times", n)
	}
}

func BenchmarkEval(b *testing.B) {
	p, err := Compile(benchRule, FirewallSchema(), testLists(b))
	if err != nil {
		b.Fatal(err)
	}
	r := packet(b, tcpSYN)
	b.ReportAllocs()
	for b.Loop() {
		p.Eval(r)
	}
}

func BenchmarkCompile(b *testing.B) {
	lists := testLists(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(benchRule, FirewallSchema(), lists); err != nil {
			b.Fatal(err)
		}
	}
}

func TestGeoField(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		country bool
		ok      bool
	}{
		{"ip.src.country", "ip.src", true, true},
		{"ip.dst.country", "ip.dst", true, true},
		{"ip.src.asnum", "ip.src", false, true},
		{"ip.dst.asnum", "ip.dst", false, true},
		{"ip.src", "", false, false},
		{"identity.email", "", false, false},
	}
	for _, tt := range tests {
		addr, country, ok := GeoField(tt.name)
		if addr != tt.addr || country != tt.country || ok != tt.ok {
			t.Errorf("GeoField(%q) = %q, %v, %v; want %q, %v, %v", tt.name, addr, country, ok, tt.addr, tt.country, tt.ok)
		}
		if f, found := FirewallSchema().Field(tt.name); tt.ok && !found {
			t.Errorf("FirewallSchema has no field %q", tt.name)
		} else if tt.ok && f.Type != map[bool]Type{true: TypeString, false: TypeInt}[tt.country] {
			t.Errorf("field %q has type %v", tt.name, f.Type)
		}
	}
	if _, err := Compile("ip.src.asnum == 4294967296", FirewallSchema(), nil); err == nil {
		t.Error("ip.src.asnum == 2^32 compiled; want out of range")
	}
}
