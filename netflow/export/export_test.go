package export_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/edgegw/edgegw/netflow/logpush"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/export"
	"github.com/edgegw/edgegw/netflow/ingest"
)

// capture is a UDP receiver that keeps every datagram.
type capture struct {
	pc net.PacketConn
	mu sync.Mutex
	ds [][]byte
}

func newCapture(t *testing.T) *capture {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{pc: pc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.ds = append(c.ds, append([]byte(nil), b[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return c
}

func (c *capture) datagrams() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.ds...)
}

// run starts an exporter to the given collectors; the test's cleanup stops it.
func run(t *testing.T, cs ...export.Collector) *export.Exporter {
	ctx, cancel := context.WithCancel(context.Background())
	ex, err := export.New(ctx, export.Options{Collectors: cs})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ex
}

// TestRoundTrip decodes the export with the project's IPFIX reader
// (goflow2 underneath): every field, and the sampling rate from the
// options record scaling the counts.
func TestRoundTrip(t *testing.T) {
	c := newCapture(t)
	ex := run(t, export.Collector{Addr: c.pc.LocalAddr().String(), Domain: 42})
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	ex.Push("network_analytics_logs", sample(at, "10.1.2.3", "192.0.2.9", 6, 40000, 443, 60, 0x12, 10, "egress", "pass"))
	ex.Push("network_analytics_logs", sample(at, "fd00::1", "2001:db8::9", 17, 5353, 53, 120, 0, 10, "ingress", "drop"))

	var flows []ingest.Flow
	deadline := time.Now().Add(10 * time.Second)
	for len(flows) < 2 && time.Now().Before(deadline) {
		flows = flows[:0]
		dec := ingest.NewDecoder()
		for _, d := range c.datagrams() {
			if err := dec.Decode(netip.MustParseAddrPort("127.0.0.1:1"), d, time.Now(), func(f *ingest.Flow) { flows = append(flows, *f) }); err != nil {
				t.Fatalf("decode: %v", err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(flows) != 2 {
		t.Fatalf("%d flows decoded, want 2", len(flows))
	}
	start := at.Truncate(time.Millisecond)
	want := []ingest.Flow{
		{Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("192.0.2.9"), SrcPort: 40000, DstPort: 443, Protocol: 6, TCPFlags: 0x12, Bytes: 600, Packets: 10},
		{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("2001:db8::9"), SrcPort: 5353, DstPort: 53, Protocol: 17, Bytes: 1200, Packets: 10},
	}
	for i, f := range flows {
		w := want[i]
		if f.Source != "ipfix" || f.Version != 10 || f.Domain != 42 || f.SampleRate != 10 || f.Src != w.Src || f.Dst != w.Dst ||
			f.SrcPort != w.SrcPort || f.DstPort != w.DstPort || f.Protocol != w.Protocol || f.TCPFlags != w.TCPFlags ||
			f.Bytes != w.Bytes || f.Packets != w.Packets || !f.Start.Equal(start) || !f.End.Equal(start) {
			t.Errorf("flow %d: %+v, want %+v (domain 42, rate 10, at %v)", i, f, w, start)
		}
	}
}

// header reads an IPFIX message header: length, sequence number, domain.
func header(t *testing.T, d []byte) (length int, seq, domain uint32) {
	t.Helper()
	if len(d) < 16 || binary.BigEndian.Uint16(d) != 10 {
		t.Fatalf("not an IPFIX message: % x", d)
	}
	return int(binary.BigEndian.Uint16(d[2:])), binary.BigEndian.Uint32(d[8:]), binary.BigEndian.Uint32(d[12:])
}

// TestMessages sends more flows than fit in one datagram, IPv4 and IPv6
// mixed, then changes the sampling rate: every message fits in 1400 bytes
// and is as long as its header says, sequence numbers count the data
// records sent before each message (options records too, RFC 7011 §3.1),
// two collectors get their own domain and sequence, and each flow is
// decoded at the rate it was sampled at.
func TestMessages(t *testing.T) {
	c1, c2 := newCapture(t), newCapture(t)
	ex := run(t, export.Collector{Addr: c1.pc.LocalAddr().String(), Domain: 1}, export.Collector{Addr: c2.pc.LocalAddr().String(), Domain: 2})
	at := time.Now().Add(-time.Minute)
	const n = 120
	for i := range n {
		src, dst := "10.0.0.1", "10.0.0.2"
		if i%3 == 0 {
			src, dst = "fd00::1", "fd00::2"
		}
		rate := 4
		if i >= n/2 {
			rate = 8
		}
		ex.Push("network_analytics_logs", sample(at, src, dst, 17, 1000+i, 53, 100, 0, rate, "egress", "pass"))
	}
	for ci, c := range []*capture{c1, c2} {
		var flows []ingest.Flow
		deadline := time.Now().Add(10 * time.Second)
		for {
			flows = flows[:0]
			dec := ingest.NewDecoder()
			var seq uint32
			for i, d := range c.datagrams() {
				l, s, dom := header(t, d)
				if l != len(d) || len(d) > 1400 {
					t.Fatalf("message %d: %d bytes, header says %d", i, len(d), l)
				}
				if s != seq {
					t.Fatalf("message %d: sequence %d, want %d", i, s, seq)
				}
				if dom != uint32(ci+1) {
					t.Fatalf("collector %d: domain %d, want %d", ci+1, dom, ci+1)
				}
				before := len(flows)
				if err := dec.Decode(netip.MustParseAddrPort("127.0.0.1:1"), d, time.Now(), func(f *ingest.Flow) { flows = append(flows, *f) }); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				seq += uint32(len(flows) - before)
				if len(flows) == before {
					seq++ // templates and the sampler's options record
				}
			}
			if len(flows) >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(flows) != n {
			t.Fatalf("%d flows decoded, want %d", len(flows), n)
		}
		for i, f := range flows {
			rate := uint32(4)
			if i >= n/2 {
				rate = 8
			}
			if f.SrcPort != uint16(1000+i) || f.SampleRate != rate || f.Packets != uint64(rate) || f.Bytes != 100*uint64(rate) {
				t.Errorf("flow %d: %+v, want source port %d at rate %d", i, f, 1000+i, rate)
			}
		}
	}
	if st := ex.Stats(); st.Records != 2*n || st.Dropped != 0 || st.SendErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestTemplateRefresh: templates go out again after TemplateRefresh, so a
// collector that starts late can still decode.
func TestTemplateRefresh(t *testing.T) {
	c := newCapture(t)
	ex := run(t, export.Collector{Addr: c.pc.LocalAddr().String(), TemplateRefresh: time.Millisecond})
	ex.Push("network_analytics_logs", sample(time.Now(), "10.0.0.1", "10.0.0.2", 17, 1, 2, 100, 0, 1, "egress", "pass"))
	templates := func() int {
		n := 0
		for _, d := range c.datagrams() {
			if len(d) > 17 && binary.BigEndian.Uint16(d[16:]) == 2 { // a template set first
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for templates() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Only the latest datagrams are needed: a fresh decoder that sees the
	// last template message and then a data record decodes it.
	if n := templates(); n < 3 {
		t.Fatalf("%d template messages, want at least 3 (every tick)", n)
	}
	ex.Push("network_analytics_logs", sample(time.Now(), "10.0.0.1", "10.0.0.2", 17, 7, 8, 100, 0, 1, "egress", "pass"))
	var got []ingest.Flow
	for time.Now().Before(deadline) && len(got) == 0 {
		ds := c.datagrams()
		dec := ingest.NewDecoder()
		got = got[:0]
		for _, d := range ds[1:] { // the first templates never arrived
			dec.Decode(netip.MustParseAddrPort("127.0.0.1:1"), d, time.Now(), func(f *ingest.Flow) { got = append(got, *f) })
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) == 0 || got[len(got)-1].SrcPort != 7 {
		t.Fatalf("late collector decoded %+v", got)
	}
}

// TestFromRecord: which records are exported, and how.
func TestFromRecord(t *testing.T) {
	at := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name string
		r    logpush.Record
		ok   bool
		f    export.Flow
		rate uint32
	}{
		{"tcp", sample(at, "10.0.0.1", "10.0.0.2", 6, 1, 2, 60, 0x10, 100, "ingress", "drop"), true,
			export.Flow{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 2, Protocol: 6, TCPFlags: 0x10,
				Octets: 60, Packets: 1, Start: at, End: at, Dropped: true}, 100},
		{"icmp", append(sample(at, "10.0.0.1", "10.0.0.2", 1, 0, 0, 84, 0, 1, "egress", "pass"),
			logpush.Field{Name: "ICMPType", Value: logpush.Uint(3)}, logpush.Field{Name: "ICMPCode", Value: logpush.Uint(4)}), true,
			export.Flow{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), DstPort: 3<<8 | 4, Protocol: 1,
				Octets: 84, Packets: 1, Start: at, End: at, Egress: true}, 1},
		{"ingested", append(sample(at, "10.0.0.1", "10.0.0.2", 6, 1, 2, 60, 0, 1, "", ""), logpush.Field{Name: "Source", Value: logpush.String("netflow")}), false, export.Flow{}, 0},
		{"no address", logpush.Record{{Name: "Source", Value: logpush.String("nflog")}}, false, export.Flow{}, 0},
		{"mixed families", sample(at, "10.0.0.1", "fd00::2", 17, 1, 2, 60, 0, 1, "", ""), false, export.Flow{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, rate, ok := export.FromRecord(tc.r)
			if ok != tc.ok || f != tc.f || rate != tc.rate {
				t.Errorf("FromRecord = %+v, %d, %v; want %+v, %d, %v", f, rate, ok, tc.f, tc.rate, tc.ok)
			}
		})
	}
}

// TestPushNeverBlocks: with Run not reading, Push drops and counts.
func TestPushNeverBlocks(t *testing.T) {
	c := newCapture(t)
	ex, err := export.New(context.Background(), export.Options{Collectors: []export.Collector{{Addr: c.pc.LocalAddr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	r := sample(time.Now(), "10.0.0.1", "10.0.0.2", 17, 1, 2, 100, 0, 1, "egress", "pass")
	for range 5000 {
		ex.Push("network_analytics_logs", r)
	}
	if st := ex.Stats(); st.Dropped != 5000-4096 {
		t.Errorf("dropped %d, want %d", st.Dropped, 5000-4096)
	}
}

// TestUnresolvedCollector: a collector that cannot be dialled at start
// (a name that does not resolve yet) neither fails New nor stops the
// others; its messages count as send errors until a dial succeeds.
func TestUnresolvedCollector(t *testing.T) {
	c := newCapture(t)
	var mu sync.Mutex
	fail := true
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if addr == "collector.invalid:4739" && fail {
			return nil, &net.DNSError{Err: "no such host", Name: "collector.invalid", IsNotFound: true}
		}
		if addr == "collector.invalid:4739" {
			addr = c.pc.LocalAddr().String()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	other := newCapture(t)
	clock := time.Now()
	var cmu sync.Mutex
	now := func() time.Time { cmu.Lock(); defer cmu.Unlock(); return clock }
	ctx, cancel := context.WithCancel(context.Background())
	ex, err := export.New(ctx, export.Options{Collectors: []export.Collector{{Addr: "collector.invalid:4739"}, {Addr: other.pc.LocalAddr().String()}},
		Dial: dial, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	defer func() { cancel(); <-done }()
	push := func(port int) {
		ex.Push("network_analytics_logs", sample(time.Now(), "10.0.0.1", "10.0.0.2", 17, port, 2, 100, 0, 1, "egress", "pass"))
	}
	push(1)
	testkit.Eventually(t, 10*time.Second, "the other collector's datagrams and the send errors", func() error {
		if len(other.datagrams()) < 2 || ex.Stats().SendErrors < 2 {
			return fmt.Errorf("other got %d datagrams; stats %+v", len(other.datagrams()), ex.Stats())
		}
		return nil
	})
	// The name resolves now; the next send after 10 s dials again.
	mu.Lock()
	fail = false
	mu.Unlock()
	cmu.Lock()
	clock = clock.Add(11 * time.Second)
	cmu.Unlock()
	push(2)
	testkit.Eventually(t, 10*time.Second, "the late collector's datagrams", func() error {
		if len(c.datagrams()) < 2 {
			return fmt.Errorf("%d datagrams; stats %+v", len(c.datagrams()), ex.Stats())
		}
		return nil
	})
}
