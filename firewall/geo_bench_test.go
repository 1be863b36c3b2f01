package firewall

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/geo/geotest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// geoBenchPrefixes is the size of a full country set: GeoLite2-Country
// has about 400k networks for its largest countries together; one set of
// 400k intervals is the worst a single country rule meets.
const geoBenchPrefixes = 400000

// benchGeoEntries returns a database of n networks of "CN" that do not
// merge (IPv4 /24s two apart from 11.0.0.0 on, and every tenth one an IPv6
// /48), plus the benchmark client's network 10.1.0.0/24 in clientCountry
// and, when moved > 0, the first moved networks in "XX" instead (a
// database update).
func benchGeoEntries(n, moved int, clientCountry string) []geotest.Entry {
	out := make([]geotest.Entry, 0, n+1)
	for i := range n {
		e := geotest.Entry{Country: "CN", ASN: uint32(64512 + i%1000)}
		if i%10 == 9 {
			e.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x24, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}), 48)
		} else {
			v := uint32(11<<24) + uint32(i)*512
			e.Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24)
		}
		if i < moved {
			e.Country = "XX"
		}
		out = append(out, e)
	}
	return append(out, geotest.Entry{Prefix: netip.MustParsePrefix("10.1.0.0/24"), Country: clientCountry, ASN: 65001})
}

var geoBenchDBs = sync.OnceValues(func() ([2][]byte, error) {
	var out [2][]byte
	for i, moved := range []int{0, geoBenchPrefixes / 100} {
		b, err := geotest.Build(benchGeoEntries(geoBenchPrefixes, moved, "DE"))
		if err != nil {
			return out, err
		}
		out[i] = b
	}
	return out, nil
})

// geoBenchDB returns the snapshot of the 400k-network database, and with
// update, the same database with 1% of the networks moved to another
// country (as between two monthly releases).
func geoBenchDB(b *testing.B, update bool) *geo.DB {
	b.Helper()
	dbs, err := geoBenchDBs()
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	if update {
		i = 1
	}
	db, err := geo.Parse(dbs[i], dbs[i])
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func geoBenchRules(b *testing.B, expr string) *Ruleset {
	b.Helper()
	on := true
	rs, err := CompileRules(&Config{GeoIP: &GeoIP{Country: "x", ASN: "x"},
		Rules: []Rule{{ID: "geo", Expression: expr, Action: "block", Enabled: &on}}})
	if err != nil {
		b.Fatal(err)
	}
	return rs
}

// BenchmarkGeoLoad400k reads and verifies a 400k-network database and
// groups its networks by country and AS: the userspace part of taking a
// new database.
func BenchmarkGeoLoad400k(b *testing.B) {
	dbs, err := geoBenchDBs()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(dbs[0]))/1e6, "MB")
	for b.Loop() {
		if _, err := geo.Parse(dbs[0], dbs[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGeoApply400k applies a table whose one country rule holds
// 400k networks (360k IPv4, 40k IPv6 intervals), the sets filled from
// the snapshot in the same batch.
func BenchmarkGeoApply400k(b *testing.B) {
	db := geoBenchDB(b, false)
	p := Compile(Spec{Rules: geoBenchRules(b, `ip.src.country == "CN"`)})
	tbl, ns := benchTable(b)
	if err := tbl.UpdateGeo(db); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := ns.Do(func() error { return tbl.Apply(p) }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tbl.GeoSetSizes()["g4_0"]+tbl.GeoSetSizes()["g6_0"]), "intervals")
}

// BenchmarkGeoUpdate400k takes a new database in place: each iteration
// swaps between two 400k-network databases that differ in 1% of the
// networks' country (UpdateGeo: the set intervals recomputed, 4,000
// deleted and added in one batch). The database load itself is
// BenchmarkGeoLoad400k.
func BenchmarkGeoUpdate400k(b *testing.B) {
	dbs := [2]*geo.DB{geoBenchDB(b, false), geoBenchDB(b, true)}
	p := Compile(Spec{Rules: geoBenchRules(b, `ip.src.country == "CN"`)})
	tbl, ns := benchTable(b)
	if err := tbl.UpdateGeo(dbs[0]); err != nil {
		b.Fatal(err)
	}
	if err := ns.Do(func() error { return tbl.Apply(p) }); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		if err := ns.Do(func() error { return tbl.UpdateGeo(dbs[i%2]) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkForwardGeo measures iperf3 TCP forwarded through a router
// namespace, client 10.1.0.2 → r → server 10.2.0.2:5201, with edgegw's
// table and, interleaved round by round:
//
//	none      no rules (reference)
//	geo-miss  ip.src.country == "CN" (400k networks): the client's
//	          address is in none, every packet misses the lookup
//	geo-hit   ip.src.country in {"CN" "DE"} and tcp.dstport == 9: the
//	          client is in DE, so the lookup in the 400k-interval set
//	          hits; the port test then fails, so nothing is dropped
//
// Rounds: EDGEGW_FWD_ROUNDS (default 3), seconds per run:
// EDGEGW_FWD_SECONDS (default 3). The goal is geo-miss and geo-hit at
// ≥ 0.9× none.
//
//	go test -run '^$' -bench ForwardGeo -benchtime 1x ./firewall/
func BenchmarkForwardGeo(b *testing.B) {
	testkit.NeedTool(b, "iperf3", "iperf3")
	rounds, secs := envInt("EDGEGW_FWD_ROUNDS", 3), envInt("EDGEGW_FWD_SECONDS", 3)
	c, r, s := forwardLab(b)
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = r.Do(tbl.Close) })
	must(b, tbl.UpdateGeo(geoBenchDB(b, false)))
	miss := Compile(Spec{Rules: geoBenchRules(b, `ip.src.country == "CN"`)})
	// The client is in DE: its packets hit the 400k-interval set, then
	// fail the port test.
	hit := Compile(Spec{Rules: geoBenchRules(b, `ip.src.country in {"CN" "DE"} and tcp.dstport == 9`)})
	cases := []struct {
		name string
		p    *Program
	}{{"none", Compile(Spec{})}, {"geo-miss", miss}, {"geo-hit", hit}}

	srv, err := s.Start("iperf3", "-s", "-p", "5201")
	must(b, err)
	defer srv.Stop()
	netlab.Eventually(b, 10*time.Second, "iperf3 server", func() error {
		_, err := c.Exec(b.Context(), "iperf3", "-c", "10.2.0.2", "-p", "5201", "-t", "1", "--connect-timeout", "1000")
		return err
	})
	gbps := map[string][]float64{}
	load := func() string {
		l, _ := os.ReadFile("/proc/loadavg")
		return strings.Join(strings.Fields(string(l))[:3], " ")
	}
	b.Logf("load at start: %s", load())
	b.ResetTimer()
	for range b.N {
		for round := range rounds {
			for _, tc := range cases {
				start := time.Now()
				must(b, r.Do(func() error { return tbl.Apply(tc.p) }))
				applied := time.Since(start)
				g, _ := iperf(b, c, secs)
				gbps[tc.name] = append(gbps[tc.name], g)
				b.Logf("round %d %-9s %6.2f Gbit/s (apply %v)", round, tc.name, g, applied.Round(time.Millisecond))
			}
		}
	}
	b.StopTimer()
	b.Logf("load at end: %s", load())
	b.ReportMetric(0, "ns/op")
	base := median(gbps["none"])
	for _, tc := range cases {
		m := median(gbps[tc.name])
		b.ReportMetric(m, "Gbit/s-"+tc.name)
		if tc.name != "none" {
			b.ReportMetric(m/base, "x-"+tc.name)
			var rs []float64
			for i := range gbps[tc.name] {
				rs = append(rs, gbps[tc.name][i]/gbps["none"][i])
			}
			b.Logf("paired %s/none per round: %.3f", tc.name, rs)
		}
	}
}
