package store

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestHourSums: queries answered through hour summaries (grouped by one
// dimension, no filter, whole hours) give exactly the answers of scanning
// every minute, for every dimension and prefix cut, whole and partial
// hours, with and without hourly series; and a summary follows its hour's
// changes (a late flow, a compaction).
func TestHourSums(t *testing.T) {
	c := &clock{t0.Add(5*time.Hour + 30*time.Minute)}
	s, err := New(Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	addr := func() netip.Addr {
		if rng.IntN(4) == 0 {
			return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(rng.IntN(3)), 0, 0, 0, 0, 0, 0, 0, 0, byte(rng.IntN(5))})
		}
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(2)), byte(rng.IntN(3)), byte(rng.IntN(6))})
	}
	flowAt := func(m int) Flow {
		return Flow{Time: t0.Add(time.Duration(m)*time.Minute + time.Second), Source: []string{"netflow", "ipfix", "nflog"}[rng.IntN(3)],
			Exporter: netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(3))}), Src: addr(), Dst: addr(),
			SrcPort: uint16(rng.IntN(4) * 1000), DstPort: uint16(rng.IntN(3)), Protocol: uint8(rng.IntN(3)), TCPFlags: uint8(rng.IntN(3)),
			Verdict: []string{"", "pass", "drop"}[rng.IntN(3)], Tunnel: []string{"", "gre1"}[rng.IntN(2)],
			Packets: uint64(rng.IntN(10) + 1), Bytes: uint64(rng.IntN(1000) + 1)}
	}
	for m := range 5*60 + 30 {
		if m%7 == 3 {
			continue // minutes without flows
		}
		for range 100 {
			s.Add(flowAt(m))
		}
	}
	defer func(n int) { minutesPerScanner = n }(minutesPerScanner)
	minutesPerScanner = 30
	check := func(t *testing.T) {
		t.Helper()
		ranges := [][2]time.Time{{t0, t0.Add(6 * time.Hour)}, {t0.Add(20 * time.Minute), t0.Add(4*time.Hour + 10*time.Minute)}, {t0.Add(time.Hour), t0.Add(3 * time.Hour)}, {t0.Add(30 * time.Minute), t0.Add(5*time.Hour + 30*time.Minute)}}
		for _, d := range Dimensions {
			for _, bits := range [][2]int{{0, 0}, {24, 64}} {
				for _, r := range ranges {
					for _, step := range []time.Duration{0, time.Hour, 7 * time.Minute, 2 * time.Hour} {
						q := Query{From: r[0], To: r[1], GroupBy: []Dimension{d}, PrefixLen4: bits[0], PrefixLen6: bits[1], Step: step}
						hourSums = false
						want, err := s.Query(q)
						hourSums = true
						if err != nil {
							t.Fatal(err)
						}
						for range 2 { // building the summaries, then reading them
							got, err := s.Query(q)
							if err != nil {
								t.Fatal(err)
							}
							if !reflect.DeepEqual(got, want) {
								t.Fatalf("%v %v %v step %v: summaries\n%v\nminutes\n%v", d, bits, r, step, got, want)
							}
						}
					}
				}
			}
		}
	}
	check(t)
	s.mu.Lock()
	built := 0
	for _, sum := range s.sums {
		if !sum.worthless {
			built++
		}
	}
	s.mu.Unlock()
	if built < 5*len(Dimensions)/2 {
		t.Fatalf("only %d hour summaries kept", built)
	}
	// A late flow for a summarized hour, then a compaction of another.
	for range 50 {
		s.Add(flowAt(61))
	}
	s.mu.Lock()
	s.compactMinute(s.minutes[150])
	s.mu.Unlock()
	check(t)
	if st := s.Stats(); st.Compacted != 1 {
		t.Fatalf("stats %+v", st)
	}
}
