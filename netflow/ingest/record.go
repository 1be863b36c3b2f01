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

// Record turns a flow into a network_analytics_logs record without GeoIP
// fields: RecordPlaces with no databases.
func Record(f *Flow, colo netflow.Colo) logpush.Record { return RecordPlaces(f, colo, nil) }

// RecordPlaces turns a flow into a network_analytics_logs record: the
// packet-level fields that a flow has (addresses, ports, protocol, TCP
// flags), the source's and destination's country and AS as places knows
// them (netflow.AppendPlaces, as the gateway's own samples carry them;
// nil: none), Cloudflare Magic Network Monitoring's SamplerAddress,
// Packets and Bytes (scaled by SampleInterval), flow start and end times,
// and Source. Datetime is the flow's end, or when it was received if the
// exporter gave no usable time.
//
// It is on ingest's hot path: the record is allocated once at its final
// size, and the five address strings share one allocation.
func RecordPlaces(f *Flow, colo netflow.Colo, places netflow.Places) logpush.Record {
	n := 24 // the most fields a flow has without GeoIP
	if places != nil {
		n += 6
	}
	r := make(logpush.Record, 0, n)
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
	// The exporter, source, destination and their subnets, written into
	// one buffer (on the stack) and made one string, then cut.
	var buf [5*47 + 8]byte
	b := buf[:0]
	var cuts [5]int
	b = appendAddr(b, f.Exporter.Addr())
	cuts[0] = len(b)
	b = appendAddr(b, f.Src)
	cuts[1] = len(b)
	b = appendAddr(b, f.Dst)
	cuts[2] = len(b)
	b = appendSubnet(b, f.Src)
	cuts[3] = len(b)
	b = appendSubnet(b, f.Dst)
	cuts[4] = len(b)
	all := string(b)
	part := func(i int) string {
		from := 0
		if i > 0 {
			from = cuts[i-1]
		}
		return all[from:cuts[i]]
	}
	add := func(name string, v logpush.Value) { r = append(r, logpush.Field{Name: name, Value: v}) }
	str := func(name, v string) {
		if v != "" {
			add(name, logpush.String(v))
		}
	}
	num := func(name string, n uint64) { add(name, logpush.Uint(n)) }
	add("Datetime", logpush.Time(when))
	str("ColoCode", colo.Code)
	str("ColoName", colo.Name)
	str("ColoCountry", colo.Country)
	add("Source", logpush.String(f.Source))
	add("SamplerAddress", logpush.String(part(0)))
	num("ObservationDomainID", uint64(f.Domain))
	add("IPSourceAddress", logpush.String(part(1)))
	add("IPDestinationAddress", logpush.String(part(2)))
	add("IPSourceSubnet", logpush.String(part(3)))
	add("IPDestinationSubnet", logpush.String(part(4)))
	r = netflow.AppendPlaces(r, places, f.Src, f.Dst)
	num("IPProtocol", uint64(f.Protocol))
	str("IPProtocolName", netflow.ProtocolName(f.Protocol))
	switch f.Protocol {
	case 6, 17, 132: // TCP, UDP, SCTP
		num("SourcePort", uint64(f.SrcPort))
		num("DestinationPort", uint64(f.DstPort))
	}
	if f.Protocol == 6 {
		num("TCPFlags", uint64(f.TCPFlags))
		add("TCPFlagsString", logpush.String(tcpFlagsStrings[f.TCPFlags]))
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

// tcpFlagsStrings is netflow.TCPFlagsString of every flags byte, made
// once rather than per record.
var tcpFlagsStrings = func() (t [256]string) {
	for i := range t {
		t[i] = netflow.TCPFlagsString(uint8(i))
	}
	return t
}()

// appendAddr appends a.String().
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "invalid IP"...)
	}
	return a.AppendTo(b)
}

// appendSubnet appends subnet(a).
func appendSubnet(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "invalid Prefix"...)
	}
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.AppendTo(b)
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
