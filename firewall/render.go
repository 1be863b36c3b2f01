package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// String renders the program as an nft-style listing, stable for golden
// tests and for `edgegw firewall show`. Expressions the renderer does not
// know are printed by type.
func (p *Program) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	ids := map[string]string{}
	for _, r := range p.Rules {
		ids[r.Counter] = fmt.Sprintf("rule %q", r.ID)
		if r.Action == "rate_limit" {
			ids[rateDropCounter(r.Counter)] = fmt.Sprintf("rule %q, dropped by the rate limit", r.ID)
		}
	}
	for _, sc := range p.Spoof {
		ids[sc.Counter] = fmt.Sprintf("sources owned by %s arriving elsewhere", sc.Interface)
	}
	if p.egress != nil {
		for _, pol := range p.egress.policies {
			if !pol.identityOnly {
				ids[pol.counter] = fmt.Sprintf("egress policy %q, connections", pol.id)
			}
		}
	}
	for _, c := range p.Counters {
		fmt.Fprintf(&b, "\tcounter %s { } # %s\n", c, ids[c])
	}
	for _, s := range p.Sets {
		renderSet(&b, &s)
	}
	for _, ch := range p.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", ch.Name)
		if ch.Hook != nil {
			policy := "accept"
			if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
				policy = "drop"
			}
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n",
				ch.Type, hookName(*ch.Hook), int32(*ch.Priority), policy)
		}
		for _, r := range ch.Rules {
			b.WriteString("\t\t")
			b.WriteString(renderRule(r))
			b.WriteByte('\n')
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return strconv.Itoa(int(h))
}

func renderSet(b *strings.Builder, s *Set) {
	if m := s.egressMap; m != nil {
		// Filled at Apply from the identities, as identity sets are.
		fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s : %s\n\t\tflags interval\n\t\tcounter\n", s.Name, s.Key.Name, s.Key.Name)
		for i, id := range m.policies {
			fmt.Fprintf(b, "\t\t# users with %s → %s (egress policy %q)\n", m.progs[i].Source, m.addrs[i], id)
		}
		b.WriteString("\t}\n")
		return
	}
	if s.Map && s.Interval {
		fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s : verdict\n\t\tflags interval\n", s.Name, s.Key.Name)
		var es []string
		for i, e := range s.Elements {
			if e.IntervalEnd {
				continue
			}
			// An interval ends before its end element, or at the end
			// of the address space.
			hi := make([]byte, len(e.Key))
			for j := range hi {
				hi[j] = 0xff
			}
			if i+1 < len(s.Elements) && s.Elements[i+1].IntervalEnd {
				hi = prev(s.Elements[i+1].Key)
			}
			r := renderer{}
			r.expr(e.VerdictData)
			es = append(es, formatValue(e.Key, kindAddr)+"-"+formatValue(hi, kindAddr)+" : "+r.out[0])
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n\t}\n", strings.Join(es, ", "))
		return
	}
	if s.Map {
		fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s : verdict\n", s.Name, s.Key.Name)
		var es []string
		for _, e := range s.Elements {
			r := renderer{}
			r.expr(e.VerdictData)
			es = append(es, formatValue(e.Key, kindInt)+" : "+r.out[0])
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n\t}\n", strings.Join(es, ", "))
		return
	}
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.Name, s.Key.Name)
	var flags []string
	switch {
	case s.Interval:
		flags = append(flags, "interval")
	case s.Dynamic:
		flags = append(flags, "dynamic", "timeout")
	}
	if len(flags) > 0 {
		fmt.Fprintf(b, "\t\tflags %s\n", strings.Join(flags, ","))
	}
	if s.Dynamic {
		fmt.Fprintf(b, "\t\tsize %d\n\t\ttimeout %s\n", meterSize, meterTimeout)
	}
	switch {
	case s.List != "":
		fmt.Fprintf(b, "\t\t# list $%s\n", s.List)
	case s.Identity != nil:
		fmt.Fprintf(b, "\t\t# source addresses of users with %s\n", s.Identity.Source)
	case s.Geo != nil:
		fmt.Fprintf(b, "\t\t# networks of the GeoIP database with %s\n", s.Geo.Source)
	case s.Alias != "":
		fmt.Fprintf(b, "\t\t# ingress == %q\n", s.Alias)
	}
	kind := kindInt
	switch s.Key.Name {
	case "ipv4_addr", "ipv6_addr":
		kind = kindAddr
	case "ifname":
		kind = kindIfname
	}
	if len(s.Elements) > 0 {
		var es []string
		if s.Interval {
			for _, r := range elementIntervals(s.Elements) {
				lo, hi := formatValue(r.lo, kind), formatValue(r.hi, kind)
				if lo == hi {
					es = append(es, lo)
				} else {
					es = append(es, lo+"-"+hi)
				}
			}
		} else {
			for _, e := range s.Elements {
				es = append(es, formatValue(e.Key, kind))
			}
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(es, ", "))
	}
	b.WriteString("\t}\n")
}

// formatValue prints data loaded from a field of the given kind.
func formatValue(d []byte, kind valueKind) string {
	switch kind {
	case kindAddr:
		if a, ok := netip.AddrFromSlice(d); ok {
			return a.String()
		}
	case kindIfname:
		if len(d) < unix.IFNAMSIZ { // a prefix match (ifnamePattern)
			return strconv.Quote(string(d) + "*")
		}
		return strconv.Quote(strings.TrimRight(string(d), "\x00"))
	}
	if len(d) <= 8 {
		var x [8]byte
		copy(x[8-len(d):], d)
		return strconv.FormatUint(binary.BigEndian.Uint64(x[:]), 10)
	}
	return fmt.Sprintf("0x%x", d)
}

// renderer tracks what register 1 holds while a rule is printed.
type renderer struct {
	nfproto, l4proto byte
	what             string
	kind             valueKind
	imm              string // the last immediate value, for "set"
	immData          []byte // its bytes, for "snat to"
	mapped           string // "<field> map @<map>" looked up into register 1, for "snat to"
	out              []string
}

func renderRule(r []expr.Any) string {
	var rr renderer
	for _, e := range r {
		rr.expr(e)
	}
	return strings.Join(rr.out, " ")
}

var cmpNames = map[expr.CmpOp]string{
	expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ",
	expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= ",
}

func (r *renderer) expr(e expr.Any) {
	switch e := e.(type) {
	case *expr.Meta:
		r.kind = kindInt
		switch e.Key {
		case expr.MetaKeyNFPROTO:
			r.what = "meta nfproto"
		case expr.MetaKeyL4PROTO:
			r.what = "meta l4proto"
		case expr.MetaKeyIIFNAME:
			r.what, r.kind = "iifname", kindIfname
		case expr.MetaKeyOIFNAME:
			r.what, r.kind = "oifname", kindIfname
		default:
			r.what = fmt.Sprintf("meta %d", e.Key)
		}
	case *expr.Payload:
		r.what, r.kind = r.payloadName(e), kindInt
		if e.Base == expr.PayloadBaseNetworkHeader && (e.Len == 4 || e.Len == 16) {
			r.kind = kindAddr
		}
	case *expr.Bitwise:
		r.what += " & " + formatValue(e.Mask, r.kind)
	case *expr.Cmp:
		v := formatValue(e.Data, r.kind)
		switch r.what {
		case "meta nfproto":
			r.nfproto = e.Data[0]
			v = map[byte]string{nfIPv4: "ipv4", nfIPv6: "ipv6"}[e.Data[0]]
		case "meta l4proto":
			r.l4proto = e.Data[0]
			if n := protoName(e.Data[0]); n != "" {
				v = n
			}
		}
		op := cmpNames[e.Op]
		if op == "" && strings.Contains(r.what, " & ") {
			op = "== "
		}
		r.out = append(r.out, r.what+" "+op+v)
	case *expr.Lookup:
		if e.IsDestRegSet && e.DestRegister == 0 {
			r.out = append(r.out, r.what+" vmap @"+e.SetName)
			break
		}
		if e.IsDestRegSet {
			r.mapped = r.what + " map @" + e.SetName
			break
		}
		if e.Invert {
			r.out = append(r.out, r.what+" != @"+e.SetName)
			break
		}
		r.out = append(r.out, r.what+" @"+e.SetName)
	case *expr.Objref:
		r.out = append(r.out, fmt.Sprintf("counter name %q", e.Name))
	case *expr.Counter:
		r.out = append(r.out, "counter")
	case *expr.Masq:
		r.out = append(r.out, "masquerade")
	case *expr.NAT:
		if r.mapped != "" {
			fam := map[uint32]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[e.Family]
			r.out = append(r.out, "snat "+fam+" to "+r.mapped)
			break
		}
		r.out = append(r.out, "snat to "+formatValue(r.immData, kindAddr))
	case *expr.Exthdr:
		name := fmt.Sprintf("tcp option %d offset %d length %d", e.Type, e.Offset, e.Len)
		if e.Type == 2 && e.Offset == 2 && e.Len == 2 {
			name = "tcp option maxseg size"
		}
		if e.SourceRegister != 0 {
			r.out = append(r.out, name+" set "+r.imm)
			break
		}
		r.what, r.kind = name, kindInt
	case *expr.Numgen:
		r.what, r.kind = fmt.Sprintf("numgen random mod %d", e.Modulus), kindInt
		if e.Type != unix.NFT_NG_RANDOM {
			r.what = fmt.Sprintf("numgen inc mod %d", e.Modulus)
		}
	case *expr.Log:
		r.out = append(r.out, fmt.Sprintf("log prefix %q group %d", e.Data, e.Group))
	case *expr.Immediate:
		r.imm, r.immData = formatValue(e.Data, kindInt), e.Data
	case *expr.Dynset:
		s := fmt.Sprintf("update @%s { %s timeout %s", e.SetName, r.what, e.Timeout)
		for _, x := range e.Exprs {
			if l, ok := x.(*expr.Limit); ok {
				over := ""
				if l.Over {
					over = "over "
				}
				s += fmt.Sprintf(" limit rate %s%d/%s", over, l.Rate, limitUnit(l.Unit))
			}
		}
		r.out = append(r.out, s+" }")
	case *expr.Verdict:
		switch e.Kind {
		case expr.VerdictAccept:
			r.out = append(r.out, "accept")
		case expr.VerdictDrop:
			r.out = append(r.out, "drop")
		case expr.VerdictReturn:
			r.out = append(r.out, "return")
		case expr.VerdictJump:
			r.out = append(r.out, "jump "+e.Chain)
		case expr.VerdictGoto:
			r.out = append(r.out, "goto "+e.Chain)
		default:
			r.out = append(r.out, fmt.Sprintf("verdict %d", e.Kind))
		}
	default:
		r.out = append(r.out, fmt.Sprintf("%T", e))
	}
}

func limitUnit(u expr.LimitTime) string {
	switch u {
	case expr.LimitTimeSecond:
		return "second"
	case expr.LimitTimeMinute:
		return "minute"
	case expr.LimitTimeHour:
		return "hour"
	case expr.LimitTimeDay:
		return "day"
	}
	return time.Duration(u * expr.LimitTime(time.Second)).String()
}

func protoName(p byte) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return ""
}

// payloadName names a header field the way nft lists it, given the
// family and transport matched earlier in the rule.
func (r *renderer) payloadName(p *expr.Payload) string {
	type key struct {
		proto    byte
		off, len uint32
	}
	var names map[key]string
	var proto byte
	switch p.Base {
	case expr.PayloadBaseNetworkHeader:
		proto = r.nfproto
		names = map[key]string{
			{nfIPv4, 0, 1}: "ip hdrlength", {nfIPv4, 2, 2}: "ip length", {nfIPv4, 8, 1}: "ip ttl",
			{nfIPv4, 12, 4}: "ip saddr", {nfIPv4, 16, 4}: "ip daddr",
			{nfIPv6, 4, 2}: "ip6 length", {nfIPv6, 7, 1}: "ip6 hoplimit",
			{nfIPv6, 8, 16}: "ip6 saddr", {nfIPv6, 24, 16}: "ip6 daddr",
		}
	case expr.PayloadBaseTransportHeader:
		proto = r.l4proto
		names = map[key]string{
			{unix.IPPROTO_TCP, 0, 2}: "tcp sport", {unix.IPPROTO_TCP, 2, 2}: "tcp dport",
			{unix.IPPROTO_TCP, 13, 1}: "tcp flags",
			{unix.IPPROTO_UDP, 0, 2}:  "udp sport", {unix.IPPROTO_UDP, 2, 2}: "udp dport",
			{unix.IPPROTO_ICMP, 0, 1}: "icmp type", {unix.IPPROTO_ICMP, 1, 1}: "icmp code",
			{unix.IPPROTO_ICMPV6, 0, 1}: "icmpv6 type", {unix.IPPROTO_ICMPV6, 1, 1}: "icmpv6 code",
		}
	}
	if n, ok := names[key{proto, p.Offset, p.Len}]; ok {
		return n
	}
	base := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "ll",
		expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th"}[p.Base]
	return fmt.Sprintf("@%s,%d,%d", base, p.Offset*8, p.Len*8)
}
