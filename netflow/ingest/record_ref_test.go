package ingest

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// recordRef is Record as it was built before the hot path was tuned: the
// reference TestRecordMatchesReference checks it against.
// Record turns a flow into a network_analytics_logs record: the packet-level
// fields that a flow has (addresses, ports, protocol, TCP flags), Cloudflare
// Magic Network Monitoring's SamplerAddress, Packets and Bytes (scaled by
// SampleInterval), flow start and end times, and Source. Datetime is the
// flow's end, or when it was received if the exporter gave no usable time.
func recordRef(f *Flow, colo netflow.Colo) logpush.Record {
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

// TestRecordMatchesReference: the record built with one string allocation
// is field for field the one built the plain way, on every flow of the
// captured datagrams (v5, v9, IPFIX, sFlow).
func TestRecordMatchesReference(t *testing.T) {
	n := 0
	for _, name := range []string{"softflowd-v5-sampled.bin", "softflowd-v9-sampled.bin", "softflowd-ipfix-sampled.bin", "pmacctd-sflow-sampled.bin"} {
		d := NewDecoder()
		for _, p := range datagrams(t, name) {
			d.Decode(exporterAddr, p, time.Now(), func(f *Flow) {
				n++
				if got, want := Record(f, netflowColo), recordRef(f, netflowColo); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: record\n%v\nwant\n%v", name, got, want)
				}
			})
		}
	}
	now := time.Now()
	for _, f := range []Flow{
		{Source: SourceIPFIX, Exporter: netip.MustParseAddrPort("[2001:db8::1]:9"), Src: netip.MustParseAddr("2001:db8:1::7"), Dst: netip.MustParseAddr("fe80::1%eth0"),
			Protocol: 58, HasICMP: true, ICMPType: 128, Packets: 1, Bytes: 64, ReceivedTime: now},
		{Source: SourceNetFlow, Exporter: exporterAddr, Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("192.0.2.255"),
			Protocol: 6, TCPFlags: 0xff, SrcPort: 1, DstPort: 65535, Start: now.Add(-time.Minute), End: now, ReceivedTime: now},
		{Source: SourceNetFlow, Exporter: exporterAddr, Protocol: 17, ReceivedTime: now}, // no addresses: "invalid IP"
	} {
		n++
		if got, want := Record(&f, netflowColo), recordRef(&f, netflowColo); !reflect.DeepEqual(got, want) {
			t.Fatalf("record\n%v\nwant\n%v", got, want)
		}
	}
	if n < 20 {
		t.Fatalf("only %d flows compared", n)
	}
}
