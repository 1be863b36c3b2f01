package store

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// BenchmarkAdd measures rolling flows into the current minute, in
// flows per second, with 4096 distinct rows.
func BenchmarkAdd(b *testing.B) {
	s, _ := New(Options{Now: func() time.Time { return t0.Add(30 * time.Second) }})
	fs := make([]Flow, 4096)
	for i := range fs {
		fs[i] = Flow{Time: t0, Source: "ipfix", Exporter: netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 4)}),
			Src: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Dst: netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 16)}),
			SrcPort: uint16(30000 + i), DstPort: 443, Protocol: 6, Packets: 10, Bytes: 15000}
	}
	b.ResetTimer()
	n := 0
	for b.Loop() {
		s.Add(fs[n%len(fs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkQuery7Days measures a top-10 query over seven days of minutes,
// each with rowsPerMinute rows (1,008,000 rows, about 200 MB by the
// store's estimate): grouped by destination /24, and by source address.
func BenchmarkQuery7Days(b *testing.B) {
	const rowsPerMinute = 100
	end := t0.Add(7 * 24 * time.Hour)
	now := t0
	s, _ := New(Options{Now: func() time.Time { return now }, MaxBytes: 1 << 30})
	for m := range 7 * 24 * 60 {
		now = t0.Add(time.Duration(m)*time.Minute + time.Second)
		for i := range rowsPerMinute {
			s.Add(Flow{Time: now, Source: "netflow", Exporter: netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 4)}),
				Src: netip.AddrFrom4([4]byte{10, byte(m), byte(m >> 8), byte(i)}), Dst: netip.AddrFrom4([4]byte{198, 51, byte(i % 7), byte(i)}),
				SrcPort: uint16(i), DstPort: 443, Protocol: 6, Packets: uint64(i + 1), Bytes: uint64(1000 * (i + 1))})
		}
	}
	if st := s.Stats(); st.Rows != 7*24*60*rowsPerMinute {
		b.Fatalf("stats %+v", st)
	}
	for _, q := range []struct {
		name string
		q    Query
	}{
		{"dst24", Query{From: t0, To: end, GroupBy: []Dimension{DimDst}, PrefixLen4: 24, Top: 10}},
		{"src", Query{From: t0, To: end, GroupBy: []Dimension{DimSrc}, Top: 10}},
		{"exporter-series-1h", Query{From: t0, To: end, GroupBy: []Dimension{DimExporter}, Top: 10, Step: time.Hour}},
	} {
		// Warm: the hour summaries the first query builds are kept
		// (hours.go); cold: every query builds them again, as the first
		// query of a grouping does.
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Query(q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(q.name+"-cold", func(b *testing.B) {
			for b.Loop() {
				s.mu.Lock()
				clear(s.sums)
				s.sumRows = 0
				s.mu.Unlock()
				if _, err := s.Query(q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPush measures the record sink's path: reading an ingested
// flow's network_analytics_logs record and rolling it up, in records per
// second.
func BenchmarkPush(b *testing.B) {
	s, _ := New(Options{Now: func() time.Time { return t0.Add(30 * time.Second) }})
	rs := make([]logpush.Record, 1024)
	for i := range rs {
		rs[i] = logpush.Record{
			{Name: "Datetime", Value: logpush.Time(t0)}, {Name: "Source", Value: logpush.String("ipfix")},
			{Name: "SamplerAddress", Value: logpush.String("192.0.2.1")},
			{Name: "IPSourceAddress", Value: logpush.String(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String())},
			{Name: "IPDestinationAddress", Value: logpush.String("198.51.100.7")},
			{Name: "IPProtocol", Value: logpush.Uint(6)}, {Name: "SourcePort", Value: logpush.Uint(uint64(40000 + i))},
			{Name: "DestinationPort", Value: logpush.Uint(443)}, {Name: "TCPFlags", Value: logpush.Uint(0x18)},
			{Name: "Packets", Value: logpush.Uint(10)}, {Name: "Bytes", Value: logpush.Uint(15000)},
			{Name: "SampleInterval", Value: logpush.Uint(1)},
		}
	}
	n := 0
	for b.Loop() {
		s.Push("network_analytics_logs", rs[n%len(rs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkMemory7Days fills a store with the default options as seven
// days at 1,000 flows/s of an office would: 60,000 flows a minute that
// fold into rowsPerMinute rows (250 LAN hosts talking to 40 servers on
// three ports from ephemeral ports), then reports the rows kept, the live
// heap after a collection, the heap per row against the store's estimate
// (entryBytes), and the minutes compacted and evicted to stay under
// max_bytes. The store keeps nothing on disk.
//
//	go test -run '^$' -bench Memory7Days -benchtime 1x ./netflow/store/
func BenchmarkMemory7Days(b *testing.B) {
	const rowsPerMinute, flowsPerRow = 1000, 60
	for b.Loop() {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		now := t0
		s, _ := New(Options{Now: func() time.Time { return now }})
		for m := range 7 * 24 * 60 {
			now = t0.Add(time.Duration(m)*time.Minute + 30*time.Second)
			for i := range rowsPerMinute {
				s.Add(Flow{Time: now, Source: "nflog", Verdict: "pass",
					Src: netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 250)}), Dst: netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 40)}),
					SrcPort: uint16(32768 + (i*7919+m)%28000), DstPort: []uint16{443, 80, 53}[i%3], Protocol: 6, TCPFlags: 0x18,
					Packets: flowsPerRow * 10, Bytes: flowsPerRow * 10 * 800})
			}
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := s.Stats()
		heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		b.ReportMetric(float64(st.Rows), "rows")
		b.ReportMetric(heap/(1<<20), "heap-MiB")
		b.ReportMetric(heap/float64(st.Rows), "heap-B/row")
		b.ReportMetric(float64(st.Bytes)/(1<<20), "estimate-MiB")
		b.ReportMetric(float64(st.Compacted), "minutes-compacted")
		b.ReportMetric(float64(st.Evicted), "minutes-evicted")
		b.ReportMetric(float64(st.Minutes), "minutes-kept")
		runtime.KeepAlive(s)
	}
}
