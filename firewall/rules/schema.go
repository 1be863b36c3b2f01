package rules

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Field describes one field of a schema.
type Field struct {
	// Name is the dotted name used in expressions, e.g. "tcp.dstport".
	Name string
	// Type is the field's type.
	Type Type
	// Bits is the width of a TypeInt field: values range over
	// 0..2^Bits-1. Zero means 64.
	Bits uint8
	// Noun names the field's values in error messages, e.g. "port number"
	// in `expected port number, got "abc"`. Empty means the type's noun.
	Noun string
	// Consts names values of a TypeInt field, e.g. "tcp" → 6 for
	// ip.proto. A name may be written bare or quoted in place of the number.
	Consts map[string]uint64

	index  int
	schema *Schema
}

// Index returns the field's position in its schema, 0..len(Schema.Fields())-1,
// for [Values] implementations that keep values in a slice.
func (f *Field) Index() int { return f.index }

// Max returns the largest value of a TypeInt field.
func (f *Field) Max() uint64 {
	if f.Bits == 0 || f.Bits >= 64 {
		return 1<<64 - 1
	}
	return 1<<f.Bits - 1
}

func (f *Field) noun() string {
	if f.Noun != "" {
		return f.Noun
	}
	return f.Type.noun()
}

// constName returns the name of constant n, if the field has one.
func (f *Field) constName(n uint64) string {
	for _, k := range slices.Sorted(maps.Keys(f.Consts)) {
		if f.Consts[k] == n {
			return k
		}
	}
	return ""
}

// Schema is an immutable set of fields, safe for concurrent use. The *Field
// values it hands out are shared and must not be modified.
type Schema struct {
	fields []*Field
	byName map[string]*Field
}

// NewSchema returns a schema of the given fields. Names must be unique and
// well-formed (lowercase words of letters, digits and '_' joined by dots),
// and types valid.
func NewSchema(fields ...Field) (*Schema, error) {
	s := &Schema{byName: make(map[string]*Field, len(fields))}
	for i, f := range fields {
		if !validFieldName(f.Name) {
			return nil, fmt.Errorf("field %q: invalid name", f.Name)
		}
		if keywords[f.Name] {
			return nil, fmt.Errorf("field %q: name is a keyword", f.Name)
		}
		if f.Type < TypeBool || f.Type > TypeVersion {
			return nil, fmt.Errorf("field %q: invalid type %v", f.Name, f.Type)
		}
		if _, dup := s.byName[f.Name]; dup {
			return nil, fmt.Errorf("field %q: defined twice", f.Name)
		}
		if len(f.Consts) > 0 && f.Type != TypeInt {
			return nil, fmt.Errorf("field %q: constants on a %v field", f.Name, f.Type)
		}
		nf := f
		nf.Consts = make(map[string]uint64, len(f.Consts))
		for k, v := range f.Consts {
			if k == "" || k != strings.ToLower(k) {
				return nil, fmt.Errorf("field %q: constant %q must be lowercase", f.Name, k)
			}
			if v > nf.Max() {
				return nil, fmt.Errorf("field %q: constant %q = %d out of range", f.Name, k, v)
			}
			nf.Consts[k] = v
		}
		nf.index, nf.schema = i, s
		s.fields = append(s.fields, &nf)
		s.byName[nf.Name] = &nf
	}
	return s, nil
}

// Field returns the named field.
func (s *Schema) Field(name string) (*Field, bool) {
	f, ok := s.byName[name]
	return f, ok
}

// Fields returns the schema's fields in definition order; Fields()[i].Index() == i.
func (s *Schema) Fields() []*Field { return slices.Clone(s.fields) }

// closest returns the known field name nearest to name, or "".
func (s *Schema) closest(name string) string {
	best, bestD := "", len(name)/2+2
	for _, f := range s.fields {
		if abs(len(f.Name)-len(name)) > bestD {
			continue // the distance is at least the difference in length
		}
		if d := editDistance(name, f.Name); d < bestD || d == bestD && f.Name < best {
			best, bestD = f.Name, d
		}
	}
	return best
}

func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for part := range strings.SplitSeq(name, ".") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'a' && c <= 'z' || c == '_' || c >= '0' && c <= '9' && i > 0) {
				return false
			}
		}
	}
	return true
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// Closest returns the candidate nearest to name by edit distance, ignoring
// case, if one is within two edits: for "did you mean" hints on field
// names, list names and configuration keys alike. Ties go to the
// alphabetically first candidate.
func Closest(name string, candidates []string) (string, bool) {
	best, bestD := "", 3
	lower := strings.ToLower(name)
	for _, c := range candidates {
		if d := editDistance(lower, strings.ToLower(c)); d < bestD || d == bestD && c < best {
			best, bestD = c, d
		}
	}
	return best, best != ""
}

// editDistance is the Levenshtein distance between a and b in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// IP protocol numbers accepted by name for ip.proto.
var ipProtoNames = map[string]uint64{
	"icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17,
	"dccp": 33, "ipv6": 41, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51,
	"icmpv6": 58, "ipv6-icmp": 58, "ospf": 89, "pim": 103, "vrrp": 112,
	"l2tp": 115, "sctp": 132, "udplite": 136,
}

// FirewallSchema returns the schema of firewall rules. Integer fields carry
// the width of the header field they match, so out-of-range values are
// rejected at compile time:
//
//	ip.src, ip.dst        IP      source/destination address, IPv4 or IPv6
//	ip.proto              8 bits  IP protocol (IPv6: the transport protocol);
//	                              also by name: tcp, udp, icmp, icmpv6, gre, …
//	ip.len                16 bits IPv4 total length / IPv6 payload length
//	ip.ttl                8 bits  IPv4 TTL / IPv6 hop limit
//	ip.hdr_len            4 bits  IPv4 header length in 32-bit words (IPv4 only)
//	tcp.srcport, dstport  16 bits TCP ports (TCP only)
//	tcp.flags             8 bits  TCP flags byte, CWR=0x80 … FIN=0x01 (TCP only)
//	tcp.flags.fin … cwr   bool    one TCP flag (TCP only)
//	udp.srcport, dstport  16 bits UDP ports (UDP only)
//	icmp.type, icmp.code  8 bits  ICMP or ICMPv6 type and code
//	ingress               string  name of the interface or tunnel the packet came in on
//	identity.email        string  the user behind the source address
//	identity.groups       strings that user's groups
//	ip.src.country,       string  ISO 3166-1 alpha-2 code (upper case, "GB") of
//	ip.dst.country                the address's country in the GeoIP database
//	ip.src.asnum,         32 bits number of the autonomous system announcing
//	ip.dst.asnum                  the address, from the GeoIP database
//	device.posture.*              the posture of the device behind the source
//	                              address (see [Posture]); like identity.*, they
//	                              hold only for enrolled devices that reported
//
// The geo fields (ip.src.country … ip.dst.asnum) are absent for an address
// the database does not hold, and without a database.
//
// The returned schema is shared; schemas are immutable.
func FirewallSchema() *Schema { return firewallSchema() }

var firewallSchema = sync.OnceValue(func() *Schema {
	port := func(name string) Field {
		return Field{Name: name, Type: TypeInt, Bits: 16, Noun: "port number"}
	}
	flag := func(name string) Field {
		return Field{Name: "tcp.flags." + name, Type: TypeBool}
	}
	fields := append([]Field{
		Field{Name: "ip.src", Type: TypeIP},
		Field{Name: "ip.dst", Type: TypeIP},
		Field{Name: "ip.proto", Type: TypeInt, Bits: 8, Noun: "protocol", Consts: ipProtoNames},
		Field{Name: "ip.len", Type: TypeInt, Bits: 16, Noun: "length"},
		Field{Name: "ip.ttl", Type: TypeInt, Bits: 8, Noun: "TTL"},
		Field{Name: "ip.hdr_len", Type: TypeInt, Bits: 4, Noun: "header length"},
		port("tcp.srcport"),
		port("tcp.dstport"),
		Field{Name: "tcp.flags", Type: TypeInt, Bits: 8, Noun: "TCP flags"},
		flag("fin"), flag("syn"), flag("reset"), flag("push"),
		flag("ack"), flag("urg"), flag("ecn"), flag("cwr"),
		port("udp.srcport"),
		port("udp.dstport"),
		Field{Name: "icmp.type", Type: TypeInt, Bits: 8, Noun: "ICMP type"},
		Field{Name: "icmp.code", Type: TypeInt, Bits: 8, Noun: "ICMP code"},
		Field{Name: "ingress", Type: TypeString, Noun: "interface name"},
		Field{Name: "identity.email", Type: TypeString, Noun: "email address"},
		Field{Name: "identity.groups", Type: TypeStrings, Noun: "group name"},
		Field{Name: "ip.src.country", Type: TypeString, Noun: "country code"},
		Field{Name: "ip.dst.country", Type: TypeString, Noun: "country code"},
		Field{Name: "ip.src.asnum", Type: TypeInt, Bits: 32, Noun: "AS number"},
		Field{Name: "ip.dst.asnum", Type: TypeInt, Bits: 32, Noun: "AS number"},
	}, PostureFields()...)
	s, err := NewSchema(fields...)
	if err != nil {
		panic("rules: firewall schema: " + err.Error())
	}
	return s
})

// GeoField tells whether name is one of the geo fields of
// [FirewallSchema] and which address it describes: "ip.src" or "ip.dst",
// and whether it is the country (else the AS number).
func GeoField(name string) (addr string, country, ok bool) {
	switch name {
	case "ip.src.country":
		return "ip.src", true, true
	case "ip.dst.country":
		return "ip.dst", true, true
	case "ip.src.asnum":
		return "ip.src", false, true
	case "ip.dst.asnum":
		return "ip.dst", false, true
	}
	return "", false, false
}

// TCPFlagBit returns the bit in tcp.flags that the boolean field name of
// [FirewallSchema] (tcp.flags.fin … tcp.flags.cwr) stands for.
func TCPFlagBit(name string) (uint8, bool) {
	switch name {
	case "tcp.flags.fin":
		return 0x01, true
	case "tcp.flags.syn":
		return 0x02, true
	case "tcp.flags.reset":
		return 0x04, true
	case "tcp.flags.push":
		return 0x08, true
	case "tcp.flags.ack":
		return 0x10, true
	case "tcp.flags.urg":
		return 0x20, true
	case "tcp.flags.ecn":
		return 0x40, true
	case "tcp.flags.cwr":
		return 0x80, true
	}
	return 0, false
}
