package netflow

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// BenchmarkSamplingCost is the cost of sampling on forwarding: iperf3 TCP
// from namespace a through g (which forwards) to b, with g's prerouting
// chain sampling 1 in 100 packets to NFLOG and a Sampler reading them,
// against the same chain without the sampling rule. Rounds interleave in
// ABBA order; it reports the median of each and their ratio.
//
//	go test -run '^$' -bench SamplingCost -benchtime 1x ./netflow/
func BenchmarkSamplingCost(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		b.Skip("needs nft")
	}
	lab := netlab.NewT(b)
	a, err := lab.NS("a")
	must(b, err)
	g, err := lab.NS("g")
	must(b, err)
	bn, err := lab.NS("b")
	must(b, err)
	must(b, lab.Link(a, "veth0", "10.78.1.1/24", g, "veth0", "10.78.1.2/24"))
	must(b, lab.Link(g, "veth1", "10.78.2.2/24", bn, "veth0", "10.78.2.1/24"))
	must(b, a.Route("default", "10.78.1.2"))
	must(b, bn.Route("default", "10.78.2.2"))
	must(b, g.Sysctl("net.ipv4.ip_forward", "1"))
	nft := func(rules string) {
		cmd := exec.Command("ip", "netns", "exec", g.Name(), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("nft: %v: %s", err, out)
		}
	}
	nft(`table inet eftest { chain pre { type filter hook prerouting priority -300; policy accept; }; }`)
	off := `flush chain inet eftest pre`
	on := off + fmt.Sprintf("\nadd rule inet eftest pre numgen random mod 100 == 0 log group %d prefix \"ef/0/a\"", testGroup)

	netns, err := os.Open("/run/netns/" + g.Name())
	must(b, err)
	defer netns.Close()
	sink := &discardSink{}
	s, err := New(Options{Group: testGroup, Sink: sink, NetNS: int(netns.Fd())})
	must(b, err)
	s.SetRules(Rules{SampleInterval: 100})
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	srv, err := bn.Start("iperf3", "-s", "-B", "10.78.2.1")
	must(b, err)
	defer srv.Stop()
	netlab.Eventually(b, 10*time.Second, "iperf3 server", func() error { return a.Ping("10.78.2.1") })
	time.Sleep(200 * time.Millisecond) // iperf3 prints nothing when it listens; give it a moment after the route works

	measure := func() float64 {
		ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
		defer cancel()
		out, err := a.Exec(ctx, "iperf3", "-c", "10.78.2.1", "-t", "3", "-J")
		if err != nil {
			b.Fatalf("iperf3: %v", err)
		}
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		must(b, json.Unmarshal(out, &r))
		return r.End.SumReceived.BitsPerSecond / 1e9
	}
	var offs, ons []float64
	b.ResetTimer()
	for i := range 3 * b.N {
		// ABBA order: whichever runs second in a pair seems to gain from
		// the first's warm-up.
		for _, sampled := range [][2]bool{{false, true}, {true, false}}[i%2] {
			if sampled {
				nft(on)
				ons = append(ons, measure())
			} else {
				nft(off)
				offs = append(offs, measure())
			}
		}
	}
	b.StopTimer()
	slices.Sort(offs)
	slices.Sort(ons)
	mOff, mOn := offs[len(offs)/2], ons[len(ons)/2]
	st := s.Stats()
	b.Logf("off %.2f Gbit/s %v, on %.2f Gbit/s %v; samples %d lost %d", mOff, offs, mOn, ons, st.Samples, st.Lost)
	b.ReportMetric(mOff, "Gbit/s-off")
	b.ReportMetric(mOn, "Gbit/s-sampled")
	b.ReportMetric(mOn/mOff, "ratio")
	b.ReportMetric(float64(st.Lost), "lost")
	if st.Samples == 0 {
		b.Fatal("no samples read")
	}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
