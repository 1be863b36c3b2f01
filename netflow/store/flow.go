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
func FromRecord(r logpush.Record) (Flow, bool) {
	v := logpush.ReadFlow(r)
	f := Flow{Time: v.Time, Start: v.Start, Source: v.Source, Exporter: v.Exporter, Src: v.Src, Dst: v.Dst,
		SrcPort: v.SrcPort, DstPort: v.DstPort, Protocol: v.Protocol, TCPFlags: v.TCPFlags,
		Verdict: v.Verdict, Tunnel: v.Tunnel, Packets: v.Packets, Bytes: v.Bytes}
	if !v.HasPackets {
		f.Packets, f.Bytes = v.SampleInterval, v.IPTotalLength*v.SampleInterval
	}
	return f, v.HasTime && v.Src.IsValid() && v.Dst.IsValid()
}
