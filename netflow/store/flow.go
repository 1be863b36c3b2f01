// Package store is the gateway's embedded flow analytics store: flow
// records (the gateway's own NFLOG samples and flows ingested from other
// routers) rolled up per minute by exporter, source and destination
// address, protocol, ports, TCP flags, verdict and tunnel, kept in memory
// for a bounded time and size, and queried by time range with filters,
// group-by, top-N and bits/s or packets/s series (/api/v1/flows).
//
// It needs no external service; where one box is not enough, the same
// records go to Logpush destinations.
package store

import (
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// Flow is one flow record as the store and the alert rules see it: counts
// already scaled by the sampling interval.
type Flow struct {
	Time     time.Time  // when the flow was seen (its end, or its arrival)
	Start    time.Time  // when it began, if the exporter said; zero otherwise
	Source   string     // "nflog", "netflow", "ipfix" or "sflow"
	Exporter netip.Addr // the router that exported it; invalid for the gateway's own samples
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	Protocol uint8
	TCPFlags uint8
	Verdict  string // "pass" or "drop" for the gateway's own samples; "" otherwise
	Tunnel   string // the tunnel the gateway's sample crossed; "" otherwise
	Packets  uint64
	Bytes    uint64
}

// FromRecord reads a network_analytics_logs record. The gateway's own
// samples (one per sampled packet, without Packets and Bytes) count as
// SampleInterval packets of IPTotalLength bytes each; ingested flows carry
// scaled Packets and Bytes. ok is false for a record without addresses or
// time.
func FromRecord(r logpush.Record) (f Flow, ok bool) {
	var haveTime, haveSrc, haveDst, havePackets bool
	var totalLength, interval uint64 = 0, 1
	for i := range r {
		v := r[i].Value
		switch r[i].Name {
		case "Datetime":
			f.Time, haveTime = time.Unix(0, v.Int()), v.Kind() == logpush.KindTime
		case "FlowStartTime":
			if v.Kind() == logpush.KindTime {
				f.Start = time.Unix(0, v.Int())
			}
		case "Source":
			f.Source = v.Str()
		case "SamplerAddress":
			f.Exporter, _ = netip.ParseAddr(v.Str())
		case "IPSourceAddress":
			a, err := netip.ParseAddr(v.Str())
			f.Src, haveSrc = a.Unmap(), err == nil
		case "IPDestinationAddress":
			a, err := netip.ParseAddr(v.Str())
			f.Dst, haveDst = a.Unmap(), err == nil
		case "SourcePort":
			f.SrcPort = uint16(v.Int())
		case "DestinationPort":
			f.DstPort = uint16(v.Int())
		case "IPProtocol":
			f.Protocol = uint8(v.Int())
		case "TCPFlags":
			f.TCPFlags = uint8(v.Int())
		case "Verdict":
			f.Verdict = v.Str()
		case "TunnelName":
			f.Tunnel = v.Str()
		case "Packets":
			f.Packets, havePackets = uint64(v.Int()), true
		case "Bytes":
			f.Bytes = uint64(v.Int())
		case "IPTotalLength":
			totalLength = uint64(v.Int())
		case "SampleInterval":
			interval = max(uint64(v.Int()), 1)
		}
	}
	if !havePackets {
		f.Packets, f.Bytes = interval, totalLength*interval
	}
	return f, haveTime && haveSrc && haveDst
}
