package ingest

import (
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// plausible reports whether an exporter's timestamp can be a real time: a
// router with an unset clock, or a decoder that lacked the boot time,
// yields times near 1970 or far ahead.
func plausible(t, now time.Time) bool {
	return t.Year() >= 2000 && t.Before(now.Add(24*time.Hour))
}

// Record turns a flow into a network_analytics_logs record: the packet-level
// fields that a flow has (addresses, ports, protocol, TCP flags), Cloudflare
// Magic Network Monitoring's SamplerAddress, Packets and Bytes (scaled by
// SampleInterval), flow start and end times, and Source. Datetime is the
// flow's end, or when it was received if the exporter gave no usable time.
func Record(f *Flow, colo netflow.Colo) logpush.Record {
	r := make(logpush.Record, 0, 26)
	add := func(name string, v logpush.Value) { r = append(r, logpush.Field{Name: name, Value: v}) }
	str := func(name, v string) {
		if v != "" {
			add(name, logpush.String(v))
		}
	}
	num := func(name string, n uint64) { add(name, logpush.Uint(n)) }
	start, end := f.Start, f.End
	if !plausible(start, f.ReceivedTime) {
		start = time.Time{}
	}
	if !plausible(end, f.ReceivedTime) {
		end = time.Time{}
	}
	when := end
	if when.IsZero() {
		when = f.ReceivedTime
	}
	add("Datetime", logpush.Time(when))
	str("ColoCode", colo.Code)
	str("ColoName", colo.Name)
	str("ColoCountry", colo.Country)
	add("Source", logpush.String(f.Source))
	add("SamplerAddress", logpush.String(f.Exporter.Addr().String()))
	num("ObservationDomainID", uint64(f.Domain))
	add("IPSourceAddress", logpush.String(f.Src.String()))
	add("IPDestinationAddress", logpush.String(f.Dst.String()))
	add("IPSourceSubnet", logpush.String(subnet(f.Src)))
	add("IPDestinationSubnet", logpush.String(subnet(f.Dst)))
	num("IPProtocol", uint64(f.Protocol))
	str("IPProtocolName", netflow.ProtocolName(f.Protocol))
	switch f.Protocol {
	case 6, 17, 132: // TCP, UDP, SCTP
		num("SourcePort", uint64(f.SrcPort))
		num("DestinationPort", uint64(f.DstPort))
	}
	if f.Protocol == 6 {
		num("TCPFlags", uint64(f.TCPFlags))
		add("TCPFlagsString", logpush.String(netflow.TCPFlagsString(f.TCPFlags)))
	}
	if f.HasICMP {
		num("ICMPType", uint64(f.ICMPType))
		num("ICMPCode", uint64(f.ICMPCode))
	}
	num("Packets", f.Packets)
	num("Bytes", f.Bytes)
	num("SampleInterval", uint64(max(f.SampleRate, 1)))
	if !start.IsZero() {
		add("FlowStartTime", logpush.Time(start))
	}
	if !end.IsZero() {
		add("FlowEndTime", logpush.Time(end))
	}
	return r
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
