package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// conntrackCount reads the number of conntrack entries in r.
func conntrackCount(t *testing.T, n *testNet) int {
	t.Helper()
	var c int
	if err := n.r.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		if err != nil {
			return err
		}
		c, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// sendSYNs sends count SYNs from a (10.1.0.2, ports from 1024 up) to
// 10.99.0.1:port through r.
func sendSYNs(t *testing.T, n *testNet, count int, port uint16) {
	t.Helper()
	err := n.a.Do(func() error {
		s, err := openPacketSock("a0", n.rMAC["r0"])
		if err != nil {
			return err
		}
		defer s.Close()
		for i := range count {
			p := pkt{src: netip.MustParseAddr("10.1.0.2"), dst: netip.MustParseAddr("10.99.0.1"),
				proto: unix.IPPROTO_TCP, ttl: 64, sport: uint16(1024 + i%60000), dport: port,
				flags: 0x02, payload: 8, marker: uint64(i)}
			if err := s.send(p.build()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitCounter polls rule id's packet counter until it reaches want.
func waitCounter(t *testing.T, n *testNet, id string, want uint64) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "counter "+id, func() error {
		if c := n.counters(t)[id]; c.Packets < want {
			return fmt.Errorf("%d packets, want %d", c.Packets, want)
		}
		return nil
	})
}

// TestKernelConntrack checks that blocked packets never reach conntrack:
// the rules chain runs at priority raw, before it.
func TestKernelConntrack(t *testing.T) {
	n := newTestNet(t)
	n.apply(t, `
rules:
  - id: block-discard
    expression: tcp.dstport == 9
    action: block
  - id: count-echo
    expression: tcp.dstport == 7 and ip.src == 10.1.0.2
    action: allow
`, "r1")
	// A probe after conntrack (priority -150) counts the packets conntrack
	// saw as new: the count survives the entries, which a drop later in
	// prerouting would free again before they were counted.
	probe := "table inet probe {\n chain p {\n type filter hook prerouting priority -150;\n" +
		" tcp dport 9 ct state new counter\n tcp dport 7 ct state new counter\n }\n}\n"
	f := t.TempDir() + "/probe.nft"
	if err := os.WriteFile(f, []byte(probe), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := n.r.Exec(context.Background(), "nft", "-f", f); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	probeCounts := func() string {
		out, err := n.r.Exec(context.Background(), "nft", "list", "chain", "inet", "probe", "p")
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	before := conntrackCount(t, n)
	const burst = 10000
	sendSYNs(t, n, burst, 9)
	waitCounter(t, n, "block-discard", burst)
	if after := conntrackCount(t, n); after != before {
		t.Errorf("conntrack entries %d → %d after %d blocked SYNs, want unchanged", before, after, burst)
	}
	if out := probeCounts(); !strings.Contains(out, "tcp dport 9 ct state new counter packets 0 ") {
		t.Errorf("conntrack saw blocked SYNs:\n%s", out)
	}
	// Control: allowed SYNs do create entries, so the count is live.
	sendSYNs(t, n, 50, 7)
	waitCounter(t, n, "count-echo", 50)
	if after := conntrackCount(t, n); after < before+50 {
		t.Errorf("conntrack entries %d → %d after 50 allowed SYNs, want +50: is conntrack on in r?", before, after)
	}
	if out := probeCounts(); !strings.Contains(out, "tcp dport 7 ct state new counter packets 50 ") {
		t.Errorf("probe did not see the 50 allowed SYNs:\n%s", out)
	}
}
