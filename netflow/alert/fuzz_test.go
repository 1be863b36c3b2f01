package alert_test

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/alert"
	"github.com/edgegw/edgegw/netflow/ingest"
	"github.com/edgegw/edgegw/netflow/store"
)

// FuzzIngestToAnalytics runs arbitrary datagrams (seeded with softflowd's
// and pmacctd's) through the ingest decoder into the flow store and the
// alert rules, as the gateway's record sink does: whatever an exporter
// sends (times in 1970 or the far future, huge counts, flows that last
// for years), neither panics, and the store stays within its size.
func FuzzIngestToAnalytics(f *testing.F) {
	var seeds [][]byte
	for _, name := range []string{"softflowd-v5-sampled.bin", "softflowd-v9-sampled.bin", "softflowd-ipfix-sampled.bin", "pmacctd-sflow-sampled.bin"} {
		b, err := os.ReadFile(filepath.Join("..", "ingest", "testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		for len(b) >= 2 {
			n := int(binary.BigEndian.Uint16(b))
			seeds = append(seeds, b[2:2+n])
			f.Add(b[2 : 2+n])
			b = b[2+n:]
		}
	}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	from := netip.MustParseAddrPort("10.77.0.1:40000")
	f.Fuzz(func(t *testing.T, pkt []byte) {
		st, err := store.New(store.Options{Now: clock, Retention: time.Hour, MaxBytes: 64 * 200})
		if err != nil {
			t.Fatal(err)
		}
		e, err := alert.New(alert.Options{Now: clock, Rules: []alert.Rule{
			{Name: "all", Prefixes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, PacketsPerSecond: 1, Duration: 10 * time.Second, Sum: true},
			{Name: "each", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, BitsPerSecond: 1, Duration: time.Hour},
		}})
		if err != nil {
			t.Fatal(err)
		}
		d := ingest.NewDecoder()
		emit := func(fl *ingest.Flow) {
			r := ingest.Record(fl, netflow.Colo{})
			st.Push(netflow.Dataset, r)
			e.Push(netflow.Dataset, r)
		}
		for _, p := range seeds {
			d.Decode(from, p, now, emit)
		}
		d.Decode(from, pkt, now, emit)
		e.Evaluate(now.Add(5 * time.Second))
		if _, err := st.Query(store.Query{From: now.Add(-time.Hour), To: now.Add(time.Minute), GroupBy: store.Dimensions[:], Top: 5, Step: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if s := st.Stats(); s.Rows > 64+4 {
			t.Fatalf("store over its size: %+v", s)
		}
	})
}
