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

	eg, ids := egress10k(b)
	egSrc, err := CompileEgress(egressConfig(b, "egress:\n  addresses:\n    - {name: b, address: 10.2.0.101, country: US}\n  policies:\n    - {id: s, expression: 'ip.src == 10.1.0.2', egress: b}\n"))
	must(b, err)
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

// BenchmarkEgressNewConnPaired measures what egress policies cost a new
// connection, with the machine's drifting load cancelled connection by
// connection rather than round by round. r holds edgegw's table of
// egress-10k (BenchmarkForwardEgress) and a second table whose NAT chain
// runs just before edgegw's (priority 99) and masquerades connections to
// port 5301; the first NAT chain to bind a connection is the last one it
// meets (nf_nat), so those never reach edgegw's chain. Three kinds of
// connection, taken in turn, in an order that rotates:
//
//	masq    10.1.0.2 → 5301: masqueraded by the second table (reference)
//	egress  10.1.0.2 → 5300: the client, an identity of the last policy's
//	        group, SNATed by edgegw's chain to egress b
//	miss    10.1.0.3 → 5300: no identity: through edgegw's chain, which
//	        it leaves masqueraded
//
// Each connection is timed from connect to close (RST); per block of 200
// turns, the ratio of masq's median time to each kind's is that kind's
// rate of new connections relative to masq (medians, because on a shared
// machine a few connections wait milliseconds for a core and would
// outweigh the rest in a sum). The reference pays the same second chain
// (one rule that matches) that the others pass (one rule that misses),
// so the ratio errs against egress. Metrics: the median of the blocks'
// ratios, and each kind's median connection time. Seconds:
// EDGEGW_EGRESS_PAIRED_SECONDS (default 20).
//
//	go test -run '^$' -bench EgressNewConnPaired -benchtime 1x ./firewall/
func BenchmarkEgressNewConnPaired(b *testing.B) {
	testkit.NeedTool(b, "nft", "nftables")
	secs := envInt("EDGEGW_EGRESS_PAIRED_SECONDS", 20)
	c, r, s := forwardLab(b)
	must(b, r.AddAddr("r1", "10.2.0.100/32"))
	must(b, r.AddAddr("r1", "10.2.0.101/32"))
	must(b, c.AddAddr("c0", "10.1.0.3/24"))
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = r.Do(tbl.Close) })
	eg, ids := egress10k(b)
	must(b, r.Do(func() error {
		if err := tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return tbl.Apply(Compile(Spec{WAN: "r1", Egress: eg}))
	}))
	for _, cmd := range [][]string{
		{"add", "table", "inet", "edgegw_bench"},
		{"add", "chain", "inet", "edgegw_bench", "post", "{ type nat hook postrouting priority 99; }"},
		{"add", "rule", "inet", "edgegw_bench", "post", "oifname", "r1", "tcp", "dport", "5301", "masquerade"},
	} {
		if out, err := r.Exec(context.Background(), "nft", cmd...); err != nil {
			b.Fatalf("nft %s: %v: %s", strings.Join(cmd, " "), err, out)
		}
	}
	seen := map[int]chan string{}
	for _, port := range []int{5300, 5301} {
		ln, err := s.Listen("tcp", fmt.Sprintf("10.2.0.2:%d", port))
		must(b, err)
		defer ln.Close()
		ch := make(chan string, 1)
		seen[port] = ch
		// Accept loop owned by the benchmark: ends when the listener closes.
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				select {
				case ch <- conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String():
				default:
				}
				conn.Close()
			}
		}()
	}
	kinds := []struct {
		name, from string
		port       int
		want       string // the address s sees
	}{
		{"masq", "10.1.0.2", 5301, "10.2.0.1"},
		{"egress", "10.1.0.2", 5300, "10.2.0.101"},
		{"miss", "10.1.0.3", 5300, "10.2.0.1"},
	}
	// dial runs in c's namespace (c.Do), so it returns its error rather
	// than end the benchmark from that thread.
	dial := func(k int) (time.Duration, error) {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(kinds[k].from)}}
		start := time.Now()
		conn, err := d.Dial("tcp", fmt.Sprintf("10.2.0.2:%d", kinds[k].port))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", kinds[k].name, err)
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		return time.Since(start), nil
	}
	// Each kind is what it says: s sees it from its address.
	must(b, c.Do(func() error {
		for k, kd := range kinds {
			for len(seen[kd.port]) > 0 {
				<-seen[kd.port]
			}
			if _, err := dial(k); err != nil {
				return err
			}
			if from := <-seen[kd.port]; from != kd.want {
				return fmt.Errorf("%s: the server saw the client from %s, want %s", kd.name, from, kd.want)
			}
		}
		return nil
	}))
	const block = 200
	ratios := make([][]float64, len(kinds))
	all := make([][]float64, len(kinds)) // every connection's time, µs
	var turns int
	b.ResetTimer()
	for range b.N {
		must(b, c.Do(func() error {
			end := time.Now().Add(time.Duration(secs) * time.Second)
			for time.Now().Before(end) {
				var times [3][]float64
				for i := range block {
					for j := range kinds {
						k := (i + j) % len(kinds)
						d, err := dial(k)
						if err != nil {
							return err
						}
						times[k] = append(times[k], float64(d)/float64(time.Microsecond))
					}
				}
				turns += block
				for k := range kinds {
					ratios[k] = append(ratios[k], median(times[0])/median(times[k]))
					all[k] = append(all[k], times[k]...)
				}
			}
			return nil
		}))
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.Logf("%d turns of %d connections, %d blocks", turns, len(kinds), len(ratios[0]))
	for k := range kinds {
		b.ReportMetric(median(all[k]), "us/conn-"+kinds[k].name)
	}
	for k := range kinds[1:] {
		k++
		b.Logf("%s/masq connections/s per block: %.3f", kinds[k].name, ratios[k])
		b.ReportMetric(median(ratios[k]), "x-conn/s-"+kinds[k].name)
	}
}

// egress10k is the egress configuration of BenchmarkForwardEgress's
// egress-10k case and its identities: 8 policies by group, alternately
// to egress a (10.2.0.100) and b (10.2.0.101), 9,999 identities of one
// /32 each spread over the 8 groups, and the client 10.1.0.2 in the last
// group (egress b).
func egress10k(b testing.TB) (*Egress, []Identity) {
	var y strings.Builder
	y.WriteString("egress:\n  addresses:\n    - {name: a, address: 10.2.0.100, country: DE}\n    - {name: b, address: 10.2.0.101, country: US}\n  policies:\n")
	for g := range 8 {
		fmt.Fprintf(&y, "    - {id: g%d, expression: 'identity.groups contains \"g%d\"', egress: %s}\n", g, g, []string{"a", "b"}[g%2])
	}
	eg, err := CompileEgress(egressConfig(b, y.String()))
	must(b, err)
	ids := make([]Identity, 0, 10000)
	for i := range 9999 {
		a := netip.AddrFrom4([4]byte{100, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		ids = append(ids, Identity{Email: fmt.Sprintf("u%d@example.com", i), Groups: []string{fmt.Sprintf("g%d", i%8)},
			Addrs: []netip.Prefix{netip.PrefixFrom(a, 32)}})
	}
	ids = append(ids, Identity{Email: "client@example.com", Groups: []string{"g7"},
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.2/32")}})
	return eg, ids
}

// BenchmarkEgressMapElements10k: computing the identity map of
// egress-10k (8 policies, 10,000 identities), the work of an Apply or of
// an identity update before any netlink.
func BenchmarkEgressMapElements10k(b *testing.B) {
	eg, ids := egress10k(b)
	p := Compile(Spec{WAN: "r1", Egress: eg})
	var m *Set
	for i := range p.Sets {
		if p.Sets[i].egressMap != nil {
			m = &p.Sets[i]
		}
	}
	if m == nil || len(p.Sets) != 1 {
		b.Fatalf("want one identity map, have sets %v", p.Sets)
	}
	b.ResetTimer()
	for range b.N {
		if es := p.egressMapElements(m, ids); len(es) == 0 {
			b.Fatal("empty map")
		}
	}
}

// BenchmarkEgressUpdateIdentities10k: one user of egress-10k changes
// group, alternately g0 and g1, and Table.UpdateIdentities changes the
// map in the kernel (a namespace of its own).
func BenchmarkEgressUpdateIdentities10k(b *testing.B) {
	lab := netlab.NewT(b)
	r, err := lab.NS("r")
	must(b, err)
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = r.Do(tbl.Close) })
	eg, ids := egress10k(b)
	must(b, r.Do(func() error {
		if err := tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return tbl.Apply(Compile(Spec{WAN: "r1", Egress: eg}))
	}))
	b.ResetTimer()
	must(b, r.Do(func() error {
		for i := range b.N {
			ids[0].Groups = []string{fmt.Sprintf("g%d", 1-i%2)}
			if err := tbl.UpdateIdentities(ids); err != nil {
				return err
			}
		}
		return nil
	}))
}

// BenchmarkEgressCounts10k: Table.EgressCounts with the identity map of
// egress-10k applied (a namespace of its own), what each metrics scrape
// and each GET /api/v1/egress costs.
func BenchmarkEgressCounts10k(b *testing.B) {
	lab := netlab.NewT(b)
	r, err := lab.NS("r")
	must(b, err)
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = r.Do(tbl.Close) })
	eg, ids := egress10k(b)
	must(b, r.Do(func() error {
		if err := tbl.UpdateIdentities(ids); err != nil {
			return err
		}
		return tbl.Apply(Compile(Spec{WAN: "r1", Egress: eg}))
	}))
	b.ResetTimer()
	must(b, r.Do(func() error {
		for range b.N {
			cs, err := tbl.EgressCounts()
			if err != nil {
				return err
			}
			if len(cs) != 8 {
				return fmt.Errorf("counts of %d policies, want 8: %v", len(cs), cs)
			}
		}
		return nil
	}))
}
