package store

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestGroupingPaths checks every way Query finds a row's group (one
// address, string or small-number dimension; several dimensions; none),
// the range split among parallel scanners and merged (with -cpu 1, one
// scanner), against a plain sum over the flows added, over frozen minutes, the
// current one and flows that arrive late for a frozen minute, IPv4 and
// IPv6, with and without prefix cuts.
func TestGroupingPaths(t *testing.T) {
	c := &clock{t0.Add(30 * time.Minute)}
	s, err := New(Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr {
		if rng.IntN(4) == 0 {
			return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(rng.IntN(3)), 0, 0, 0, 0, 0, 0, 0, 0, byte(rng.IntN(5))})
		}
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(2)), byte(rng.IntN(3)), byte(rng.IntN(6))})
	}
	var flows []Flow
	for m := range 20 {
		for range 200 {
			f := Flow{Time: t0.Add(time.Duration(m)*time.Minute + time.Second), Source: []string{"netflow", "ipfix", "nflog"}[rng.IntN(3)],
				Exporter: netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(3))}), Src: addr(), Dst: addr(),
				SrcPort: uint16(rng.IntN(4) * 1000), DstPort: uint16(rng.IntN(3)), Protocol: uint8(rng.IntN(3)), TCPFlags: uint8(rng.IntN(3)),
				Verdict: []string{"", "pass", "drop"}[rng.IntN(3)], Tunnel: []string{"", "gre1"}[rng.IntN(2)],
				Packets: uint64(rng.IntN(10) + 1), Bytes: uint64(rng.IntN(1000) + 1)}
			flows = append(flows, f)
			s.Add(f)
		}
	}
	// Late flows for minute 3, frozen by now, some with keys it holds.
	for i := range 50 {
		f := flows[3*200+i]
		f.Packets, f.Bytes = 1, 1
		flows = append(flows, f)
		s.Add(f)
	}
	frozen := 0
	for _, m := range s.minutes {
		if len(m.frozen) > 0 {
			frozen++
		}
	}
	if frozen != 19 {
		t.Fatalf("%d frozen minutes, want 19 (all but the latest)", frozen)
	}

	// Split the 20 minutes among scanners, as a long range would be.
	defer func(n int) { minutesPerScanner = n }(minutesPerScanner)
	minutesPerScanner = 1

	cases := [][]Dimension{nil}
	for _, d := range Dimensions {
		cases = append(cases, []Dimension{d})
	}
	cases = append(cases, []Dimension{DimSrc, DimDstPort}, []Dimension{DimExporter, DimSource, DimVerdict})
	for _, dims := range cases {
		for _, bits := range [][2]int{{0, 0}, {24, 64}, {16, 48}} {
			t.Run(fmt.Sprintf("%v/%d", dims, bits), func(t *testing.T) {
				q := Query{From: t0, To: t0.Add(30 * time.Minute), GroupBy: dims, PrefixLen4: bits[0], PrefixLen6: bits[1],
					Filter: Filter{Protocol: []uint8{0, 1}}, Step: 5 * time.Minute}
				res, err := s.Query(q)
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]counts{}
				for _, g := range res.Groups {
					got[fmt.Sprint(g.Key)] = counts{g.Packets, g.Bytes}
					// The series adds up to the group's totals.
					var pk float64
					for _, p := range g.Series {
						pk += p.PacketsPerSecond * q.Step.Seconds()
					}
					if len(g.Series) != 6 || math.Abs(pk-float64(g.Packets)) > 1e-6*float64(g.Packets) {
						t.Errorf("group %v: %d points adding up to %f packets, want 6 and %d", g.Key, len(g.Series), pk, g.Packets)
					}
				}
				var by [nDims]bool
				for _, d := range dims {
					for i, dd := range Dimensions {
						if d == dd {
							by[i] = true
						}
					}
				}
				want := map[string]counts{}
				for _, f := range flows {
					if f.Protocol > 1 {
						continue
					}
					k := key{exporter: f.Exporter, src: f.Src, dst: f.Dst, srcPort: f.SrcPort, dstPort: f.DstPort,
						protocol: f.Protocol, tcpFlags: f.TCPFlags, source: f.Source, verdict: f.Verdict, tunnel: f.Tunnel}
					g := groupKeyOf(&k, &by, bits[0], bits[1])
					name := fmt.Sprint(render(&g, dims))
					c := want[name]
					c.packets += f.Packets
					c.bytes += f.Bytes
					want[name] = c
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got %d groups %v\nwant %d groups %v", len(got), got, len(want), want)
				}
			})
		}
	}
}

// TestCompactFrozen: compacting a frozen minute (to stay under
// max_bytes) keeps its totals and keeps it frozen.
func TestCompactFrozen(t *testing.T) {
	c := &clock{t0.Add(5 * time.Minute)}
	s, _ := New(Options{Now: c.now})
	for i := range 100 {
		s.Add(flow(0, "192.0.2.1", fmt.Sprintf("10.0.0.%d", i), "198.51.100.7", uint16(40000+i), 443, 6, 1, 100))
	}
	s.Add(flow(1, "192.0.2.1", "10.0.0.1", "198.51.100.7", 40000, 443, 6, 1, 100)) // minute 0 is past
	m := s.minutes[0]
	if len(m.frozen) != 100 || len(m.rows) != 0 {
		t.Fatalf("minute 0: %d frozen, %d in the map", len(m.frozen), len(m.rows))
	}
	s.mu.Lock()
	s.compactMinute(m)
	s.mu.Unlock()
	if len(m.frozen) != 1 || !m.compact || s.Stats().Rows != 2 {
		t.Fatalf("after compaction: %d frozen rows, compact %v, stats %+v", len(m.frozen), m.compact, s.Stats())
	}
	res, err := s.Query(Query{From: t0, To: t0.Add(time.Minute)})
	if err != nil || len(res.Groups) != 1 || res.Groups[0].Packets != 100 || res.Groups[0].Bytes != 10000 {
		t.Fatalf("query %+v, %v", res, err)
	}
}
