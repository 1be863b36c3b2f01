package dns

import (
	"errors"
	"net"
	"net/netip"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// UDP batching: on a socket bound to one address, queries are read and
// cache-hit answers written up to udpBatch at a time (recvmmsg and
// sendmmsg). A query that would wait for an upstream is handed to its own
// goroutine, which writes its answer alone. Sockets bound to a wildcard
// address are served by miekg/dns, which picks each answer's source
// address.
const (
	udpBatch   = 32
	udpBufSize = 4096
)

type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpServer serves one UDP socket.
type udpServer struct {
	s    *Server
	conn *net.UDPConn
	bc   batchConn
	ln   netip.AddrPort // the socket's address, for the query log
}

func newUDPServer(s *Server, c *net.UDPConn) *udpServer {
	u := &udpServer{s: s, conn: c, ln: addrPort(c.LocalAddr())}
	if u.ln.Addr().Is4() {
		u.bc = ipv4.NewPacketConn(c)
	} else {
		u.bc = ipv6.NewPacketConn(c)
	}
	return u
}

// serve runs until the socket is closed. Buffers, messages and the query
// state of cache hits are reused from batch to batch.
func (u *udpServer) serve() {
	in := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, udpBufSize)}
	}
	out := make([]ipv4.Message, udpBatch)
	outBufs := make([][]byte, udpBatch)
	for i := range out {
		outBufs[i] = make([]byte, 0, ednsSize)
		out[i].Buffers = [][]byte{nil}
	}
	q := new(query) // nothing keeps it once its answer is packed and logged
	for {
		n, err := u.bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		nout := 0
		for i := range n {
			m := &in[i]
			src := addrPort(m.Addr)
			req := new(mdns.Msg)
			if err := req.Unpack(m.Buffers[0][:m.N]); err != nil {
				u.s.m.malformed.Inc()
				continue
			}
			*q = query{req: req, proto: "udp", src: src, dst: u.ln, start: u.s.now(), noWait: true}
			ans := u.s.answer(q)
			if q.wouldWait {
				u.s.bg.Go(func() {
					q := &query{req: req, proto: "udp", src: src, dst: u.ln, start: u.s.now()}
					if ans := u.s.answer(q); ans != nil {
						if b, err := ans.PackBuffer(make([]byte, 0, 512)); err == nil {
							u.conn.WriteToUDPAddrPort(b, src)
						}
						u.s.logQuery(q, ans)
					}
				})
				continue
			}
			if ans == nil {
				continue
			}
			b, err := ans.PackBuffer(outBufs[nout][:0])
			if err != nil {
				continue
			}
			out[nout].Buffers[0], out[nout].Addr = b, m.Addr
			nout++
			u.s.logQuery(q, ans)
		}
		for sent := 0; sent < nout; {
			k, err := u.bc.WriteBatch(out[sent:nout], 0)
			if err != nil {
				break
			}
			sent += k
		}
	}
}
