package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/florianl/go-nflog/v2"
)

// forwardLab is the forwarding benchmarks' topology: client c
// (10.1.0.2) → router r (r0 10.1.0.1, r1 10.2.0.1, forwarding on) →
// server s (10.2.0.2).
func forwardLab(b *testing.B) (c, r, s *netlab.NS) {
	b.Helper()
	lab := netlab.NewT(b)
	c, err := lab.NS("c")
	must(b, err)
	r, err = lab.NS("r")
	must(b, err)
	s, err = lab.NS("s")
	must(b, err)
	must(b, lab.Link(c, "c0", "10.1.0.2/24", r, "r0", "10.1.0.1/24"))
	must(b, lab.Link(r, "r1", "10.2.0.1/24", s, "s0", "10.2.0.2/24"))
	must(b, c.Route("default", "10.1.0.1"))
	must(b, s.Route("default", "10.2.0.1"))
	must(b, r.Sysctl("net.ipv4.ip_forward", "1"))
	return c, r, s
}

// BenchmarkForwardTCP measures iperf3 TCP forwarded through a router
// namespace, client 10.1.0.2 → r → server 10.2.0.2:5201, for each kernel
// configuration below, interleaved round by round so that drifting load
// hits them alike. Every case but "bare" has edgegw's table (its NAT chain
// turns conntrack on, as on a real gateway); the rules never match the
// traffic. Cases:
//
//	bare           no nftables at all (reference)
//	none           edgegw's table without rules
//	none+s100      no rules, flow sampling 1 in 100, an NFLOG reader draining the samples
//	200            200 rules (benchConfig)
//	200+as         200 rules behind the anti-spoofing stage of a busy site
//	               (benchTunnels: the traffic's source is no tunnel's, one
//	               lookup that misses)
//	200+as-own     the same, with the client's subnet owned by the
//	               interface it arrives on (a tunnel's own traffic: the
//	               lookup hits, the owner chain returns)
//	200+s100       200 rules with sampling 1 in 100
//	10k            10,000 rules, compiled by edgegw (grouped by protocol and port)
//	10k-nft        the same 10,000 rules as one linear chain loaded with the nft CLI
//
// The metrics are the median Gbit/s of each case, its ratio to "none", and
// the median over rounds of the ratio of each sampled or anti-spoofing case
// to the case run just before it without.
// Rounds: EDGEGW_FWD_ROUNDS (default 3), seconds per run: EDGEGW_FWD_SECONDS
// (default 3); EDGEGW_FWD_CASES runs only the cases it names (comma
// separated; "none" always runs, as the reference); EDGEGW_FWD_NOGSO=1 turns TSO/GSO off on the client, so that
// the router sees MTU-sized packets, as from a NIC without GRO.
//
//	go test -run '^$' -bench ForwardTCP -benchtime 1x ./firewall/
func BenchmarkForwardTCP(b *testing.B) {
	testkit.NeedTool(b, "iperf3", "iperf3")
	testkit.NeedTool(b, "nft", "nftables")
	rounds, secs := envInt("EDGEGW_FWD_ROUNDS", 3), envInt("EDGEGW_FWD_SECONDS", 3)
	c, r, s := forwardLab(b)
	if os.Getenv("EDGEGW_FWD_NOGSO") == "1" {
		if out, err := c.Exec(context.Background(), "ethtool", "-K", "c0", "tso", "off", "gso", "off"); err != nil {
			b.Fatalf("ethtool: %v\n%s", err, out)
		}
	}
	tbl := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(func() { _ = r.Do(tbl.Close) })

	rs200, err := CompileRules(benchConfig(200))
	must(b, err)
	rs10k, err := CompileRules(benchConfig(10000))
	must(b, err)
	naive := filepath.Join(b.TempDir(), "naive.nft")
	must(b, os.WriteFile(naive, []byte(naiveNFT(10000)), 0o600))

	const group = 6103
	var samples atomic.Int64
	var nf *nflog.Nflog
	must(b, r.Do(func() (err error) {
		nf, err = nflog.Open(&nflog.Config{Group: group, Copymode: nflog.CopyPacket, Bufsize: 128, Timeout: 10})
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); nf.Close() })
	_ = nf.Con.SetReadBuffer(8 << 20)
	must(b, nf.RegisterWithErrorFunc(ctx, func(nflog.Attribute) int { samples.Add(1); return 0 },
		func(error) int { return 0 }))
	smp := Sampling{Rate: 100, Group: group}

	delNaive := func() error {
		out, err := r.Exec(context.Background(), "nft", "delete", "table", "inet", "naive")
		if err != nil && !strings.Contains(string(out), "No such file") {
			return fmt.Errorf("nft delete: %v: %s", err, out)
		}
		return nil
	}
	cases := []struct {
		name  string
		setup func() error
	}{
		{"bare", func() error { return r.Do(RemoveTable) }},
		{"none", func() error { return r.Do(func() error { return tbl.Apply(Compile(Spec{})) }) }},
		{"none+s100", func() error { return r.Do(func() error { return tbl.Apply(Compile(Spec{Sampling: smp})) }) }},
		{"200", func() error { return r.Do(func() error { return tbl.Apply(Compile(Spec{Rules: rs200})) }) }},
		{"200+as", func() error {
			return r.Do(func() error { return tbl.Apply(Compile(Spec{Rules: rs200, Tunnels: benchTunnels(false)})) })
		}},
		{"200+as-own", func() error {
			return r.Do(func() error { return tbl.Apply(Compile(Spec{Rules: rs200, Tunnels: benchTunnels(true)})) })
		}},
		{"200+s100", func() error {
			return r.Do(func() error { return tbl.Apply(Compile(Spec{Rules: rs200, Sampling: smp})) })
		}},
		{"10k", func() error { return r.Do(func() error { return tbl.Apply(Compile(Spec{Rules: rs10k})) }) }},
		{"10k-nft", func() error {
			if err := r.Do(func() error { return tbl.Apply(Compile(Spec{})) }); err != nil {
				return err
			}
			if out, err := r.Exec(context.Background(), "nft", "-f", naive); err != nil {
				return fmt.Errorf("nft -f: %v: %s", err, out)
			}
			return nil
		}},
	}
	if only := os.Getenv("EDGEGW_FWD_CASES"); only != "" {
		names := strings.Split(only+",none", ",")
		cases = slices.DeleteFunc(cases, func(c struct {
			name  string
			setup func() error
		}) bool {
			return !slices.Contains(names, c.name)
		})
	}
	srv, err := s.Start("iperf3", "-s", "-p", "5201")
	must(b, err)
	defer srv.Stop()
	netlab.Eventually(b, 10*time.Second, "iperf3 server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := c.Exec(ctx, "iperf3", "-c", "10.2.0.2", "-p", "5201", "-t", "1", "--connect-timeout", "1000")
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
				must(b, delNaive())
				must(b, tc.setup())
				before := samples.Load()
				g, pkts := iperf(b, c, secs)
				gbps[tc.name] = append(gbps[tc.name], g)
				extra := ""
				if strings.Contains(tc.name, "+s") {
					time.Sleep(200 * time.Millisecond) // the last NFLOG batch
					extra = fmt.Sprintf(", %d samples for ~%d segments", samples.Load()-before, pkts)
				}
				b.Logf("round %d %-10s %6.2f Gbit/s%s", round, tc.name, g, extra)
			}
		}
	}
	b.StopTimer()
	must(b, delNaive())
	b.Logf("load at end: %s", load())
	b.ReportMetric(0, "ns/op")
	base := median(gbps["none"])
	for _, tc := range cases {
		m := median(gbps[tc.name])
		b.ReportMetric(m, "Gbit/s-"+tc.name)
		if tc.name != "none" {
			b.ReportMetric(m/base, "x-"+tc.name)
		}
	}
	for _, pair := range [][2]string{{"none+s100", "none"}, {"200+s100", "200"}, {"200+as", "200"}, {"200+as-own", "200"}} {
		if len(gbps[pair[0]]) == 0 || len(gbps[pair[1]]) == 0 {
			continue
		}
		var rs []float64
		for i := range gbps[pair[0]] {
			rs = append(rs, gbps[pair[0]][i]/gbps[pair[1]][i])
		}
		b.Logf("paired %s/%s per round: %.3f", pair[0], pair[1], rs)
		b.ReportMetric(median(rs), "paired-"+pair[0])
	}
}

// benchTunnels is the anti-spoofing input of a busy site: a WireGuard
// prefix with 200 static peers' site prefixes, and 16 GRE tunnels, in
// pairs that carry the same 8 routed prefixes (ECMP). With
// own, the client's subnet 10.1.0.0/24 is a tunnel prefix owned by r0,
// the interface the benchmark's traffic arrives on.
func benchTunnels(own bool) []TunnelSources {
	wg := TunnelSources{Interface: "wg0", Prefixes: []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12")}}
	for i := range 200 {
		wg.Prefixes = append(wg.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 20, byte(i), 0}), 24))
	}
	ts := []TunnelSources{wg}
	for g := range 16 {
		t := TunnelSources{Interface: fmt.Sprintf("gre%d", g),
			Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 255, byte(g), 0}), 31)}}
		for p := range 8 {
			t.Prefixes = append(t.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + g/2*2), byte(p), 0}), 24))
		}
		ts = append(ts, t)
	}
	if own {
		ts = append(ts, TunnelSources{Interface: "r0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}})
	}
	return ts
}

// iperf runs one iperf3 TCP test of secs seconds from c and returns the
// received Gbit/s and the segments sent (bytes / MSS, roughly).
func iperf(b *testing.B, c *netlab.NS, secs int) (float64, int64) {
	return iperfStreams(b, c, secs, 1)
}

// iperfStreams is iperf with streams parallel TCP streams (iperf3 -P),
// whose sum it returns.
func iperfStreams(b *testing.B, c *netlab.NS, secs, streams int) (float64, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, "iperf3", "-c", "10.2.0.2", "-p", "5201", "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams),
		"-J", "--connect-timeout", "3000")
	if err != nil {
		b.Fatalf("iperf3: %v\n%s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	must(b, json.Unmarshal(out, &res))
	return res.End.SumReceived.BitsPerSecond / 1e9, int64(res.End.SumReceived.Bytes / 1448)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// naiveNFT writes the rules of benchConfig(n) by hand as one linear chain
// in nft syntax, as an administrator without edgegw would: same matches,
// a counter and a drop each, in order, in a table of its own at the same
// hook and priority.
func naiveNFT(n int) string {
	var b strings.Builder
	b.WriteString("table inet naive {\n")
	b.WriteString("\tset admins4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/28 } }\n")
	b.WriteString("\tset admins6 { type ipv6_addr; flags interval; elements = { 2001:db8::/64 } }\n")
	b.WriteString("\tchain pre {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tiifname \"lo\" accept\n")
	for i := range n {
		x, y := i/250, i%250
		port := 1000 + i%60000
		switch i % 10 {
		case 0:
			fmt.Fprintf(&b, "\t\tmeta nfproto ipv4 tcp dport %d ip saddr != @admins4 counter drop\n", port)
			fmt.Fprintf(&b, "\t\tmeta nfproto ipv6 tcp dport %d ip6 saddr != @admins6 counter drop\n", port)
		case 1, 2:
			fmt.Fprintf(&b, "\t\tip saddr { 172.%d.%d.0/24, 198.18.%d.%d } udp dport { 53, %d } counter drop\n", x%256, y, x%256, y, 2000+i%60000)
		case 3:
			fmt.Fprintf(&b, "\t\tip6 saddr 2001:db8:%x::%x tcp dport %d counter drop\n", x, y, port)
		default:
			fmt.Fprintf(&b, "\t\tip saddr 172.%d.%d.1 tcp dport %d counter drop\n", x%256, y, port)
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}
