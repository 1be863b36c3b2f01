package export

import (
	"github.com/edgegw/edgegw/netflow/logpush"
)

// FromRecord reads one of the gateway's own network_analytics_logs records
// (Source "nflog": one sampled packet) as a one-packet flow, and its
// SampleInterval. ok is false for a record of another source (flows
// ingested from other routers already reach a collector of their own, and
// their counts are scaled) or without addresses.
func FromRecord(r logpush.Record) (f Flow, rate uint32, ok bool) {
	v := logpush.ReadFlow(r)
	if v.Source != "nflog" || !v.Src.IsValid() || !v.Dst.IsValid() || v.Src.Is4() != v.Dst.Is4() {
		return Flow{}, 0, false
	}
	f = Flow{Src: v.Src, Dst: v.Dst, SrcPort: v.SrcPort, DstPort: v.DstPort, Protocol: v.Protocol, TCPFlags: v.TCPFlags,
		Octets: v.IPTotalLength, Egress: v.Direction == "egress", Dropped: v.Verdict == "drop", Packets: 1}
	if v.HasTime {
		f.Start, f.End = v.Time, v.Time
	}
	if v.HasICMP {
		f.DstPort = uint16(v.ICMPType)<<8 | uint16(v.ICMPCode)
	}
	return f, uint32(min(v.SampleInterval, 1<<31)), true
}
