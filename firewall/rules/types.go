package rules

import (
	"net/netip"
	"strconv"
)

// Type is the type of a field, a literal or a list element.
type Type uint8

// The types of the language.
const (
	TypeInvalid Type = iota
	TypeBool         // true or false; used alone as a condition
	TypeInt          // unsigned integer, at most 64 bits (see Field.Bits)
	TypeIP           // IPv4 or IPv6 address
	TypeString       // byte string
	TypeStrings      // array of strings, e.g. identity.groups
	// TypeVersion is a version string ("6.1.0-27-amd64") ordered as dotted
	// numbers by [Version.Compare]: ==, !=, <, <=, >, >= and in compare
	// versions, so "6.1" == "6.1.0" and "1.10" > "1.9". Literals must
	// parse as versions; a value that does not counts as absent.
	TypeVersion
)

// String returns the type's name as used in error messages.
func (t Type) String() string {
	switch t {
	case TypeBool:
		return "bool"
	case TypeInt:
		return "int"
	case TypeIP:
		return "IP"
	case TypeString:
		return "string"
	case TypeStrings:
		return "string array"
	case TypeVersion:
		return "version"
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// noun describes a value of the type for "expected …" messages.
func (t Type) noun() string {
	switch t {
	case TypeBool:
		return "boolean"
	case TypeInt:
		return "integer"
	case TypeIP:
		return "IP address"
	case TypeString, TypeStrings:
		return "string"
	case TypeVersion:
		return "version"
	}
	return t.String()
}

// Value is the value of one field of a packet or record, or an element
// passed to [List.Contains]. Only the member that matches Type is used.
// The zero Value has TypeInvalid and stands for an absent field.
type Value struct {
	Type Type
	Bool bool       // TypeBool
	Int  uint64     // TypeInt
	IP   netip.Addr // TypeIP
	Str  string     // TypeString, TypeVersion
	Strs []string   // TypeStrings
}

// BoolValue returns a TypeBool value.
func BoolValue(b bool) Value { return Value{Type: TypeBool, Bool: b} }

// IntValue returns a TypeInt value.
func IntValue(n uint64) Value { return Value{Type: TypeInt, Int: n} }

// IPValue returns a TypeIP value. An invalid address gives an absent value.
func IPValue(a netip.Addr) Value {
	if !a.IsValid() {
		return Value{}
	}
	return Value{Type: TypeIP, IP: a}
}

// StringValue returns a TypeString value.
func StringValue(s string) Value { return Value{Type: TypeString, Str: s} }

// VersionValue returns a TypeVersion value.
func VersionValue(s string) Value { return Value{Type: TypeVersion, Str: s} }

// StringsValue returns a TypeStrings value. The slice is not copied.
func StringsValue(ss ...string) Value { return Value{Type: TypeStrings, Strs: ss} }

// String formats the value in the language's literal syntax.
func (v Value) String() string {
	switch v.Type {
	case TypeBool:
		return strconv.FormatBool(v.Bool)
	case TypeInt:
		return strconv.FormatUint(v.Int, 10)
	case TypeIP:
		return v.IP.String()
	case TypeString, TypeVersion:
		return quote(v.Str)
	case TypeStrings:
		b := []byte{'{'}
		for i, s := range v.Strs {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, quote(s)...)
		}
		return string(append(b, '}'))
	}
	return "<absent>"
}
