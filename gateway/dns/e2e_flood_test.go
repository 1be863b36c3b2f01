//go:build linux

package dns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// The flood topology, one namespace each:
//
//	lan 10.1.0.2 ── eth0 10.1.0.1  gw (edgegw)  eth1 10.2.0.1 ── 10.2.0.2 office
//
// Both hosts ask gw's LAN address, 10.1.0.1:53: the same sockets serve
// the flood and the office client. The upstream (in the test's own
// namespace) answers names under good.test and never answers anything
// under victim.test: the silent authority of a random-subdomain attack.
const (
	floodLAN    = "10.1.0.2"
	floodGW     = "10.1.0.1"
	floodGWOff  = "10.2.0.1"
	floodOffice = "10.2.0.2"

	floodFor      = 20 * time.Second
	floodRate     = 25000 // queries/s the sender aims at
	floodMinRate  = 2000  // the test fails below this: no flood (each name holds a slot for seconds: 500/s fill 1000)
	officeEvery   = 10 * time.Millisecond
	officeTimeout = 2 * time.Second
	officeNames   = 50
	floodQueue    = 1000 // flood queries unanswered beyond those holding max_inflight slots
)

// TestE2EFloodKeepsCachedAnswers: during a random-subdomain flood from a
// LAN host (up to 25,000 queries/s of random names under a zone whose
// authority never answers, for 20 s), an office client still gets at
// least 99 % of its cached answers, the flood's queries past max_inflight
// get SERVFAIL at once, and the process's open files and goroutines stay
// within max_inflight of where they were.
func TestE2EFloodKeepsCachedAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	lab := netlab.NewT(t)
	var gw, lan, office *netlab.NS
	for _, ns := range []struct {
		p    **netlab.NS
		name string
	}{{&gw, "gw"}, {&lan, "lan"}, {&office, "office"}} {
		n, err := lab.NS(ns.name)
		if err != nil {
			t.Fatal(err)
		}
		*ns.p = n
	}
	for _, err := range []error{
		lab.Link(lan, "eth0", floodLAN+"/24", gw, "eth0", floodGW+"/24"),
		lab.Link(office, "eth0", floodOffice+"/24", gw, "eth1", floodGWOff+"/24"),
		lan.Route("default", floodGW),
		office.Route("default", floodGWOff),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	up := newSilentZoneUpstream(t, "victim.test.")

	sink := &countSink{}
	cfg := Config{
		Listen:    []netip.AddrPort{netip.MustParseAddrPort(floodGW + ":53")},
		Upstreams: []string{up},
	}
	s, err := New(cfg, Options{Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Do(func() error { return s.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	eventually(t, 10*time.Second, "listening", func() bool { return len(s.Status().Listening) == 1 })
	maxInflight := s.snap.Load().cfg.MaxInflight

	// The office client's socket, and its names cached before the flood.
	pc, err := office.ListenPacket("udp", floodOffice+":0")
	if err != nil {
		t.Fatal(err)
	}
	client, err := newOfficeClient(pc.(*net.UDPConn), netip.MustParseAddrPort(floodGW+":53"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range officeNames {
		if !client.ask(fmt.Sprintf("n%d.good.test.", i), 5*time.Second) {
			t.Fatalf("n%d.good.test not answered before the flood", i)
		}
	}
	baseFDs, baseG := openFDs(t), runtime.NumGoroutine()

	// The flood, the office client and the sampler of open files and
	// waiting goroutines run side by side for floodFor.
	fctx, fcancel := context.WithTimeout(context.Background(), floodFor)
	defer fcancel()
	var wg sync.WaitGroup
	var sent atomic.Int64
	floodConns := make([]*net.UDPConn, 4) // several source ports: the kernel spreads them over the sockets
	for i := range floodConns {
		c, err := lan.ListenPacket("udp", floodLAN+":0")
		if err != nil {
			t.Fatal(err)
		}
		floodConns[i] = c.(*net.UDPConn)
		defer c.Close()
	}
	start := time.Now()
	wg.Go(func() {
		flood(fctx, floodConns, netip.MustParseAddrPort(floodGW+":53"), int64(maxInflight+floodQueue), &sent)
	})
	wg.Go(func() { client.run(fctx, officeEvery, officeNames) })
	var maxFDs, maxG int
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-tick.C:
			}
			maxFDs = max(maxFDs, openFDs(t))
			maxG = max(maxG, runtime.NumGoroutine())
		}
	})
	wg.Wait()
	elapsed := time.Since(start)
	asked, answered, took := client.result(officeTimeout)

	rate := float64(sent.Load()) / elapsed.Seconds()
	overloaded := testutil.ToFloat64(s.m.overloaded)
	ratio := float64(answered) / float64(max(asked, 1))
	slices.Sort(took)
	pct := func(p float64) time.Duration {
		if len(took) == 0 {
			return 0
		}
		return took[min(int(p*float64(len(took))), len(took)-1)].Round(10 * time.Microsecond)
	}
	t.Logf("office client's answer times (sent to arrival in its socket): median %v, 99th percentile %v, max %v", pct(0.5), pct(0.99), pct(1))
	t.Logf("flood: %d queries in %v (%.0f/s); office client: %d of %d cached answers within %v (%.2f %%); "+
		"max_inflight %d, answered past it %.0f; open files %d → max %d; goroutines %d → max %d; records %d",
		sent.Load(), elapsed.Round(time.Millisecond), rate, answered, asked, officeTimeout, 100*ratio,
		maxInflight, overloaded, baseFDs, maxFDs, baseG, maxG, sink.n.Load())
	if rate < floodMinRate {
		t.Fatalf("the sender made only %.0f queries/s: no flood to test against", rate)
	}
	if overloaded == 0 {
		t.Errorf("no query was answered past max_inflight: the flood never reached the cap")
	}
	if asked < 200 { // fewer would make one lost answer more than 0.5 %
		t.Errorf("the office client asked only %d times", asked)
	}
	if ratio < 0.99 {
		t.Errorf("office client got %d of %d cached answers (%.2f %%), want ≥ 99 %%", answered, asked, 100*ratio)
	}
	// Each query waiting for an upstream holds at most one socket and one
	// goroutine, started or about to be. On a loaded machine the timers
	// of their deadlines add short-lived goroutines (context.WithTimeout
	// cancels from a goroutine of its own): at most a few per waiting
	// query, gone once they ran. Without the cap there would be tens of
	// thousands of both.
	if maxFDs > baseFDs+maxInflight+64 {
		t.Errorf("open files went from %d to %d: more than max_inflight (%d) more", baseFDs, maxFDs, maxInflight)
	}
	if maxG > baseG+2*maxInflight {
		t.Errorf("goroutines went from %d to %d: more than twice max_inflight (%d) more", baseG, maxG, maxInflight)
	}
}

// flood sends random names under victim.test from conns to dst at up to
// floodRate queries/s until ctx ends, in batches (sendmmsg); after a
// stall it catches up by at most a tenth of a second's worth.
//
// It keeps at most window queries unanswered: on a machine too loaded for
// the resolver to read floodRate queries/s, the flood runs at the rate
// the resolver reads (it always has a queue to work through) instead of
// overflowing its socket's queue, which would be a test of CPU, not of
// upstream work. The resolver holds max_inflight of them unanswered for
// seconds, so window must leave room beyond that.
func flood(ctx context.Context, conns []*net.UDPConn, dst netip.AddrPort, window int64, sent *atomic.Int64) {
	const batch = 50
	var received atomic.Int64
	var rd sync.WaitGroup
	defer rd.Wait()
	pcs := make([]*ipv4.PacketConn, len(conns))
	for i, c := range conns {
		pcs[i] = ipv4.NewPacketConn(c)
		c.SetReadBuffer(8 << 20)
		rd.Go(func() { countAnswers(ctx, pcs[i], &received) })
	}
	to := net.UDPAddrFromAddrPort(dst)
	msgs := make([]ipv4.Message, batch)
	rnd := make([]byte, 8*batch)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	start, due := time.Now(), 0
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		target := int(floodRate * time.Since(start).Seconds())
		due = max(due, target-floodRate/10)
		for ; due+batch <= target && sent.Load()-received.Load() < window; due += batch {
			rand.Read(rnd)
			for i := range msgs {
				m := new(mdns.Msg)
				m.SetQuestion(hex.EncodeToString(rnd[8*i:8*i+8])+".victim.test.", mdns.TypeA)
				b, _ := m.Pack()
				msgs[i] = ipv4.Message{Buffers: [][]byte{b}, Addr: to}
			}
			n++
			if w, err := pcs[n%len(pcs)].WriteBatch(msgs, 0); err == nil {
				sent.Add(int64(w))
			}
		}
	}
}

// countAnswers counts the datagrams pc receives until ctx ends.
func countAnswers(ctx context.Context, pc *ipv4.PacketConn, n *atomic.Int64) {
	ms := make([]ipv4.Message, 64)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	for ctx.Err() == nil {
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		k, err := pc.ReadBatch(ms, 0)
		if err == nil {
			n.Add(int64(k))
		}
	}
}

// officeClient asks cached names at a steady pace and notes when each
// answer reached its socket (SO_TIMESTAMPNS, the kernel's clock): a client
// starved of CPU on a loaded machine still counts answers that arrived in
// time.
type officeClient struct {
	conn   *net.UDPConn
	server netip.AddrPort

	mu      sync.Mutex
	sentAt  map[uint16]time.Time
	arrived map[uint16]time.Time
}

func newOfficeClient(c *net.UDPConn, server netip.AddrPort) (*officeClient, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return &officeClient{conn: c, server: server, sentAt: map[uint16]time.Time{}, arrived: map[uint16]time.Time{}}, nil
}

// ask sends one query and reports whether its answer came within timeout
// (before the run, with nothing else in flight).
func (c *officeClient) ask(name string, timeout time.Duration) bool {
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeA)
	b, _ := m.Pack()
	if _, err := c.conn.WriteToUDPAddrPort(b, c.server); err != nil {
		return false
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			return false
		}
		r := new(mdns.Msg)
		if r.Unpack(buf[:n]) == nil && r.Id == m.Id {
			return r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1
		}
	}
}

// run asks one of names n0…n<names-1>.good.test every `every` until ctx
// ends, reading answers on a goroutine of its own; it returns once the
// last answers had officeTimeout to arrive.
func (c *officeClient) run(ctx context.Context, every time.Duration, names int) {
	var rd sync.WaitGroup
	rd.Go(c.read)
	tick := time.NewTicker(every)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
		case <-tick.C:
			m := new(mdns.Msg)
			m.SetQuestion(fmt.Sprintf("n%d.good.test.", i%names), mdns.TypeA)
			m.Id = uint16(i)
			b, _ := m.Pack()
			c.mu.Lock()
			c.sentAt[m.Id] = time.Now()
			c.mu.Unlock()
			c.conn.WriteToUDPAddrPort(b, c.server)
			continue
		}
		break
	}
	tick.Stop()
	time.Sleep(officeTimeout) // the last answers may still be on their way
	c.conn.Close()
	rd.Wait()
}

// read notes the arrival time of each good answer until the socket closes.
func (c *officeClient) read() {
	buf := make([]byte, 2048)
	oob := make([]byte, 128)
	for {
		n, oobn, _, _, err := c.conn.ReadMsgUDP(buf, oob)
		if err != nil {
			return
		}
		at := time.Now()
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16 {
					ts := (*unix.Timespec)(unsafe.Pointer(&cm.Data[0]))
					at = time.Unix(ts.Unix())
				}
			}
		}
		r := new(mdns.Msg)
		if r.Unpack(buf[:n]) != nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			continue
		}
		c.mu.Lock()
		if _, dup := c.arrived[r.Id]; !dup {
			c.arrived[r.Id] = at
		}
		c.mu.Unlock()
	}
}

// result counts the queries sent and those answered within timeout, with
// the answer times.
func (c *officeClient) result(timeout time.Duration) (asked, answered int, took []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, sent := range c.sentAt {
		asked++
		if at, ok := c.arrived[id]; ok && at.Sub(sent) <= timeout {
			answered++
			took = append(took, at.Sub(sent))
		}
	}
	return asked, answered, took
}

// newSilentZoneUpstream starts an upstream on loopback that answers A
// queries with 192.0.2.1 (TTL one hour) and never answers names under
// silent. It serves from one goroutine, so that the process's goroutines
// are the resolver's. It returns its address.
func newSilentZoneUpstream(t *testing.T, silent string) string {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(8 << 20)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r := new(mdns.Msg)
			if r.Unpack(buf[:n]) != nil || len(r.Question) != 1 ||
				strings.HasSuffix(strings.ToLower(r.Question[0].Name), "."+silent) {
				continue
			}
			m := new(mdns.Msg)
			m.SetReply(r)
			rr, _ := mdns.NewRR(r.Question[0].Name + " 3600 IN A 192.0.2.1")
			m.Answer = []mdns.RR{rr}
			if b, err := m.Pack(); err == nil {
				c.WriteToUDPAddrPort(b, from)
			}
		}
	})
	t.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return c.LocalAddr().String()
}

// openFDs counts the process's open files.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Errorf("open files: %v", err)
	}
	return len(ents)
}

// countSink counts records: the query log's cost without keeping them.
type countSink struct{ n atomic.Int64 }

func (s *countSink) Push(string, logpush.Record) { s.n.Add(1) }
