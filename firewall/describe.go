package firewall

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/edgegw/edgegw/firewall/rules"
)

// ParsePacket reads a packet description for `edgegw firewall test`: fields
// of rules.FirewallSchema set with == and joined by and, such as
// `ip.src == 10.0.0.9 and tcp.dstport == 22`. A flag stands alone
// (tcp.flags.syn) or negated (not tcp.flags.ack); identity.groups takes
// `contains "group"`, once per group.
//
// The description is completed the way the kernel would see such a
// packet: a TCP, UDP or ICMP field implies ip.proto (ICMPv6 when an
// address is IPv6), and a TCP packet has all its flags, 0 where not given
// (tcp.flags and the tcp.flags.* fields agree). Contradictions are errors.
func ParsePacket(desc string) (*rules.Record, error) {
	prog, err := rules.Compile(desc, rules.FirewallSchema(), nil)
	if err != nil {
		return nil, err
	}
	d := packetDesc{rec: rules.NewRecord(rules.FirewallSchema()), set: map[string]rules.Value{}}
	if err := d.walk(prog.Expr); err != nil {
		return nil, err
	}
	if err := d.complete(); err != nil {
		return nil, err
	}
	return d.rec, nil
}

type packetDesc struct {
	rec    *rules.Record
	set    map[string]rules.Value
	groups []string
}

var errDescShape = errors.New("a packet is described by field == value conditions joined by and (flags alone or with not; identity.groups contains \"group\")")

func (d *packetDesc) put(pos rules.Pos, name string, v rules.Value) error {
	if old, ok := d.set[name]; ok {
		return fmt.Errorf("%d:%d: %s is given twice (%s and %s)", pos.Line, pos.Col, name, old, v)
	}
	d.set[name] = v
	return d.rec.Set(name, v)
}

func (d *packetDesc) walk(e rules.Expr) error {
	switch e := e.(type) {
	case *rules.Logical:
		if e.Op != rules.OpAnd {
			return fmt.Errorf("%d:%d: %s joins conditions: %w", e.OpPos.Line, e.OpPos.Col, e.Op, errDescShape)
		}
		if err := d.walk(e.X); err != nil {
			return err
		}
		return d.walk(e.Y)
	case *rules.BoolField:
		return d.put(e.FieldPos, e.Field.Name, rules.BoolValue(true))
	case *rules.Not:
		if b, ok := e.X.(*rules.BoolField); ok {
			return d.put(b.FieldPos, b.Field.Name, rules.BoolValue(false))
		}
	case *rules.Contains:
		if e.Field.Name == "identity.groups" {
			d.groups = append(d.groups, e.Value.Str)
			return d.rec.Set("identity.groups", rules.StringsValue(d.groups...))
		}
	case *rules.Compare:
		if e.Op != rules.OpEq || e.Masked || e.Field.Type == rules.TypeStrings {
			break
		}
		var v rules.Value
		switch e.Value.Type {
		case rules.TypeInt:
			v = rules.IntValue(e.Value.Int)
		case rules.TypeString:
			v = rules.StringValue(e.Value.Str)
		case rules.TypeVersion:
			v = rules.VersionValue(e.Value.Str)
		case rules.TypeIP:
			p := e.Value.Prefix
			if !p.IsSingleIP() {
				return fmt.Errorf("%d:%d: %s == %s: a packet has one address, not a network", e.FieldPos.Line, e.FieldPos.Col, e.Field.Name, p)
			}
			v = rules.IPValue(p.Addr())
		}
		return d.put(e.FieldPos, e.Field.Name, v)
	}
	p := e.Pos()
	return fmt.Errorf("%d:%d: %s: %w", p.Line, p.Col, e, errDescShape)
}

var tcpFlagNames = []string{"fin", "syn", "reset", "push", "ack", "urg", "ecn", "cwr"}

// complete fills the fields implied by those given.
func (d *packetDesc) complete() error {
	src, hasSrc := d.set["ip.src"]
	dst, hasDst := d.set["ip.dst"]
	if hasSrc && hasDst && src.IP.Is4() != dst.IP.Is4() {
		return fmt.Errorf("ip.src %s and ip.dst %s are of different families", src, dst)
	}
	v6 := (hasSrc && src.IP.Is6()) || (hasDst && dst.IP.Is6())
	if _, ok := d.set["ip.hdr_len"]; ok && v6 {
		return errors.New("ip.hdr_len is an IPv4 field, but the packet is IPv6")
	}
	icmp := uint64(1)
	if v6 {
		icmp = 58
	}
	var proto uint64
	var by string
	for _, f := range []struct {
		prefix string
		proto  uint64
	}{{"tcp.", 6}, {"udp.", 17}, {"icmp.", icmp}} {
		for _, name := range slices.Sorted(maps.Keys(d.set)) {
			if len(name) > len(f.prefix) && name[:len(f.prefix)] == f.prefix {
				if by != "" && proto != f.proto {
					return fmt.Errorf("%s and %s cannot be in one packet", by, name)
				}
				proto, by = f.proto, name
			}
		}
	}
	if p, ok := d.set["ip.proto"]; ok {
		if by != "" && p.Int != proto {
			return fmt.Errorf("ip.proto == %d, but %s needs %d", p.Int, by, proto)
		}
		proto, by = p.Int, "ip.proto"
	} else if by != "" {
		if err := d.rec.Set("ip.proto", rules.IntValue(proto)); err != nil {
			return err
		}
	}
	if by == "" || proto != 6 {
		return nil
	}
	// A TCP packet: the flags byte and the flag fields agree.
	flags, hasFlags := d.set["tcp.flags"]
	var bits uint64
	for _, n := range tcpFlagNames {
		bit, _ := rules.TCPFlagBit("tcp.flags." + n)
		b, ok := d.set["tcp.flags."+n]
		if hasFlags && ok && b.Bool != (flags.Int&uint64(bit) != 0) {
			return fmt.Errorf("tcp.flags.%s contradicts tcp.flags == %#x", n, flags.Int)
		}
		if ok && b.Bool {
			bits |= uint64(bit)
		}
	}
	if hasFlags {
		bits = flags.Int
	} else if err := d.rec.Set("tcp.flags", rules.IntValue(bits)); err != nil {
		return err
	}
	for _, n := range tcpFlagNames {
		bit, _ := rules.TCPFlagBit("tcp.flags." + n)
		if err := d.rec.Set("tcp.flags."+n, rules.BoolValue(bits&uint64(bit) != 0)); err != nil {
			return err
		}
	}
	return nil
}

// IdentityOf returns the first identity among ids whose addresses hold a:
// whom identity.email and identity.groups describe for a packet from a.
func IdentityOf(ids []Identity, a netip.Addr) (Identity, bool) {
	for _, id := range ids {
		for _, p := range id.Addrs {
			if p.Contains(a) {
				return id, true
			}
		}
	}
	return Identity{}, false
}
