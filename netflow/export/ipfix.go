// Package export sends the gateway's own sampled flows to flow collectors
// as IPFIX (RFC 7011) over UDP, the way a router exports NetFlow: what
// nfdump's nfcapd, pmacct's nfacctd or any other collector reads.
//
// Each sampled packet is one data record of one packet: its addresses,
// ports, protocol, TCP flags, octets, the time it was seen, its direction
// and whether the firewall forwarded or dropped it. The sampling rate is
// announced the PSAMP way (RFC 5477: samplingPacketInterval 1,
// samplingPacketSpace rate-1) in an options record scoped to the
// observation domain, which collectors use to scale the counts; the counts
// themselves stay what was observed.
//
// The options template carries only those two elements: nfdump 1.7.1
// (Debian 12) takes an options template for a sampler only when it has
// samplingPacketSpace without selectorId and selectorAlgorithm, or
// samplingInterval without samplingAlgorithm, and applies a sampler
// without an ID only to flows that name none.
package export

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// IPFIX information element identifiers (IANA "IPFIX Information
// Elements").
const (
	ieOctetDeltaCount          = 1
	iePacketDeltaCount         = 2
	ieProtocolIdentifier       = 4
	ieTCPControlBits           = 6
	ieSourceTransportPort      = 7
	ieSourceIPv4Address        = 8
	ieDestinationTransportPort = 11
	ieDestinationIPv4Address   = 12
	ieSourceIPv6Address        = 27
	ieDestinationIPv6Address   = 28
	ieFlowDirection            = 61
	ieForwardingStatus         = 89
	ieObservationDomainID      = 149
	ieFlowStartMilliseconds    = 152
	ieFlowEndMilliseconds      = 153
	ieSamplingPacketInterval   = 305
	ieSamplingPacketSpace      = 306
)

// Set and template identifiers.
const (
	setTemplate        = 2
	setOptionsTemplate = 3
	templateIPv4       = 256
	templateIPv6       = 257
	templateSampling   = 258
)

// Values of the enumerated elements.
const (
	// forwardingStatus (RFC 7270): the two high bits are the status.
	statusForwarded = 0x40 // forwarded, unknown reason
	statusDropped   = 0x80 // dropped, unknown reason
)

// field is one template field: element identifier and length.
type field struct{ id, length uint16 }

// flowFields are the data template's elements after the two addresses.
var flowFields = []field{
	{ieSourceTransportPort, 2},
	{ieDestinationTransportPort, 2},
	{ieProtocolIdentifier, 1},
	{ieTCPControlBits, 1}, // reduced-size encoding (RFC 7011 §6.2)
	{ieOctetDeltaCount, 8},
	{iePacketDeltaCount, 8},
	{ieFlowStartMilliseconds, 8},
	{ieFlowEndMilliseconds, 8},
	{ieFlowDirection, 1},
	{ieForwardingStatus, 1},
}

// samplingFields are the options template's elements after its scope.
var samplingFields = []field{
	{ieSamplingPacketInterval, 4},
	{ieSamplingPacketSpace, 4},
}

// recordLen is the size of one data record of the IPv4 or IPv6 template.
func recordLen(v6 bool) int {
	n := 8
	if v6 {
		n = 32
	}
	for _, f := range flowFields {
		n += int(f.length)
	}
	return n
}

// Sizes of the message header and a set header.
const (
	headerLen = 16
	setHdrLen = 4
)

// Flow is one exported flow record.
type Flow struct {
	Src, Dst   netip.Addr
	SrcPort    uint16
	DstPort    uint16 // for ICMP, type<<8 | code, as NetFlow carries it
	Protocol   uint8
	TCPFlags   uint8
	Octets     uint64
	Packets    uint64
	Start, End time.Time
	Egress     bool // flowDirection: 0 ingress, 1 egress
	Dropped    bool // the firewall dropped the packet
}

// appendTemplates appends a template set (the IPv4 and IPv6 data
// templates) and an options template set (the sampler) to b.
func appendTemplates(b []byte) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, setTemplate)
	b = binary.BigEndian.AppendUint16(b, 0) // length, below
	for _, t := range []struct {
		id       uint16
		src, dst field
	}{
		{templateIPv4, field{ieSourceIPv4Address, 4}, field{ieDestinationIPv4Address, 4}},
		{templateIPv6, field{ieSourceIPv6Address, 16}, field{ieDestinationIPv6Address, 16}},
	} {
		b = binary.BigEndian.AppendUint16(b, t.id)
		b = binary.BigEndian.AppendUint16(b, uint16(2+len(flowFields)))
		b = appendField(b, t.src)
		b = appendField(b, t.dst)
		for _, f := range flowFields {
			b = appendField(b, f)
		}
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))

	start = len(b)
	b = binary.BigEndian.AppendUint16(b, setOptionsTemplate)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, templateSampling)
	b = binary.BigEndian.AppendUint16(b, uint16(1+len(samplingFields))) // field count
	b = binary.BigEndian.AppendUint16(b, 1)                             // scope field count
	b = appendField(b, field{ieObservationDomainID, 4})
	for _, f := range samplingFields {
		b = appendField(b, f)
	}
	// Pad to a 4-byte boundary (RFC 7011 §3.3.1 allows padding).
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

func appendField(b []byte, f field) []byte {
	b = binary.BigEndian.AppendUint16(b, f.id)
	return binary.BigEndian.AppendUint16(b, f.length)
}

// appendSampling appends a data set with the sampler's options record for
// the observation domain: one packet selected out of every rate.
func appendSampling(b []byte, domain, rate uint32) []byte {
	rate = max(rate, 1)
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, templateSampling)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, domain)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, rate-1)
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

// appendFlow appends f as a data record of the IPv4 or IPv6 template (by
// its source address; the caller has opened a set of that template).
func appendFlow(b []byte, f *Flow) []byte {
	if f.Src.Is4() {
		s, d := f.Src.As4(), f.Dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		s, d := f.Src.As16(), f.Dst.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, f.SrcPort)
	b = binary.BigEndian.AppendUint16(b, f.DstPort)
	b = append(b, f.Protocol, f.TCPFlags)
	b = binary.BigEndian.AppendUint64(b, f.Octets)
	b = binary.BigEndian.AppendUint64(b, f.Packets)
	b = binary.BigEndian.AppendUint64(b, uint64(max(f.Start.UnixMilli(), 0)))
	b = binary.BigEndian.AppendUint64(b, uint64(max(f.End.UnixMilli(), 0)))
	dir, status := byte(0), byte(statusForwarded)
	if f.Egress {
		dir = 1
	}
	if f.Dropped {
		status = statusDropped
	}
	return append(b, dir, status)
}

// putHeader writes the message header into b[:16]; b is the whole message.
func putHeader(b []byte, export time.Time, seq, domain uint32) {
	binary.BigEndian.PutUint16(b[0:], 10)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint32(b[4:], uint32(export.Unix()))
	binary.BigEndian.PutUint32(b[8:], seq)
	binary.BigEndian.PutUint32(b[12:], domain)
}
