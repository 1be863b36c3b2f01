package export_test

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

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
