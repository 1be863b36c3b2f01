//go:build linux

package bgp

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
)

const benchPrefixes = 10_000

// BenchmarkLearn10k: a BIRD branch announces 10,000 /24s over a GRE
// tunnel. Each round enables the session and waits until every prefix is
// a kernel route through the tunnel (install-s), then disables it and
// waits until all are gone (withdraw-s: what a session that ends costs).
// heap-MB is the Go heap held with the 10,000 prefixes learned and
// installed (GoBGP's tables, edgegw's routes and plan) over the heap
// before the session, in this process (which also runs the branch's
// site manager, holding nothing of the 10,000).
func BenchmarkLearn10k(b *testing.B) {
	x := newBranchTopology(b)
	var conf strings.Builder
	conf.WriteString(`
router id 198.51.100.20;
protocol device { scan time 1; }
protocol static { ipv4;
`)
	for i := range benchPrefixes {
		fmt.Fprintf(&conf, "route 10.%d.%d.0/24 blackhole;\n", 64+i/256, i%256)
	}
	conf.WriteString(`}
protocol bgp edgegw {
	disabled yes;
	start delay time 0; # BIRD waits 5 s by default: measure edgegw, not that
	local 10.200.1.1 as 65020;
	neighbor 10.200.1.0 as 65000;
	connect retry time 1;
	ipv4 { import none; export where source = RTS_STATIC; };
}
`)
	sock := bird(b, x.br, conf.String())
	cfg := branchSpeakerConfig()
	cfg.Neighbors[0].Import = ImportPolicy{MaxPrefixes: 2 * benchPrefixes,
		Prefixes: []PrefixRange{{Prefix: netip.MustParsePrefix("10.64.0.0/10"), MaxLength: 24}}}
	m := newSpeaker(b, x.gw, x.gwSite, cfg)

	var h *netlink.Handle
	must(b, x.gw.Do(func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	}))
	defer h.Close()
	// installed counts the tunnel routes (not the unreachable fallbacks).
	installed := func() int {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: tunnel.RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if r.Type == unix.RTN_UNICAST {
				n++
			}
		}
		return n
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	wait := func(what string, want int) time.Duration {
		start := time.Now()
		testkit.Eventually(b, 120*time.Second, what, func() error {
			if n := installed(); n != want {
				return fmt.Errorf("%d routes installed, want %d (bgp %+v)", n, want, neighbor(m, "branch1"))
			}
			return nil
		})
		return time.Since(start)
	}

	var install, withdraw time.Duration
	var heapMB float64
	b.ResetTimer()
	for range b.N {
		before := heap()
		birdc(b, x.br, sock, "enable", "edgegw")
		install += wait("10,000 learned routes installed", benchPrefixes)
		heapMB += float64(heap()-min(before, heap())) / (1 << 20)
		birdc(b, x.br, sock, "disable", "edgegw")
		withdraw += wait("every learned route withdrawn", 0)
	}
	b.ReportMetric(install.Seconds()/float64(b.N), "install-s")
	b.ReportMetric(withdraw.Seconds()/float64(b.N), "withdraw-s")
	b.ReportMetric(heapMB/float64(b.N), "heap-MB")
}
