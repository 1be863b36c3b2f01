package ha

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestSplitBrainSteps walks the decision through rounds of probes.
func TestSplitBrainSteps(t *testing.T) {
	master := func(others int) sbObs { return sbObs{master: true, others: others} }
	for _, tc := range []struct {
		name   string
		yields bool
		rounds []sbObs
		want   []sbStep // one per round
	}{
		{"alone as master", true, []sbObs{master(0), master(0)}, []sbStep{{}, {}}},
		{"one answer is not enough", true, []sbObs{master(1), master(0), master(1)}, []sbStep{{}, {}, {}}},
		{"confirmed, this node yields", true, []sbObs{master(1), master(1)}, []sbStep{{}, {splitBrain: true, yield: true}}},
		{"confirmed, the other yields", false, []sbObs{master(1), master(1), master(1), master(0)},
			[]sbStep{{}, {splitBrain: true}, {splitBrain: true}, {}}},
		{"backup never sees one", true, []sbObs{{others: 1}, {others: 1}}, []sbStep{{}, {}}},
		{"yielded, adverts back", true, []sbObs{master(1), master(1), {others: 1}, {others: 1, peerAdverts: true}},
			[]sbStep{{}, {splitBrain: true, yield: true}, {}, {standDown: true}}},
		{"yielded, addresses fall free", true, []sbObs{master(1), master(1), {}, {}, {others: 1}, {}, {}, {}},
			[]sbStep{{}, {splitBrain: true, yield: true}, {}, {}, {}, {}, {}, {standDown: true}}},
		{"stood down, must confirm again", true, []sbObs{master(1), master(1), {peerAdverts: true}, master(1), master(1)},
			[]sbStep{{}, {splitBrain: true, yield: true}, {standDown: true}, {}, {splitBrain: true, yield: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sbState
			for i, o := range tc.rounds {
				if got := s.step(o, tc.yields); got != tc.want[i] {
					t.Fatalf("round %d (%+v): %+v, want %+v", i, o, got, tc.want[i])
				}
			}
		})
	}
}

func TestParseARP(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	probe := arpProbe(mac, netip.MustParseAddr("192.0.2.10"))
	p, ok := parseARP(probe)
	if !ok || p.op != arpRequest || !bytes.Equal(p.sha, mac) || p.spa != netip.IPv4Unspecified() || p.tpa != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("probe parsed as %+v %v", p, ok)
	}
	reply := bytes.Clone(probe)
	reply[7] = arpReply
	copy(reply[14:18], []byte{192, 0, 2, 10})
	if p, ok := parseARP(reply); !ok || p.op != arpReply || p.spa != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("reply parsed as %+v %v", p, ok)
	}
	for name, b := range map[string][]byte{
		"short":     probe[:27],
		"not ether": append([]byte{0, 6}, probe[2:]...),
		"ipv6":      append([]byte{0, 1, 0x86, 0xdd}, probe[4:]...),
		"op 3":      append(append(bytes.Clone(probe[:6]), 0, 3), probe[8:]...),
	} {
		if _, ok := parseARP(b); ok {
			t.Errorf("%s parsed", name)
		}
	}
}

func FuzzParseARP(f *testing.F) {
	f.Add(arpProbe(net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("192.0.2.10")))
	f.Add([]byte{})
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseARP(b)
		if ok && (len(p.sha) != 6 || !p.spa.Is4() || !p.tpa.Is4()) {
			t.Fatalf("ok with %+v", p)
		}
	})
}

func TestVRRPSource(t *testing.T) {
	hdr := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 255, vrrpProto, 0, 0, 10, 255, 0, 1, 10, 255, 0, 2}
	if a, ok := vrrpSource(hdr); !ok || a != netip.MustParseAddr("10.255.0.1") {
		t.Fatalf("vrrpSource = %v %v", a, ok)
	}
	udp := bytes.Clone(hdr)
	udp[9] = 17
	for name, b := range map[string][]byte{"short": hdr[:19], "udp": udp, "ipv6": append([]byte{0x65}, hdr[1:]...),
		"ihl 4": append([]byte{0x44}, hdr[1:]...)} {
		if _, ok := vrrpSource(b); ok {
			t.Errorf("%s accepted", name)
		}
	}
}

func FuzzVRRPSource(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 40, 0, 0, 0, 0, 255, vrrpProto, 0, 0, 10, 255, 0, 1, 10, 255, 0, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, ok := vrrpSource(b); ok && !a.Is4() {
			t.Fatalf("ok with %v", a)
		}
	})
}

// cutVRRP drops VRRP leaving ns (the sync link cut for adverts only,
// conntrackd's sync and everything else still pass); restore undoes it.
func cutVRRP(t *testing.T, p *pairLab, i int) {
	t.Helper()
	if err := nft(p.nodes[i], `table ip hacut {
	chain out {
		type filter hook output priority filter; policy accept;
		oifname "sync0" ip protocol vrrp counter drop
	}
}`); err != nil {
		t.Fatal(err)
	}
}

func restoreVRRP(t *testing.T, p *pairLab, i int) {
	t.Helper()
	if out, err := p.nodes[i].Exec(context.Background(), "nft", "delete", "table", "ip", "hacut"); err != nil {
		t.Fatalf("nft delete: %v: %s", err, out)
	}
}

// TestSplitBrain cuts VRRP on the sync link both ways with nftables while
// both nodes keep their WAN and LAN: VRRP makes the standby master too,
// and both answer for the addresses. Both nodes see it (counted, /readyz
// would fail on each while it lasts); the node with the higher sync-link
// address (n2) yields, so n1 alone holds the addresses. When VRRP passes
// again, n2 hears n1's adverts and returns to backup. Then, with VRRP
// cut once more and n2 yielded, n1 goes away: nobody answers for the
// addresses, and n2 takes them.
func TestSplitBrain(t *testing.T) {
	p := newPairLab(t)
	na := p.startProbe(t, 0)
	defer func() { na.Close() }()
	nb := p.startProbe(t, 1)
	defer nb.Close()
	const deadline = 30 * time.Second
	testkit.Eventually(t, deadline, "n1 master", wantRole(na, RoleMaster))
	testkit.Eventually(t, deadline, "n2 backup", wantRole(nb, RoleBackup))
	testkit.Eventually(t, deadline, "VIP on n1", wantWANVIP(p.nodes[0], true))
	if na.yields || !nb.yields {
		t.Fatalf("yields: n1 %v n2 %v, want n2 (higher sync address)", na.yields, nb.yields)
	}

	cutVRRP(t, p, 0)
	cutVRRP(t, p, 1)
	testkit.Eventually(t, deadline, "n1 sees the split brain", func() error {
		if s := na.Status(); s.SplitBrains == 0 {
			return fmt.Errorf("no split brain seen: %+v", s)
		}
		return nil
	})
	testkit.Eventually(t, deadline, "n2 yielded", func() error {
		s := nb.Status()
		if !s.Yielded || s.Role != RoleFault || s.SplitBrains == 0 {
			return fmt.Errorf("n2: %+v", s)
		}
		return nil
	})
	testkit.Eventually(t, deadline, "VIP gone from n2", wantWANVIP(p.nodes[1], false))
	testkit.Eventually(t, deadline, "n1's split brain over", func() error { return na.Err() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// n1 kept the addresses throughout: its role never left master.
	must(wantRole(na, RoleMaster)())
	must(wantWANVIP(p.nodes[0], true)())
	if s := na.Status(); s.Yielded || s.SplitBrain {
		t.Fatalf("n1: %+v", s)
	}
	if err := nb.Err(); err != nil {
		t.Fatalf("a node that yielded reports %v", err)
	}
	for i, n := range []*Node{na, nb} {
		if m := gatherMetrics(t, n); m["edgegw_ha_split_brains_total"] != 1 || m["edgegw_ha_split_brain"] != 0 {
			t.Errorf("n%d: split brains %v, now %v; want 1, 0", i+1, m["edgegw_ha_split_brains_total"], m["edgegw_ha_split_brain"])
		}
	}
	// One address holder: the LAN host reaches the server.
	testkit.Eventually(t, deadline, "LAN host reaches the server", func() error { return p.lan.Ping(srvAddr) })

	// VRRP passes again: n2 hears n1 and is backup.
	restoreVRRP(t, p, 0)
	restoreVRRP(t, p, 1)
	testkit.Eventually(t, deadline, "n2 backup again", wantRole(nb, RoleBackup))
	if s := nb.Status(); s.Yielded {
		t.Fatalf("n2 still yields: %+v", s)
	}
	must(wantRole(na, RoleMaster)())

	// Split again, n2 yields; then n1 dies: the addresses fall free and
	// n2 takes them although it never hears n1 again.
	cutVRRP(t, p, 0)
	cutVRRP(t, p, 1)
	testkit.Eventually(t, deadline, "n2 yielded again", func() error {
		if s := nb.Status(); !s.Yielded {
			return fmt.Errorf("n2: %+v", s)
		}
		return nil
	})
	must(na.Close())
	testkit.Eventually(t, deadline, "n2 master", wantRole(nb, RoleMaster))
	testkit.Eventually(t, deadline, "VIP on n2", wantWANVIP(p.nodes[1], true))
	if s := nb.Status(); s.Yielded {
		t.Fatalf("n2: %+v", s)
	}
	var sawReason bool
	for _, l := range strings.Split(nb.Status().Reason, "\n") {
		sawReason = sawReason || strings.Contains(l, "MASTER")
	}
	if !sawReason {
		t.Fatalf("n2's reason %q", nb.Status().Reason)
	}
}

// TestSplitBrainErr: /readyz fails exactly while a split brain is seen.
func TestSplitBrainErr(t *testing.T) {
	n := &Node{cfg: Config{VirtualAddresses: VirtualAddresses{LAN: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")}}},
		opts: Options{Links: Links{LAN: "lan0"}}}
	if err := n.Err(); err != nil {
		t.Fatal(err)
	}
	if !n.setSplitBrain(true, []net.HardwareAddr{{2, 0, 0, 0, 0, 9}}) {
		t.Fatal("first round of a split brain did not begin one")
	}
	if n.setSplitBrain(true, []net.HardwareAddr{{2, 0, 0, 0, 0, 9}}) {
		t.Fatal("second round began another")
	}
	err := n.Err()
	if err == nil || !strings.Contains(err.Error(), "02:00:00:00:00:09") || !strings.Contains(err.Error(), "10.1.0.1") {
		t.Fatalf("Err = %v", err)
	}
	n.setSplitBrain(false, nil)
	if err := n.Err(); err != nil || n.splitBrains != 1 || n.lastSplitBrain == nil {
		t.Fatalf("after: %v, %d episodes", err, n.splitBrains)
	}
}
