package logpush

import (
	"net/netip"
	"time"
)

// FlowFields are the flow-level fields of a network_analytics_logs record
// (the gateway's own samples and flows ingested from other routers), read
// in one pass for the consumers that count or re-export flows: the
// analytics store, the alert rules and the IPFIX exporter. Each projects
// what it needs; a field absent from the record keeps its zero value and,
// where that is ambiguous, its Has flag is false.
type FlowFields struct {
	Time, Start    time.Time // Datetime; FlowStartTime
	HasTime        bool
	Source         string     // "nflog", "netflow", "ipfix", "sflow"
	Exporter       netip.Addr // SamplerAddress
	Src, Dst       netip.Addr // unmapped; invalid when absent or unparsable
	SrcPort        uint16
	DstPort        uint16
	Protocol       uint8
	TCPFlags       uint8
	ICMPType       uint8
	ICMPCode       uint8
	HasICMP        bool   // ICMPType present
	Direction      string // "ingress", "egress" (the gateway's samples)
	Verdict        string // "pass", "drop" (the gateway's samples)
	Tunnel         string // TunnelName
	Packets, Bytes uint64 // scaled counts of ingested flows
	HasPackets     bool
	IPTotalLength  uint64 // one sampled packet's length
	SampleInterval uint64 // at least 1
}

// ReadFlow reads r's flow-level fields.
func ReadFlow(r Record) FlowFields {
	f := FlowFields{SampleInterval: 1}
	for i := range r {
		v := r[i].Value
		switch r[i].Name {
		case "Datetime":
			if v.Kind() == KindTime {
				f.Time, f.HasTime = time.Unix(0, v.Int()), true
			}
		case "FlowStartTime":
			if v.Kind() == KindTime {
				f.Start = time.Unix(0, v.Int())
			}
		case "Source":
			f.Source = v.Str()
		case "SamplerAddress":
			f.Exporter, _ = netip.ParseAddr(v.Str())
		case "IPSourceAddress":
			if a, err := netip.ParseAddr(v.Str()); err == nil {
				f.Src = a.Unmap()
			}
		case "IPDestinationAddress":
			if a, err := netip.ParseAddr(v.Str()); err == nil {
				f.Dst = a.Unmap()
			}
		case "SourcePort":
			f.SrcPort = uint16(v.Int())
		case "DestinationPort":
			f.DstPort = uint16(v.Int())
		case "IPProtocol":
			f.Protocol = uint8(v.Int())
		case "TCPFlags":
			f.TCPFlags = uint8(v.Int())
		case "ICMPType":
			f.ICMPType, f.HasICMP = uint8(v.Int()), true
		case "ICMPCode":
			f.ICMPCode = uint8(v.Int())
		case "Direction":
			f.Direction = v.Str()
		case "Verdict":
			f.Verdict = v.Str()
		case "TunnelName":
			f.Tunnel = v.Str()
		case "Packets":
			f.Packets, f.HasPackets = uint64(v.Int()), true
		case "Bytes":
			f.Bytes = uint64(v.Int())
		case "IPTotalLength":
			f.IPTotalLength = uint64(v.Int())
		case "SampleInterval":
			f.SampleInterval = uint64(max(v.Int(), 1))
		}
	}
	return f
}
