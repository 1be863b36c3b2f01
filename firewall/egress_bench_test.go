package firewall

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// BenchmarkForwardEgress measures what egress policies cost forwarding,
// client 10.1.0.2 → r → server 10.2.0.2 with r1 as the WAN, interleaved
// round by round:
//
//	masq        today's table: everything masqueraded to r1's address
//	egress-10k  8 egress policies by group over 10,000 identities (one
//	            /32 each, 8 groups), two egress addresses on r1; the
//	            client is an identity of the last policy's group. The 8
//	            identity-only policies are one run: one identity-map
//	            lookup per new connection (egress.go)
//	egress-src  one egress policy on the client's source address (no set)
//
// Two measures per case: iperf3 TCP Gbit/s (EDGEGW_FWD_STREAMS parallel
// streams, default 2, summed; long connections: the NAT chain sees their
// first packet only) and new TCP connections per second (connect, then
// close with RST, from one goroutine: every connection passes the NAT
// chain once). The order of the cases rotates from round to round, so
// drift in the machine's load (another job on the same cores) falls on
// each case alike. Metrics: medians, and the median over rounds of each
// case's ratio to masq in the same round: compare those ratios, not
// absolute numbers across runs. Rounds: EDGEGW_FWD_ROUNDS (default 3),
// seconds per run: EDGEGW_FWD_SECONDS (default 3).
//
//	go test -run '^$' -bench ForwardEgress -benchtime 1x ./firewall/
func BenchmarkForwardEgress(b *testing.B) {
	testkit.NeedTool(b, "iperf3", "iperf3")
	testkit.NeedTool(b, "conntrack", "conntrack")
	rounds, secs := envInt("EDGEGW_FWD_ROUNDS", 3), envInt("EDGEGW_FWD_SECONDS", 3)
	streams := envInt("EDGEGW_FWD_STREAMS", 2)
	c, r, s := forwardLab(b)
	must(b, r.AddAddr("r1", "10.2.0.100/32"))
	must(b, r.AddAddr("r1", "10.2.0.101/32"))
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = r.Do(tbl.Close) })

	var y strings.Builder
	y.WriteString("egress:\n  addresses:\n    - {name: a, address: 10.2.0.100, country: DE}\n    - {name: b, address: 10.2.0.101, country: US}\n  policies:\n")
	for g := range 8 {
		fmt.Fprintf(&y, "    - {id: g%d, expression: 'identity.groups contains \"g%d\"', egress: %s}\n", g, g, []string{"a", "b"}[g%2])
	}
	eg, err := CompileEgress(egressConfig(b, y.String()))
	must(b, err)
	egSrc, err := CompileEgress(egressConfig(b, "egress:\n  addresses:\n    - {name: b, address: 10.2.0.101, country: US}\n  policies:\n    - {id: s, expression: 'ip.src == 10.1.0.2', egress: b}\n"))
	must(b, err)
	ids := make([]Identity, 0, 10000)
	for i := range 9999 {
		a := netip.AddrFrom4([4]byte{100, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		ids = append(ids, Identity{Email: fmt.Sprintf("u%d@example.com", i), Groups: []string{fmt.Sprintf("g%d", i%8)},
			Addrs: []netip.Prefix{netip.PrefixFrom(a, 32)}})
	}
	ids = append(ids, Identity{Email: "client@example.com", Groups: []string{"g7"},
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.2/32")}})
	must(b, r.Do(func() error { return tbl.UpdateIdentities(ids) }))

	cases := []struct {
		name string
		spec Spec
		from string // the address s sees
	}{
		{"masq", Spec{WAN: "r1"}, "10.2.0.1"},
		{"egress-10k", Spec{WAN: "r1", Egress: eg}, "10.2.0.101"},
		{"egress-src", Spec{WAN: "r1", Egress: egSrc}, "10.2.0.101"},
	}
	srv, err := s.Start("iperf3", "-s", "-p", "5201")
	must(b, err)
	defer srv.Stop()
	ln, err := s.Listen("tcp", "10.2.0.2:5300")
	must(b, err)
	defer ln.Close()
	seen := make(chan string, 1)
	// Accept loop owned by the benchmark: ends when the listener closes.
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case seen <- conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String():
			default:
			}
			conn.Close()
		}
	}()
	netlab.Eventually(b, 10*time.Second, "iperf3 server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, "iperf3", "-c", "10.2.0.2", "-p", "5201", "-t", "1", "--connect-timeout", "1000")
		return err
	})
	gbps, cps := map[string][]float64{}, map[string][]float64{}
	b.ResetTimer()
	for range b.N {
		for round := range rounds {
			for k := range cases {
				tc := cases[(round+k)%len(cases)]
				must(b, r.Do(func() error { return tbl.Apply(Compile(tc.spec)) }))
				// A new case starts without the last one's connections:
				// a SYN that reuses a closed entry's tuple keeps its
				// old NAT binding and never reaches the NAT chain.
				if out, err := r.Exec(context.Background(), "conntrack", "-F"); err != nil {
					b.Fatalf("conntrack -F: %v: %s", err, out)
				}
				// The case is what it says: s sees the client from its address.
				for len(seen) > 0 {
					<-seen
				}
				n := connRate(b, c, time.Duration(secs)*time.Second)
				if from := <-seen; from != tc.from {
					b.Fatalf("%s: the server saw the client from %s, want %s", tc.name, from, tc.from)
				}
				g, _ := iperfStreams(b, c, secs, streams)
				gbps[tc.name] = append(gbps[tc.name], g)
				cps[tc.name] = append(cps[tc.name], n)
				b.Logf("round %d %-10s %6.2f Gbit/s %8.0f connections/s", round, tc.name, g, n)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	for _, tc := range cases {
		b.ReportMetric(median(gbps[tc.name]), "Gbit/s-"+tc.name)
		b.ReportMetric(median(cps[tc.name]), "conn/s-"+tc.name)
	}
	for _, tc := range cases[1:] {
		var rg, rc []float64
		for i := range gbps["masq"] {
			rg = append(rg, gbps[tc.name][i]/gbps["masq"][i])
			rc = append(rc, cps[tc.name][i]/cps["masq"][i])
		}
		b.Logf("paired %s/masq per round: Gbit/s %.3f, connections/s %.3f", tc.name, rg, rc)
		b.ReportMetric(median(rg), "x-Gbit/s-"+tc.name)
		b.ReportMetric(median(rc), "x-conn/s-"+tc.name)
	}
}

// connRate opens TCP connections from c to s's port 5300 one after the
// other for d, closing each with RST (no TIME_WAIT), and returns the
// connections per second.
func connRate(b *testing.B, c *netlab.NS, d time.Duration) float64 {
	var n int
	err := c.Do(func() error {
		dl := net.Dialer{Timeout: 3 * time.Second}
		start := time.Now()
		for time.Since(start) < d {
			conn, err := dl.Dial("tcp", "10.2.0.2:5300")
			if err != nil {
				return err
			}
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			n++
		}
		return nil
	})
	must(b, err)
	return float64(n) / d.Seconds()
}
