package netflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// recordSink collects pushed records; block, if set, holds Push until it
// is closed (a slow consumer).
type recordSink struct {
	mu    sync.Mutex
	recs  []logpush.Record
	block chan struct{}
}

func (s *recordSink) Push(dataset string, r logpush.Record) {
	if dataset != Dataset {
		panic("wrong dataset " + dataset)
	}
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

func (s *recordSink) records() []logpush.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logpush.Record(nil), s.recs...)
}

// samplerLab is two namespaces: "a" sends, "g" runs an nft table that logs
// to NFLOG and a Sampler reading it.
type samplerLab struct {
	a, g  *netlab.NS
	gIdx  uint32 // ifindex of g's veth
	gMAC  string
	netns *os.File
}

func newSamplerLab(t *testing.T, nftRules string) *samplerLab {
	t.Helper()
	lab := netlab.NewT(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (apt-get install nftables)")
	}
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	g, err := lab.NS("g")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "veth0", "10.77.0.1/24", g, "veth0", "10.77.0.2/24"); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ns   *netlab.NS
		addr string
	}{{a, "fd77::1/64"}, {g, "fd77::2/64"}} {
		if err := x.ns.AddAddr("veth0", x.addr); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nft := exec.CommandContext(ctx, "ip", "netns", "exec", g.Name(), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(nftRules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	l := &samplerLab{a: a, g: g}
	var link []struct {
		Index   uint32 `json:"ifindex"`
		Address string `json:"address"`
	}
	out, err := g.IP("-j", "link", "show", "veth0")
	if err == nil {
		err = json.Unmarshal(out, &link)
	}
	if err != nil || len(link) != 1 {
		t.Fatalf("g veth0: %v: %s", err, out)
	}
	l.gIdx, l.gMAC = link[0].Index, link[0].Address
	l.netns, err = os.Open("/run/netns/" + g.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.netns.Close() })
	return l
}

// startSampler runs s.Run until the test ends and waits until the group is
// bound (the library binds before Run's reader starts; a short poll of the
// kernel's instance list tells).
func startSampler(t *testing.T, l *samplerLab, s *Sampler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	t.Cleanup(stop)
	netlab.Eventually(t, 5*time.Second, "NFLOG group bound", func() error {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		out, err := l.g.Exec(t.Context(), "cat", "/proc/net/netfilter/nfnetlink_log")
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) > 0 && f[0] == fmt.Sprint(s.opts.Group) {
				return nil
			}
		}
		return fmt.Errorf("group %d not in %q", s.opts.Group, out)
	})
	return stop
}

const testGroup = 4242

func TestSamplerNetns(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import scapy.all").Run(); err != nil {
		t.Skip("needs python3-scapy")
	}
	l := newSamplerLab(t, fmt.Sprintf(`
table inet eftest {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		ip saddr 10.77.0.1 udp dport 9999 numgen random mod 1 == 0 log group %[1]d prefix "ef/3/b" drop
		ip saddr 10.77.0.1 meta l4proto { tcp, udp, icmp, gre } numgen random mod 1 == 0 log group %[1]d prefix "ef/0/a"
		ip6 saddr fd77::1 icmpv6 type echo-request numgen random mod 1 == 0 log group %[1]d prefix "ef/2/b" drop
		ip6 saddr fd77::1 meta l4proto { tcp, udp } numgen random mod 1 == 0 log group %[1]d prefix "ef/0/a"
	}
}`, testGroup))
	sink := &recordSink{}
	colo := Colo{Code: "ams", Name: "ams01", Country: "NL"}
	s, err := New(Options{Group: testGroup, Colo: colo, Sink: sink, NetNS: int(l.netns.Fd()), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(Rules{RulesetID: "3b64149bfa6e4220bbbc2bd6db589552", RuleIDs: []string{"r-allow-ssh", "r-no-ping6", "r-no-9999"}, SampleInterval: 1})
	s.SetInterfaces(Interfaces{l.gIdx: {Name: "veth0", Role: RoleTunnel}})
	s.SetIdentities(IdentityMap{netip.MustParseAddr("10.77.0.1"): {Email: "alice@example.com", DeviceID: "dev-a1"}})
	stop := startSampler(t, l, s)

	before := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := l.a.Exec(ctx, "/usr/bin/python3", "testdata/send.py", "veth0", l.gMAC)
	if err != nil {
		t.Fatalf("send.py: %v: %s", err, out)
	}
	var sent []map[string]any
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("send.py output: %v: %s", err, out)
	}
	netlab.Eventually(t, 10*time.Second, "a record per packet", func() error {
		if n := len(sink.records()); n < len(sent) {
			return fmt.Errorf("%d records of %d", n, len(sent))
		}
		return nil
	})
	after := time.Now()
	recs := sink.records()
	if len(recs) != len(sent) {
		t.Fatalf("%d records for %d packets", len(recs), len(sent))
	}

	// key identifies a packet: IPv4 id or IPv6 flow label of the packet
	// the record describes (the inner one for GRE).
	key := func(m map[string]any) string {
		return fmt.Sprint(m["IPv4Identification"], "/", m["IPv6FlowLabel"])
	}
	got := map[string]map[string]any{}
	for _, r := range recs {
		m := recordMap(t, r)
		dt, ok := m["Datetime"].(float64)
		if !ok || int64(dt) < before.Add(-time.Second).UnixNano() || int64(dt) > after.UnixNano() {
			t.Errorf("Datetime %v outside the test's time [%v, %v]", m["Datetime"], before, after)
		}
		delete(m, "Datetime")
		got[key(m)] = m
	}
	verdicts := map[string][2]string{ // by key: outcome, rule id
		"102/<nil>": {"drop", "r-no-9999"}, "<nil>/13107": {"drop", "r-no-ping6"},
	}
	for _, want := range sent {
		k := key(want)
		v, ok := verdicts[k]
		if !ok {
			v = [2]string{"pass", ""}
		}
		want["Outcome"], want["Verdict"] = v[0], v[0]
		if v[1] != "" {
			want["RuleID"] = v[1]
		}
		want["ColoCode"], want["ColoName"], want["ColoCountry"] = colo.Code, colo.Name, colo.Country
		want["Direction"], want["TunnelName"] = "egress", "veth0"
		want["Source"] = SourceNFLOG
		want["MitigationSystem"], want["RulesetID"], want["SampleInterval"] = "magic-firewall", "3b64149bfa6e4220bbbc2bd6db589552", 1
		src, dst := netip.MustParseAddr(want["IPSourceAddress"].(string)), netip.MustParseAddr(want["IPDestinationAddress"].(string))
		want["IPSourceSubnet"], want["IPDestinationSubnet"] = subnet(src), subnet(dst)
		want["IPProtocolName"] = ProtocolName(uint8(want["IPProtocol"].(float64)))
		want["IPTotalLengthBuckets"] = int(want["IPTotalLength"].(float64)) / 100 * 100
		want["IPTTLBuckets"] = int(want["IPTTL"].(float64)) / 10 * 10
		if f, ok := want["TCPFlags"].(float64); ok {
			want["TCPFlagsString"] = TCPFlagsString(uint8(f))
		}
		if src.String() == "10.77.0.1" {
			want["Email"], want["DeviceID"] = "alice@example.com", "dev-a1"
		}
		wantJSON, _ := json.Marshal(want)
		gotJSON, _ := json.Marshal(got[k])
		if string(wantJSON) != string(gotJSON) {
			t.Errorf("packet %s:\n got %s\nwant %s", k, gotJSON, wantJSON)
		}
	}
	st := s.Stats()
	if st.Lost != 0 || st.Overruns != 0 || len(st.Malformed) != 0 || st.Records != uint64(len(sent)) {
		t.Errorf("stats %+v", st)
	}

	// Run owns the library's reader: once it returns, that goroutine
	// has gone too, and the group is unbound.
	stop()
	netlab.Eventually(t, 5*time.Second, "no NFLOG goroutine after Run", func() error {
		buf := make([]byte, 1<<20)
		if st := string(buf[:runtime.Stack(buf, true)]); strings.Contains(st, "go-nflog") {
			return errors.New("a go-nflog goroutine is still running")
		}
		out, err := l.g.Exec(t.Context(), "cat", "/proc/net/netfilter/nfnetlink_log")
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) > 0 && f[0] == fmt.Sprint(testGroup) {
				return fmt.Errorf("group still bound: %s", line)
			}
		}
		return nil
	})
}

// TestSamplerLoss floods the group while the consumer stalls behind a tiny
// socket buffer: the kernel must drop samples, and every one it dropped
// must show in Lost.
func TestSamplerLoss(t *testing.T) {
	l := newSamplerLab(t, fmt.Sprintf(`
table inet eftest {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		udp dport { 7777, 7778 } counter log group %d prefix "ef/1/b" drop
	}
}`, testGroup))
	sink := &recordSink{block: make(chan struct{})}
	s, err := New(Options{Group: testGroup, Sink: sink, NetNS: int(l.netns.Fd()), ReadBuffer: 1024, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(Rules{RuleIDs: []string{"r1"}, SampleInterval: 1})
	startSampler(t, l, s)
	unblock := sync.OnceFunc(func() { close(sink.block) })
	t.Cleanup(unblock)

	send := func(port, n int) {
		t.Helper()
		c, err := l.a.DialContext(t.Context(), "udp", fmt.Sprintf("10.77.0.2:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range n {
			if _, err := c.Write(make([]byte, 64)); err != nil && !errors.Is(err, net.ErrClosed) {
				// ICMP port unreachable from an earlier datagram is
				// reported on a connected socket: ignore it.
				continue
			}
		}
	}
	const flood = 2000
	send(7777, flood)
	unblock()
	send(7778, 1) // a last sample after the stall makes any trailing loss a gap
	// The rule's counter is what the kernel logged (a datagram lost
	// before prerouting was never a sample).
	logged := nftCounter(t, l.g)
	if logged < flood/2 {
		t.Fatalf("only %d of %d datagrams reached the rule", logged, flood+1)
	}
	netlab.Eventually(t, 10*time.Second, "every sample read or counted lost", func() error {
		st := s.Stats()
		if st.Records+st.Lost < logged {
			return fmt.Errorf("records %d + lost %d < %d logged", st.Records, st.Lost, logged)
		}
		return nil
	})
	st := s.Stats()
	t.Logf("logged %d, stats: %+v", logged, st)
	if st.Records+st.Lost != logged {
		t.Errorf("records %d + lost %d != %d logged", st.Records, st.Lost, logged)
	}
	if st.Lost == 0 || st.Overruns == 0 {
		t.Errorf("a stalled reader with a tiny buffer lost nothing: %+v", st)
	}
}

// nftCounter returns the packets of the only counter in ns's ruleset.
func nftCounter(t *testing.T, ns *netlab.NS) uint64 {
	t.Helper()
	out, err := ns.Exec(t.Context(), "nft", "-j", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	var rs struct {
		Nftables []struct {
			Rule *struct {
				Expr []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatalf("nft -j: %v", err)
	}
	for _, o := range rs.Nftables {
		if o.Rule == nil {
			continue
		}
		for _, e := range o.Rule.Expr {
			if c, ok := e["counter"]; ok {
				var v struct{ Packets uint64 }
				if err := json.Unmarshal(c, &v); err != nil {
					t.Fatal(err)
				}
				return v.Packets
			}
		}
	}
	t.Fatalf("no counter in %s", out)
	return 0
}
