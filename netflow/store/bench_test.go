package store

import (
	"net/netip"
	"testing"
	"time"
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
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Query(q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
