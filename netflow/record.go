package netflow

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// Dataset is the Logpush dataset the sampler produces.
const Dataset = "network_analytics_logs"

// SourceNFLOG is the Source of records of the gateway's own sampled
// packets; flows ingested from other routers (package ingest) carry
// "netflow" or "ipfix" in the same stream.
const SourceNFLOG = "nflog"

// MitigationSystem is the system that judged every sampled packet.
const MitigationSystem = "magic-firewall"

// Colo names the appliance the way Cloudflare names a data center: from
// the config's appliance.colo, appliance.name and appliance.country.
type Colo struct {
	Code    string // IATA-style code, e.g. "ams"
	Name    string // the site, e.g. "ams01"
	Country string // ISO 3166-1 alpha-2, e.g. "NL"
}

// Rules is the firewall ruleset as the kernel table was built from it: the
// NFLOG prefix ef/<n>/<v> names the rule at 1-based position n of RuleIDs.
type Rules struct {
	RulesetID string
	RuleIDs   []string
	// SampleInterval is the table's sample_rate: 1 in SampleInterval
	// packets is sampled; every record carries it.
	SampleInterval int
}

// Role is what an interface is to the gateway; it sets a record's
// Direction.
type Role uint8

// Interface roles.
const (
	RoleUnknown Role = iota
	RoleWAN          // the internet side: traffic entering here is ingress
	RoleLAN          // the office network: traffic entering here is egress
	RoleTunnel       // a WireGuard or GRE tunnel: egress, and the record names the tunnel
)

// Interface is one network interface the gateway knows.
type Interface struct {
	Name string
	Role Role
}

// Interfaces maps kernel interface indexes to interfaces.
type Interfaces map[uint32]Interface

// Identity is who is behind a source address.
type Identity struct {
	Email    string
	DeviceID string
}

// Identities looks up the enrolled device or user behind a source address.
// Implementations must be safe for concurrent use and must not block.
type Identities interface {
	Lookup(src netip.Addr) (Identity, bool)
}

// IdentityMap is an immutable Identities keyed by exact address.
type IdentityMap map[netip.Addr]Identity

// Lookup implements Identities.
func (m IdentityMap) Lookup(src netip.Addr) (Identity, bool) {
	id, ok := m[src.Unmap()]
	return id, ok
}

// Places tells the country and autonomous system of an address: the
// GeoIP databases of firewall.geoip (a *geo.Live). Implementations must be
// safe for concurrent use and must not block; the zero Info means unknown.
type Places interface {
	Lookup(netip.Addr) geo.Info
}

// AppendPlaces appends the source's and destination's country and AS
// under Cloudflare's names (SourceCountry, DestinationCountry, SourceASN,
// DestinationASN, SourceASNName, DestinationASNName) as places knows
// them; a field it does not know is left out rather than written empty,
// and nil places adds nothing. The gateway's own samples and flows
// ingested from other routers share it, so a Logpush filter on these
// fields means the same on both.
func AppendPlaces(r logpush.Record, places Places, src, dst netip.Addr) logpush.Record {
	if places == nil {
		return r
	}
	s, d := places.Lookup(src), places.Lookup(dst)
	str := func(name, val string) {
		if val != "" {
			r = append(r, logpush.Field{Name: name, Value: logpush.String(val)})
		}
	}
	str("SourceCountry", s.Country)
	str("DestinationCountry", d.Country)
	if s.ASN != 0 {
		r = append(r, logpush.Field{Name: "SourceASN", Value: logpush.Uint(uint64(s.ASN))})
	}
	if d.ASN != 0 {
		r = append(r, logpush.Field{Name: "DestinationASN", Value: logpush.Uint(uint64(d.ASN))})
	}
	str("SourceASNName", s.ASOrg)
	str("DestinationASNName", d.ASOrg)
	return r
}

// Sample is one packet the kernel logged: the NFLOG prefix, the ingress
// interface index (0 if none), the time (zero if the kernel gave none) and
// the packet from its network header on.
type Sample struct {
	Prefix  string
	InDev   uint32
	Time    time.Time
	Payload []byte
}

// ErrNotOurs is the error for an NFLOG prefix that is not a sample of
// edgegw's firewall: firewall.ErrNotSample, which owns the prefix.
var ErrNotOurs = firewall.ErrNotSample

// view is what a record is built from besides the packet: the snapshots
// current when the sample was read.
type view struct {
	colo   Colo
	rules  *Rules
	ifs    Interfaces
	ids    Identities
	places Places // nil: no GeoIP fields
}

// buildRecord turns a decoded sample into a network_analytics_logs record.
// Fields that do not apply to the packet (ports of ICMP, TCP fields of UDP,
// GRE fields of plain IP) are left out rather than written as zero.
func buildRecord(v *view, s *Sample, vd firewall.SampleVerdict, p *Packet, now time.Time) (logpush.Record, error) {
	if vd.Rule > len(v.rules.RuleIDs) {
		return nil, fmt.Errorf("rule position %d: the ruleset %q has %d rules", vd.Rule, v.rules.RulesetID, len(v.rules.RuleIDs))
	}
	t := s.Time
	if t.IsZero() {
		t = now
	}
	r := make(logpush.Record, 0, 48)
	add := func(name string, val logpush.Value) { r = append(r, logpush.Field{Name: name, Value: val}) }
	str := func(name, val string) {
		if val != "" {
			add(name, logpush.String(val))
		}
	}
	num := func(name string, n uint64) { add(name, logpush.Uint(n)) }
	flag := func(name string, b bool) {
		if b {
			num(name, 1)
		} else {
			num(name, 0)
		}
	}

	add("Datetime", logpush.Time(t))
	str("ColoCode", v.colo.Code)
	str("ColoName", v.colo.Name)
	str("ColoCountry", v.colo.Country)
	add("Source", logpush.String(SourceNFLOG))
	ifc, known := v.ifs[s.InDev]
	if known {
		if ifc.Role == RoleWAN {
			add("Direction", logpush.String("ingress"))
		} else if ifc.Role != RoleUnknown {
			add("Direction", logpush.String("egress"))
		}
	}

	ip := &p.IP
	add("IPSourceAddress", logpush.String(ip.Src.String()))
	add("IPDestinationAddress", logpush.String(ip.Dst.String()))
	add("IPSourceSubnet", logpush.String(subnet(ip.Src)))
	add("IPDestinationSubnet", logpush.String(subnet(ip.Dst)))
	r = AppendPlaces(r, v.places, ip.Src, ip.Dst)
	num("IPProtocol", uint64(ip.Protocol))
	str("IPProtocolName", ProtocolName(ip.Protocol))
	num("IPTotalLength", uint64(ip.TotalLength))
	num("IPTotalLengthBuckets", uint64(ip.TotalLength)/100*100)
	num("IPTTL", uint64(ip.TTL))
	num("IPTTLBuckets", uint64(ip.TTL)/10*10)
	num("IPHeaderLength", uint64(ip.HeaderLength))
	if ip.Version == 4 {
		num("IPv4Identification", uint64(ip.Identification))
		num("IPv4Checksum", uint64(ip.Checksum))
		num("IPv4DSCP", uint64(ip.DSCP))
		num("IPv4ECN", uint64(ip.ECN))
		flag("IPv4DontFragment", ip.DontFragment)
		flag("IPMoreFragments", ip.MoreFragments)
		num("IPFragmentOffset", uint64(ip.FragmentOffset))
	} else {
		num("IPv6DSCP", uint64(ip.DSCP))
		num("IPv6ECN", uint64(ip.ECN))
		num("IPv6FlowLabel", uint64(ip.FlowLabel))
	}
	if p.HasPorts {
		num("SourcePort", uint64(p.SrcPort))
		num("DestinationPort", uint64(p.DstPort))
	}
	if p.HasTCP {
		tc := &p.TCP
		num("TCPFlags", uint64(tc.Flags))
		add("TCPFlagsString", logpush.String(TCPFlagsString(tc.Flags)))
		num("TCPSequenceNumber", uint64(tc.Seq))
		num("TCPAcknowledgementNumber", uint64(tc.Ack))
		num("TCPDataOffset", uint64(tc.DataOffset))
		num("TCPWindowSize", uint64(tc.Window))
		num("TCPChecksum", uint64(tc.Checksum))
		num("TCPUrgentPointer", uint64(tc.Urgent))
		if tc.HasMSS {
			num("TCPMSS", uint64(tc.MSS))
		}
		if tc.HasWScale {
			num("TCPWindowScale", uint64(tc.WindowScale))
		}
		flag("TCPSACKPermitted", tc.SACKPermitted)
		if tc.HasTimestamps {
			num("TCPTimestampValue", uint64(tc.TSVal))
			num("TCPTimestampECR", uint64(tc.TSEcr))
		}
	}
	if p.HasUDP {
		num("UDPChecksum", uint64(p.UDP.Checksum))
		num("UDPPayloadLength", uint64(max(int(p.UDP.Length)-8, 0)))
	}
	if p.HasICMP {
		num("ICMPType", uint64(p.ICMP.Type))
		num("ICMPCode", uint64(p.ICMP.Code))
		num("ICMPChecksum", uint64(p.ICMP.Checksum))
	}
	if p.HasGRE {
		g := &p.GRE
		num("GREVersion", uint64(g.Version))
		num("GREEtherType", uint64(g.EtherType))
		num("GREHeaderLength", uint64(g.HeaderLength))
		if g.HasChecksum {
			num("GREChecksum", uint64(g.Checksum))
		}
		if g.HasKey {
			num("GREKey", uint64(g.Key))
		}
		if g.HasSequence {
			num("GRESequenceNumber", uint64(g.Sequence))
		}
	}
	if p.Outer != nil {
		add("OuterIPSourceAddress", logpush.String(p.Outer.Src.String()))
		add("OuterIPDestinationAddress", logpush.String(p.Outer.Dst.String()))
	}

	outcome := "pass"
	if vd.Dropped {
		outcome = "drop"
	}
	add("Outcome", logpush.String(outcome))
	add("Verdict", logpush.String(outcome))
	add("MitigationSystem", logpush.String(MitigationSystem))
	if vd.Rule > 0 {
		str("RuleID", v.rules.RuleIDs[vd.Rule-1])
	}
	str("RulesetID", v.rules.RulesetID)
	num("SampleInterval", uint64(max(v.rules.SampleInterval, 1)))
	if known && ifc.Role == RoleTunnel {
		str("TunnelName", ifc.Name)
	}
	if v.ids != nil {
		if id, ok := v.ids.Lookup(ip.Src); ok {
			str("Email", id.Email)
			str("DeviceID", id.DeviceID)
		}
	}
	return r, nil
}

// subnet is Cloudflare's IP…Subnet: the /24 of an IPv4 address, the /64 of
// an IPv6 one.
func subnet(a netip.Addr) string {
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.String()
}
