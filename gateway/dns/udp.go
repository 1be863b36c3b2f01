package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// UDP batching: queries are read and answers that need no upstream
// (cache hits, policy answers, and SERVFAIL or stale answers past
// max_inflight) are written up to udpBatch at a time (recvmmsg and
// sendmmsg). A query that waits for an upstream takes a max_inflight slot
// and is handed to its own goroutine, which writes its answer alone. So a
// flood of names nobody answers holds at most max_inflight slots and
// costs the reader one quick answer for each query beyond them: cache
// hits keep flowing.
//
// A reader answers a cache hit in memory of its own, reused from query to
// query: plain queries are parsed by its queryParser (anything unusual
// by Unpack), the answer is made in its scratch and, sent as cached, from
// the cached sections' wire form (wire.go), so a hit allocates nothing
// (BenchmarkCacheHitPath). A query handed to a waiting goroutine is
// detached from that memory first. What every answer shares is touched
// once a batch, not once a query: the metrics (batchCounts), the clock,
// and the console's top names (topLocal).
//
// Where a cached answer's CPU goes (TestDNSPerf, pprof and perf, 2
// cores): about 60 % in the kernel's sendmmsg and recvmmsg, as much per
// datagram as Unbound's sendto and recvfrom (loopback delivery to
// dnsperf is paid by the sender); the Go scheduler's parking and epoll
// about 6 %; the rest answering: policies with the 1M-name list, the
// cache lookup, parsing, counting.
//
// udpBatch is 64: under dnsperf's 200 queries in flight a read returned
// 7–9 datagrams on average but a full batch of 32 in a fifth of the
// reads; 64 took 13.1 µs of CPU a cached answer against 13.9 with 32
// (TestDNSPerf, one run, both builds).
//
// Every socket receives IP_PKTINFO (IPV6_PKTINFO): the arrival interface
// decides whether the client's identity holds, and on a wildcard address
// the query's destination becomes the answer's source.
const (
	udpBatch   = 64
	udpBufSize = 4096
	udpRcvBuf  = 8 << 20
)

// udpServer serves one UDP socket.
type udpServer struct {
	s        *Server
	conn     *net.UDPConn
	io       *batchIO
	ln       netip.AddrPort // the socket's address, for the query log
	v6       bool           // an AF_INET6 socket (IPV6_PKTINFO)
	wildcard bool           // answers need their source address set

	// The reader's reusable memory: the message queries are parsed into
	// (until one is handed to a goroutine that waits for an upstream)
	// and the scratch its answers are made in.
	req *mdns.Msg
	qp  queryParser
	sc  scratch
	// top holds the console's counts of the queries this reader answered
	// until they are merged (see topLocal); the reader holds top.mu
	// while it answers a batch.
	top *topLocal
	// counts are the batch's metrics, added to the shared ones before
	// its answers are sent.
	counts batchCounts
	// slowPack turns the wire fast path off (tests compare the two).
	slowPack bool
}

func newUDPServer(s *Server, c *net.UDPConn) (*udpServer, error) {
	u := &udpServer{s: s, conn: c, ln: addrPort(c.LocalAddr())}
	u.wildcard = u.ln.Addr().IsUnspecified()
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		var dom int
		if dom, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		u.v6 = dom == unix.AF_INET6
		if u.v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_PKTINFO, 1)
		}
		if serr != nil {
			return
		}
		// A deep queue rides out bursts and floods: the reader answers
		// what it can without waiting, so the queue drains at its speed.
		// SO_RCVBUFFORCE passes net.core.rmem_max for root; else the
		// kernel caps SO_RCVBUF there.
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRcvBuf) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpRcvBuf)
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return nil, fmt.Errorf("udp socket %s: packet info: %w", u.ln, err)
	}
	if u.io, err = newBatchIO(c, udpBatch); err != nil {
		return nil, err
	}
	u.top = s.top.newLocal()
	return u, nil
}

// serve runs until the socket is closed. Buffers, messages and the query
// state of answers without upstream work are reused from batch to batch.
func (u *udpServer) serve() {
	in := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, udpBufSize)}
		in[i].OOB = make([]byte, oobSize)
	}
	out := make([]ipv4.Message, udpBatch)
	outBufs := make([][]byte, udpBatch)
	outOOB := make([][]byte, udpBatch)
	for i := range out {
		outBufs[i] = make([]byte, 0, ednsSize)
		outOOB[i] = make([]byte, oobSize)
		out[i].Buffers = [][]byte{nil}
	}
	q := new(query) // nothing keeps it once its answer is packed and logged
	defer u.s.top.drop(u.top)
	for {
		n, err := u.io.read(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// The batch arrived together: one clock read is its queries'
		// start (each answer still reads the clock once when it is
		// logged, for its duration).
		start := u.s.now()
		nout := 0
		u.top.mu.Lock()
		for i := range n {
			if u.packet(&in[i], q, start, &out[nout], outBufs[nout], outOOB[nout]) {
				nout++
			}
		}
		if u.top.due(start) {
			u.top.flushLocked()
		}
		u.top.mu.Unlock()
		u.s.m.flush(&u.counts, u.s.now().Sub(start))
		for sent := 0; sent < nout; {
			k, err := u.io.write(out[sent:nout])
			if err != nil {
				break
			}
			sent += k
		}
	}
}

// packet answers the query in m, received at start, if it needs no
// upstream, into o (with buf and oob as its buffers) and reports whether
// o is to be sent. A query that needs an upstream is handed to a
// goroutine of its own. u.top.mu is held.
func (u *udpServer) packet(m *ipv4.Message, q *query, start time.Time, o *ipv4.Message, buf, oob []byte) bool {
	src := addrPort(m.Addr)
	dst, via := pktinfo(m.OOB[:m.NN])
	m.OOB = m.OOB[:cap(m.OOB)]
	local := u.ln
	if u.wildcard && dst.IsValid() {
		local = netip.AddrPortFrom(dst, u.ln.Port())
	}
	req := u.req
	if req == nil {
		req = new(mdns.Msg)
		u.req = req
	}
	var qwire []byte
	if b := m.Buffers[0][:m.N]; u.qp.parse(b, req) {
		if !u.slowPack {
			qwire = u.qp.qwire
		}
	} else {
		*req = mdns.Msg{}
		if err := req.Unpack(b); err != nil {
			u.s.m.malformed.Inc()
			return false
		}
	}
	// One pass answers from the cache or policy, or past max_inflight;
	// else it reserves a slot for the goroutine that waits for the
	// upstream.
	*q = query{req: req, proto: "udp", src: src, dst: local, via: via, start: start, noWait: true, sc: &u.sc, top: u.top, counts: &u.counts, qwire: qwire}
	ans := u.s.answer(q)
	if q.wouldWait {
		u.req = nil // req now belongs to the goroutine
		u.qp.detach(req)
		u.s.bg.Go(func() { u.wait(req, src, local, via) })
		return false
	}
	if ans == nil {
		return false
	}
	var b []byte
	if q.wire != nil {
		b = packWire(q, ans, buf[:0])
	} else {
		var err error
		if b, err = ans.PackBuffer(buf[:0]); err != nil {
			return false
		}
	}
	o.Buffers[0], o.Addr, o.OOB = b, m.Addr, nil
	if u.wildcard && dst.IsValid() {
		o.OOB = srcInfo(oob, u.v6, dst)
	}
	u.s.logQuery(q, ans)
	return true
}

// wait answers a query that needs an upstream; it holds a max_inflight
// slot until it returns.
func (u *udpServer) wait(req *mdns.Msg, src, local netip.AddrPort, via int) {
	q := &query{req: req, proto: "udp", src: src, dst: local, via: via, start: u.s.now(), held: true}
	defer u.s.finished(q)
	ans := u.s.answer(q)
	if ans == nil {
		return
	}
	b, err := ans.PackBuffer(make([]byte, 0, 512))
	if err != nil {
		return
	}
	var oob []byte
	if u.wildcard && local.Addr().IsValid() && !local.Addr().IsUnspecified() {
		oob = srcInfo(make([]byte, oobSize), u.v6, local.Addr())
	}
	to := src
	if u.v6 && src.Addr().Is4() {
		to = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
	}
	u.conn.WriteMsgUDPAddrPort(b, oob, to)
	u.s.logQuery(q, ans)
}
