//go:build linux

package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/export"
	"github.com/edgegw/edgegw/netflow/ingest"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// ingestChildEnv names the listen address of TestIngestChild.
const ingestChildEnv = "EDGEGW_INGEST_CHILD"

// TestIngestChild is the edgegw process of BenchmarkIngestVsNfcapd: an
// ingest listener on the address in $EDGEGW_INGEST_CHILD whose sink only
// counts, printing "records <n>" every 10 ms until it is stopped.
func TestIngestChild(t *testing.T) {
	addr := os.Getenv(ingestChildEnv)
	if addr == "" {
		t.Skip("the edgegw process of BenchmarkIngestVsNfcapd")
	}
	sink := &counter{}
	srv, err := ingest.New(ingest.Options{Listen: []string{addr}, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	term, stop := signal.NotifyContext(t.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("listening")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := uint64(1 << 63)
	for {
		select {
		case <-term.Done():
			return
		case <-tick.C:
		}
		if n := sink.n.Load(); n != last {
			fmt.Printf("records %d\n", n)
			last = n
		}
	}
}

// counter is a sink that only counts: the benchmark measures ingest.
type counter struct{ n atomic.Uint64 }

func (c *counter) Push(string, logpush.Record) { c.n.Add(1) }

// ipfixDatagrams returns n flows as IPFIX datagrams of at most 1400 bytes
// (28 IPv4 records each), the templates first: what edgegw's own exporter
// sends, captured from a loopback socket.
func ipfixDatagrams(b *testing.B, n int) [][]byte {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	if err := pc.(*net.UDPConn).SetReadBuffer(64 << 20); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ex, err := export.New(ctx, export.Options{Collectors: []export.Collector{{Addr: pc.LocalAddr().String(), Domain: 1}}})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	var out [][]byte
	got := make(chan struct{})
	go func() { // owned here: ends when pc is closed
		defer close(got)
		buf := make([]byte, 65536)
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			out = append(out, append([]byte(nil), buf[:k]...))
		}
	}()
	at := time.Now().Add(-time.Minute)
	for i := range n {
		r := logpush.Record{
			{Name: "Datetime", Value: logpush.Time(at)}, {Name: "Source", Value: logpush.String("nflog")},
			{Name: "IPSourceAddress", Value: logpush.String(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))},
			{Name: "IPDestinationAddress", Value: logpush.String("198.51.100.7")},
			{Name: "IPProtocol", Value: logpush.Uint(6)}, {Name: "SourcePort", Value: logpush.Uint(uint64(1024 + i%60000))},
			{Name: "DestinationPort", Value: logpush.Uint(443)}, {Name: "TCPFlags", Value: logpush.Uint(0x18)},
			{Name: "IPTotalLength", Value: logpush.Uint(1500)}, {Name: "SampleInterval", Value: logpush.Uint(1)},
		}
		for {
			before := ex.Stats().Dropped
			ex.Push("network_analytics_logs", r)
			if ex.Stats().Dropped == before {
				break
			}
			time.Sleep(time.Millisecond) // the queue is full: let Run send
		}
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ex.Stats().Records < uint64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the last datagrams into out
	pc.Close()
	<-got
	if st := ex.Stats(); st.Records != uint64(n) {
		b.Fatalf("exporter sent %d of %d records: %+v", st.Records, n, st)
	}
	return out
}

// rxQueue reads the receive queue of the UDP socket bound to port from
// /proc/net/udp as seen in the namespace f was opened in.
func rxQueue(f *os.File, port int) (int, error) {
	if _, err := f.Seek(0, 0); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(f)
	want := fmt.Sprintf(":%04X", port)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && strings.HasSuffix(fs[1], want) {
			_, rx, _ := strings.Cut(fs[4], ":")
			n, err := strconv.ParseUint(rx, 16, 64)
			return int(n), err
		}
	}
	return 0, fmt.Errorf("no UDP socket on port %d", port)
}

// replay sends the datagrams to port in windows of 32, each after the
// receiver has emptied its socket: both collectors get the same datagrams
// at the pace they can take, so none is lost to a full buffer, and the
// time is what they need to read and decode them.
func replay(b *testing.B, ns *netlab.NS, port int, ds [][]byte) time.Duration {
	var proc *os.File
	if err := ns.Do(func() error {
		var err error
		proc, err = os.Open("/proc/thread-self/net/udp")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer proc.Close()
	c, err := ns.DialContext(context.Background(), "udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	drained := func() {
		for {
			n, err := rxQueue(proc, port)
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				return
			}
			// Yield: in edgegw's case the receiver runs in this process.
			time.Sleep(20 * time.Microsecond)
		}
	}
	start := time.Now()
	for i, d := range ds {
		if _, err := c.Write(d); err != nil {
			b.Fatal(err)
		}
		if i%32 == 31 {
			drained()
		}
	}
	drained()
	return time.Since(start)
}

// BenchmarkIngestVsNfcapd replays the same IPFIX datagrams (200,000 flows
// in 28-record datagrams, from edgegw's exporter) over loopback in a
// namespace to edgegw's ingest listener (decoding into
// network_analytics_logs records) and to nfdump's nfcapd, in the same
// run, and reports what each stored, per second. edgegw's listener reads
// and decodes a socket on one goroutine; nfcapd on one thread.
//
//	go test -run '^$' -bench IngestVsNfcapd -benchtime 1x ./netflow/ingest/
func BenchmarkIngestVsNfcapd(b *testing.B) {
	testkit.NeedTool(b, "nfcapd", "nfdump")
	testkit.NeedTool(b, "nfdump", "nfdump")
	const flows = 200_000
	ds := ipfixDatagrams(b, flows)
	lab := netlab.NewT(b)
	ns, err := lab.NS("col")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("edgegw", func(b *testing.B) {
		// The listener runs in a process of its own, on one core
		// (GOMAXPROCS=1), as nfcapd does: in this process it would
		// compete with the sender for the same Go scheduler.
		cmd := ns.Command(os.Args[0], "-test.run=^TestIngestChild$", "-test.v")
		cmd.Env = append(os.Environ(), ingestChildEnv+"=127.0.0.1:4739", "GOMAXPROCS=1")
		p, err := ns.StartCmd(cmd)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.WaitOutput(ctx, "listening"); err != nil {
			b.Fatalf("child: %v: %s", err, p.Output())
		}
		var took time.Duration
		for b.Loop() {
			took += replay(b, ns, 4739, ds)
		}
		var stored uint64
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
			m := regexp.MustCompile(`records (\d+)\n`).FindAllStringSubmatch(p.Output(), -1)
			if len(m) > 0 {
				stored, _ = strconv.ParseUint(m[len(m)-1][1], 10, 64)
			}
			if stored >= uint64(flows*b.N) {
				break
			}
		}
		b.ReportMetric(float64(stored)/took.Seconds(), "records/s")
		b.ReportMetric(float64(flows*b.N)-float64(stored), "lost")
	})
	b.Run("nfcapd", func(b *testing.B) {
		dir := b.TempDir()
		p, err := ns.Start("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "4740", "-t", "3600", "-B", "4194304")
		if err != nil {
			b.Fatal(err)
		}
		defer p.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.WaitOutput(ctx, "Startup"); err != nil {
			b.Fatalf("nfcapd: %v: %s", err, p.Output())
		}
		var took time.Duration
		for b.Loop() {
			took += replay(b, ns, 4740, ds)
		}
		p.Stop() // writes the file out
		files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.2*"))
		if len(files) != 1 {
			b.Fatalf("nfcapd files %v: %s", files, p.Output())
		}
		out, err := ns.Exec(context.Background(), "nfdump", "-r", files[0], "-I")
		if err != nil {
			b.Fatalf("nfdump -I: %v: %s", err, out)
		}
		m := regexp.MustCompile(`(?m)^Flows:\s+(\d+)`).FindSubmatch(out)
		if m == nil {
			b.Fatalf("nfdump -I: no flow count: %s", out)
		}
		stored, _ := strconv.ParseUint(string(bytes.TrimSpace(m[1])), 10, 64)
		b.ReportMetric(float64(stored)/took.Seconds(), "records/s")
		b.ReportMetric(float64(flows*b.N)-float64(stored), "lost")
	})
}

// BenchmarkDecodeIPFIX measures decoding BenchmarkIngestVsNfcapd's
// datagrams into records without sockets: the CPU side of ingest.
func BenchmarkDecodeIPFIX(b *testing.B) {
	ds := ipfixDatagrams(b, 50_000)
	d := ingest.NewDecoder()
	from := netip.MustParseAddrPort("127.0.0.1:9")
	n := 0
	emit := func(f *ingest.Flow) { _ = ingest.Record(f, netflow.Colo{}); n++ }
	now := time.Now()
	for b.Loop() {
		for _, p := range ds {
			if err := d.Decode(from, p, now, emit); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
