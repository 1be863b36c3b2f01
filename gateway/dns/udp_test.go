package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/ipv4"
)

// TestUDPReaderMixesHitsAndMisses sends one burst of queries from one
// socket, cached names between names that need the upstream, with and
// without EDNS and in mixed case, so that the reader reuses its memory
// for hits while misses it handed to goroutines are still waiting: every
// answer must carry its own ID, question (case kept), address and OPT.
func TestUDPReaderMixesHitsAndMisses(t *testing.T) {
	up := newTestUpstream(t)
	const n = 200
	for i := range n {
		up.add(fmt.Sprintf("n%d.mix.test. 300 IN A 192.0.2.%d", i, i%250+1))
	}
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}}, Options{})
	for i := 0; i < n; i += 2 {
		ask(t, addr, "udp", fmt.Sprintf("n%d.mix.test", i), mdns.TypeA)
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type sent struct {
		name string
		want netip.Addr
		edns bool
	}
	byID := map[uint16]sent{}
	for i := range n {
		name := fmt.Sprintf("n%d.mix.test.", i)
		if i%3 == 0 {
			name = fmt.Sprintf("N%d.Mix.TEST.", i)
		}
		m := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
		m.Id = uint16(1000 + i)
		edns := i%4 < 2
		if edns {
			m.SetEdns0(1232, false)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		byID[m.Id] = sent{name, netip.AddrFrom4([4]byte{192, 0, 2, byte(i%250 + 1)}), edns}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(byID) > 0 {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("%d answers missing: %v", len(byID), err)
		}
		var a mdns.Msg
		if err := a.Unpack(buf[:k]); err != nil {
			t.Fatal(err)
		}
		sq, ok := byID[a.Id]
		if !ok {
			t.Fatalf("answer with unknown or repeated ID %d", a.Id)
		}
		delete(byID, a.Id)
		if len(a.Question) != 1 || a.Question[0].Name != sq.name {
			t.Errorf("ID %d: question %v, want %s", a.Id, a.Question, sq.name)
		}
		if len(a.Answer) != 1 {
			t.Errorf("ID %d (%s): answer %v", a.Id, sq.name, a.Answer)
			continue
		}
		if rr, ok := a.Answer[0].(*mdns.A); !ok || rr.A.String() != sq.want.String() {
			t.Errorf("ID %d (%s): answer %v, want %s", a.Id, sq.name, a.Answer[0], sq.want)
		}
		if (a.IsEdns0() != nil) != sq.edns {
			t.Errorf("ID %d (%s): OPT in answer %v, asked with EDNS %v", a.Id, sq.name, a.IsEdns0() != nil, sq.edns)
		}
	}
	// Every answer is counted once, under its transport and rcode (the
	// counters the readers share without a lock). The last answers are
	// counted just after they are written.
	noerror := s.m.queries.WithLabelValues("udp", "NOERROR")
	eventually(t, 5*time.Second, "queries counted", func() bool { return testutil.ToFloat64(noerror) == n/2+n })
	if c := testutil.ToFloat64(s.m.queries.WithLabelValues("udp", "SERVFAIL")); c != 0 {
		t.Errorf("%v SERVFAIL counted", c)
	}
}

// TestBatchCountsExact: answers of the UDP readers, counted in batches,
// are in the shared counters by the time the client has them: four cache
// hits and a blocked name after the first (upstream) answer, the
// blocking policy's match and every answer's duration.
func TestBatchCountsExact(t *testing.T) {
	up := newTestUpstream(t)
	s, addr := startServer(t, Config{Upstreams: []string{up.addr}, BlockResponse: "nxdomain", Policies: []Policy{
		{ID: "ads", Expression: `dns.fqdn == "b.test"`, Action: "block"},
	}}, Options{})
	// A miss is answered by a goroutine that waits for the upstream; it
	// counts its answer after sending it.
	ask(t, addr, "udp", "a.test", mdns.TypeA)
	eventually(t, 5*time.Second, "the miss counted", func() bool {
		return testutil.ToFloat64(s.m.queries.WithLabelValues("udp", "NOERROR")) == 1
	})
	for range 4 {
		ask(t, addr, "udp", "a.test", mdns.TypeA)
	}
	ask(t, addr, "udp", "b.test", mdns.TypeA)
	// No waiting: each answer was sent after its batch was counted.
	if n := testutil.ToFloat64(s.m.cacheHit); n != 4 {
		t.Errorf("cache hits %v, want 4", n)
	}
	if n := testutil.ToFloat64(s.m.queries.WithLabelValues("udp", "NOERROR")); n != 5 {
		t.Errorf("udp NOERROR answers %v, want 5", n)
	}
	if n := testutil.ToFloat64(s.m.queries.WithLabelValues("udp", "NXDOMAIN")); n != 1 {
		t.Errorf("udp NXDOMAIN answers %v, want 1", n)
	}
	// The policy's series, looked up when the policy was applied.
	if n := testutil.ToFloat64(s.m.policyMatches.WithLabelValues("ads")); n != 1 {
		t.Errorf("policy ads matched %v times, want 1", n)
	}
	// Each answer's duration, the batch's for the reader's.
	var h dto.Metric
	if err := s.m.duration.(prometheus.Metric).Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 6 {
		t.Errorf("%d durations observed, want 6 (%v)", h.GetHistogram().GetSampleCount(), err)
	}
}

// TestBatchIO: the reader's recvmmsg gives each datagram with its
// source, on IPv4 and IPv6 sockets, and sendmmsg answers each to the
// address it came from; an address read did not give is refused.
func TestBatchIO(t *testing.T) {
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(network, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", network)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			b, err := newBatchIO(pc.(*net.UDPConn), udpBatch)
			if err != nil {
				t.Fatal(err)
			}
			var clients []net.Conn
			for i := range 5 {
				c, err := net.Dial("udp", pc.LocalAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write([]byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
			}
			in := make([]ipv4.Message, udpBatch)
			for i := range in {
				in[i].Buffers = [][]byte{make([]byte, udpBufSize)}
				in[i].OOB = make([]byte, oobSize)
			}
			var got []ipv4.Message
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(got) < len(clients) {
				n, err := b.read(in[len(got):])
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, in[len(got):len(got)+n]...)
			}
			out := make([]ipv4.Message, len(got))
			for i, m := range got {
				c := clients[m.Buffers[0][0]]
				if m.N != 1 || addrPort(m.Addr) != addrPort(c.LocalAddr()) {
					t.Errorf("datagram %d: %d bytes from %v, sent from %v", i, m.N, m.Addr, c.LocalAddr())
				}
				out[i] = ipv4.Message{Buffers: [][]byte{{m.Buffers[0][0], 'a'}}, Addr: m.Addr}
			}
			if n, err := b.write(out); n != len(out) || err != nil {
				t.Fatalf("sent %d of %d: %v", n, len(out), err)
			}
			for i, c := range clients {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 16)
				if n, err := c.Read(buf); err != nil || n != 2 || buf[0] != byte(i) {
					t.Errorf("client %d: %x %v", i, buf[:n], err)
				}
			}
			if _, err := b.write([]ipv4.Message{{Buffers: [][]byte{{1}}, Addr: clients[0].LocalAddr()}}); !errors.Is(err, errNotFromRead) {
				t.Errorf("an address read did not give: %v", err)
			}
		})
	}
}
