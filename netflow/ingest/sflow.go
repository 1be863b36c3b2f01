package ingest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/sflow"

	"github.com/edgegw/edgegw/netflow"
)

// SourceSFlow marks records from sFlow v5 agents.
const SourceSFlow = "sflow"

// sFlow sampled-header protocols (sFlow v5 header_protocol).
const (
	sflowHeaderEthernet = 1
	sflowHeaderIPv4     = 11
	sflowHeaderIPv6     = 12
)

// decodeSFlow reads an sFlow v5 datagram. Each flow sample is one packet
// in SamplingRate: it becomes a flow of SamplingRate packets and that many
// times the packet's IP length in bytes, read from the sampled header
// (edgegw's own packet decoder) or, without one, from the sampled IPv4/IPv6
// record.
func (d *Decoder) decodeSFlow(from netip.AddrPort, pkt []byte, now time.Time, emit func(*Flow)) error {
	if err := sflowPrecheck(pkt); err != nil {
		return drop(ReasonMalformed, err)
	}
	var p sflow.Packet
	if err := sflow.DecodeMessageVersion(bytes.NewBuffer(pkt), &p); err != nil {
		return drop(ReasonMalformed, err)
	}
	var noAddr int
	for _, s := range p.Samples {
		var rate uint32
		var recs []sflow.FlowRecord
		var in, out uint32
		switch fs := s.(type) {
		case sflow.FlowSample:
			rate, recs, in, out = fs.SamplingRate, fs.Records, fs.Input, fs.Output
		case sflow.ExpandedFlowSample:
			rate, recs, in, out = fs.SamplingRate, fs.Records, fs.InputIfValue, fs.OutputIfValue
		default:
			continue // counters, drops
		}
		rate = max(rate, 1)
		f := Flow{Source: SourceSFlow, Exporter: from, Version: 5, Domain: p.SubAgentId, SampleRate: rate,
			Packets: uint64(rate), Start: now, End: now, InIf: in, OutIf: out, ReceivedTime: now}
		if !sflowFill(&f, recs) {
			noAddr++
			continue
		}
		f.Bytes *= uint64(rate)
		emit(&f)
	}
	if noAddr > 0 {
		return drop(ReasonNoAddress, fmt.Errorf("%d flow samples without an IP packet", noAddr))
	}
	return nil
}

// sflowFill reads a sample's addresses, ports and length; false if it has
// no IP packet.
func sflowFill(f *Flow, recs []sflow.FlowRecord) bool {
	for _, r := range recs {
		if h, ok := r.Data.(sflow.SampledHeader); ok {
			var ip []byte
			switch h.Protocol {
			case sflowHeaderEthernet:
				ip = ethernetPayload(h.HeaderData)
			case sflowHeaderIPv4, sflowHeaderIPv6:
				ip = h.HeaderData
			}
			var pk netflow.Packet
			if ip == nil || netflow.DecodePacket(ip, &pk) != nil {
				continue
			}
			f.Src, f.Dst, f.Protocol = pk.IP.Src.Unmap(), pk.IP.Dst.Unmap(), pk.IP.Protocol
			f.Bytes = uint64(pk.IP.TotalLength)
			if pk.HasPorts {
				f.SrcPort, f.DstPort = pk.SrcPort, pk.DstPort
			}
			if pk.HasTCP {
				f.TCPFlags = pk.TCP.Flags
			}
			if pk.HasICMP {
				f.ICMPType, f.ICMPCode, f.HasICMP = pk.ICMP.Type, pk.ICMP.Code, true
			}
			return true
		}
	}
	for _, r := range recs {
		var b *sflow.SampledIPBase
		switch v := r.Data.(type) {
		case sflow.SampledIPv4:
			b = &v.SampledIPBase
		case sflow.SampledIPv6:
			b = &v.SampledIPBase
		default:
			continue
		}
		src, ok1 := netip.AddrFromSlice(b.SrcIP)
		dst, ok2 := netip.AddrFromSlice(b.DstIP)
		if !ok1 || !ok2 {
			continue
		}
		f.Src, f.Dst, f.Protocol = src.Unmap(), dst.Unmap(), uint8(b.Protocol)
		f.SrcPort, f.DstPort, f.TCPFlags, f.Bytes = uint16(b.SrcPort), uint16(b.DstPort), uint8(b.TcpFlags), uint64(b.Length)
		return true
	}
	return false
}

// ethernetPayload returns the IP packet of an Ethernet frame (after any
// 802.1Q/802.1ad tags), or nil.
func ethernetPayload(b []byte) []byte {
	if len(b) < 14 {
		return nil
	}
	et, rest := binary.BigEndian.Uint16(b[12:]), b[14:]
	for (et == 0x8100 || et == 0x88a8) && len(rest) >= 4 {
		et, rest = binary.BigEndian.Uint16(rest[2:]), rest[4:]
	}
	if et != 0x0800 && et != 0x86dd {
		return nil
	}
	return rest
}

// sflowPrecheck rejects what goflow2 v2.2.6 would turn into an allocation
// of any size: it bounds the record count of every sample type at 1000
// except the expanded flow sample's, whose count it allocates as sent (up
// to 2^32 records, an out-of-memory crash). A record takes at least 8
// bytes, so a count the sample cannot hold is a lie.
func sflowPrecheck(pkt []byte) error {
	const expandedFlow = 3
	b := pkt
	if len(b) < 8 {
		return fmt.Errorf("sFlow header: %d bytes", len(b))
	}
	agent := 4
	if binary.BigEndian.Uint32(b[4:]) == 2 {
		agent = 16
	}
	hdr := 8 + agent + 16 // agent, sub-agent, sequence, uptime, sample count
	if len(b) < hdr {
		return fmt.Errorf("sFlow header: %d bytes", len(b))
	}
	b = b[hdr:]
	for len(b) >= 8 {
		format, n := binary.BigEndian.Uint32(b), int(min(binary.BigEndian.Uint32(b[4:]), 1<<20))
		if n > len(b)-8 {
			return nil // goflow2 stops here without allocating
		}
		body := b[8 : 8+n]
		if format == expandedFlow && len(body) >= 44 {
			if c := binary.BigEndian.Uint32(body[40:]); c > 1000 || int(c)*8 > len(body)-44 {
				return fmt.Errorf("sFlow expanded flow sample: %d records in %d bytes", c, len(body)-44)
			}
		}
		b = b[8+n:]
	}
	return nil
}
