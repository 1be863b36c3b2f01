package ingest

import (
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// BenchmarkDecode measures decoding softflowd's and pmacctd's datagrams
// into records (templates already learned), in flow records per second.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"softflowd-v5-sampled.bin", "softflowd-v9-sampled.bin", "softflowd-ipfix-sampled.bin", "pmacctd-sflow-sampled.bin"} {
		b.Run(name, func(b *testing.B) {
			pkts := datagrams(b, name)
			d := NewDecoder()
			now := time.Now()
			var flows int
			var last logpush.Record
			emit := func(f *Flow) { flows++; last = Record(f, netflowColo) }
			for _, p := range pkts {
				d.Decode(exporterAddr, p, now, emit)
			}
			flows = 0
			b.ResetTimer()
			for b.Loop() {
				for _, p := range pkts {
					d.Decode(exporterAddr, p, now, emit)
				}
			}
			b.ReportMetric(float64(flows)/b.Elapsed().Seconds(), "records/s")
			_ = last
		})
	}
}
