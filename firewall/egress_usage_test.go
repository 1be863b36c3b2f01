package firewall

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestAddFlow checks which tracked connections count for an egress
// address: translated ones, by their reply's destination; not the
// gateway's own from the address, nor others'.
func TestAddFlow(t *testing.T) {
	ip := net.ParseIP
	flow := func(src, dst, replyDst string, out, in uint64) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{SrcIP: ip(src), DstIP: ip(dst), Bytes: out, Packets: 1},
			Reverse: netlink.IPTuple{SrcIP: ip(dst), DstIP: ip(replyDst), Bytes: in, Packets: 2},
		}
	}
	a := netip.MustParseAddr
	mine := map[netip.Addr]bool{a("198.51.100.10"): true, a("2001:db8::10"): true}
	out := EgressFlows{ByEgress: map[netip.Addr]EgressUsage{}, ByClient: map[EgressPair]EgressUsage{}}
	for _, f := range []*netlink.ConntrackFlow{
		flow("100.96.0.10", "203.0.113.80", "198.51.100.10", 100, 1000), // alice, translated
		flow("100.96.0.10", "203.0.113.80", "198.51.100.10", 50, 500),   // alice again
		flow("100.96.0.11", "203.0.113.80", "198.51.100.10", 7, 70),     // bob
		flow("198.51.100.10", "203.0.113.53", "198.51.100.10", 60, 90),  // the gateway's own DNS
		flow("100.96.0.12", "203.0.113.80", "192.0.2.1", 1, 1),          // masqueraded elsewhere
		flow("fd00::10", "2001:db8::80", "2001:db8::10", 3, 4),          // IPv6
	} {
		addFlow(&out, mine, f)
	}
	want := EgressUsage{Connections: 3, BytesOut: 157, BytesIn: 1570, PacketsOut: 3, PacketsIn: 6}
	if got := out.ByEgress[a("198.51.100.10")]; got != want {
		t.Errorf("ByEgress[198.51.100.10] = %+v, want %+v", got, want)
	}
	alice := out.ByClient[EgressPair{Client: a("100.96.0.10"), Egress: a("198.51.100.10")}]
	if alice.Connections != 2 || alice.BytesOut != 150 || alice.BytesIn != 1500 {
		t.Errorf("alice = %+v", alice)
	}
	if got := out.ByEgress[a("2001:db8::10")]; got.Connections != 1 || got.BytesIn != 4 {
		t.Errorf("IPv6 = %+v", got)
	}
	if len(out.ByClient) != 3 {
		t.Errorf("ByClient = %+v, want alice, bob and the IPv6 client", out.ByClient)
	}
}
