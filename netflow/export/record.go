package export

import (
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// FromRecord reads one of the gateway's own network_analytics_logs records
// (Source "nflog": one sampled packet) as a one-packet flow, and its
// SampleInterval. ok is false for a record of another source (flows
// ingested from other routers already reach a collector of their own, and
// their counts are scaled) or without addresses.
func FromRecord(r logpush.Record) (f Flow, rate uint32, ok bool) {
	var src, dst, own bool
	var icmpType, icmpCode uint64
	var isICMP bool
	rate = 1
	for i := range r {
		v := r[i].Value
		switch r[i].Name {
		case "Source":
			own = v.Str() == "nflog"
		case "Datetime":
			if v.Kind() == logpush.KindTime {
				f.Start = time.Unix(0, v.Int())
				f.End = f.Start
			}
		case "IPSourceAddress":
			a, err := netip.ParseAddr(v.Str())
			f.Src, src = a.Unmap(), err == nil
		case "IPDestinationAddress":
			a, err := netip.ParseAddr(v.Str())
			f.Dst, dst = a.Unmap(), err == nil
		case "SourcePort":
			f.SrcPort = uint16(v.Int())
		case "DestinationPort":
			f.DstPort = uint16(v.Int())
		case "IPProtocol":
			f.Protocol = uint8(v.Int())
		case "TCPFlags":
			f.TCPFlags = uint8(v.Int())
		case "IPTotalLength":
			f.Octets = uint64(v.Int())
		case "ICMPType":
			icmpType, isICMP = uint64(v.Int()), true
		case "ICMPCode":
			icmpCode = uint64(v.Int())
		case "Direction":
			f.Egress = v.Str() == "egress"
		case "Verdict":
			f.Dropped = v.Str() == "drop"
		case "SampleInterval":
			rate = uint32(min(max(v.Int(), 1), 1<<31))
		}
	}
	if !own || !src || !dst || f.Src.Is4() != f.Dst.Is4() {
		return Flow{}, 0, false
	}
	if isICMP {
		f.DstPort = uint16(icmpType&0xff)<<8 | uint16(icmpCode&0xff)
	}
	f.Packets = 1
	return f, rate, true
}
