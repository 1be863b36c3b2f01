package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// Options configure a Server.
type Options struct {
	// Listen are the UDP addresses to receive datagrams on, host:port
	// (host empty: every address). Each socket takes NetFlow v5, v9,
	// IPFIX and sFlow v5 alike.
	Listen []string
	Sink   logpush.Sink // where records go (required); Push must not block
	Colo   netflow.Colo // Colo… fields of records until SetColo
	Logger *slog.Logger // nil: discard
	// ListenPacket opens a socket; nil: net.ListenPacket. Tests open
	// theirs in a network namespace.
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// ReadBuffer is each socket's receive buffer in bytes, 4 MiB: a burst
	// of datagrams waits in the kernel rather than being lost.
	ReadBuffer int
	Now        func() time.Time // nil: time.Now
	// Exporters are the routers allowed to send flows: a datagram from an
	// address outside every prefix is counted (ReasonNotAllowed) and
	// dropped before it is decoded, so it can neither add records nor
	// make the decoder remember (and evict) exporters. Empty: every
	// source is accepted. SetExporters replaces the list.
	Exporters []netip.Prefix
	// Places tells the country and AS of flows' addresses (a *geo.Live
	// following the GeoIP databases); nil: records carry no Source/
	// Destination Country and ASN fields.
	Places netflow.Places
}

// Stats are a Server's counters since it was built.
type Stats struct {
	Datagrams uint64            // datagrams read
	Records   uint64            // flow records handed to the sink
	Dropped   map[string]uint64 // datagrams or records dropped, by reason
}

// Server receives flow datagrams on UDP sockets and pushes one
// network_analytics_logs record per flow to its sink. It owns one reader
// goroutine per socket, each with its own Decoder (templates and sampling
// rates per exporter); Close stops them.
type Server struct {
	opts  Options
	log   *slog.Logger
	conns []net.PacketConn
	colo  atomic.Pointer[netflow.Colo]
	allow atomic.Pointer[allowList]
	wg    sync.WaitGroup

	datagrams, records atomic.Uint64
	dropped            map[string]*atomic.Uint64 // fixed keys: Reasons

	closeOnce sync.Once
}

// New opens the sockets and starts reading them.
func New(opts Options) (*Server, error) {
	if opts.Sink == nil {
		return nil, errors.New("netflow ingest: no sink for records")
	}
	if len(opts.Listen) == 0 {
		return nil, errors.New("netflow ingest: no listen address")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ListenPacket == nil {
		opts.ListenPacket = net.ListenPacket
	}
	if opts.ReadBuffer == 0 {
		opts.ReadBuffer = 4 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "netflow_ingest"), dropped: map[string]*atomic.Uint64{}}
	for _, r := range Reasons {
		s.dropped[r] = new(atomic.Uint64)
	}
	s.colo.Store(&opts.Colo)
	s.SetExporters(opts.Exporters)
	for _, a := range opts.Listen {
		c, err := opts.ListenPacket("udp", a)
		if err != nil {
			for _, c := range s.conns {
				c.Close()
			}
			return nil, fmt.Errorf("netflow ingest: listen on %s: %w", a, err)
		}
		if u, ok := c.(*net.UDPConn); ok {
			if err := u.SetReadBuffer(opts.ReadBuffer); err != nil {
				s.log.Warn("cannot size the socket buffer", "addr", a, "err", err)
			}
		}
		s.conns = append(s.conns, c)
	}
	for _, c := range s.conns {
		s.wg.Add(1)
		go s.read(c)
	}
	s.log.Info("receiving flows", "listen", opts.Listen)
	return s, nil
}

// Addrs are the sockets' local addresses (with the ports chosen for ":0").
func (s *Server) Addrs() []net.Addr {
	as := make([]net.Addr, len(s.conns))
	for i, c := range s.conns {
		as[i] = c.LocalAddr()
	}
	return as
}

// SetColo changes the Colo… fields of later records.
func (s *Server) SetColo(c netflow.Colo) { s.colo.Store(&c) }

// SetExporters replaces the allowed exporters (see Options.Exporters);
// the readers use the new list from their next datagram.
func (s *Server) SetExporters(ps []netip.Prefix) { s.allow.Store(newAllowList(ps)) }

// allowList is an immutable set of exporter prefixes, read by every
// reader without a lock. nil or empty allows every address.
type allowList struct{ prefixes []netip.Prefix }

func newAllowList(ps []netip.Prefix) *allowList {
	l := &allowList{}
	for _, p := range ps {
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		l.prefixes = append(l.prefixes, p)
	}
	return l
}

// allows reports whether a (unmapped) may send flows.
func (l *allowList) allows(a netip.Addr) bool {
	if len(l.prefixes) == 0 {
		return true
	}
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Close closes the sockets and waits for their readers to return.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		for _, c := range s.conns {
			err = errors.Join(err, c.Close())
		}
		s.wg.Wait()
	})
	return err
}

// read is a socket's reader goroutine: it decodes each datagram in turn
// and returns when the socket is closed.
func (s *Server) read(c net.PacketConn) {
	defer s.wg.Done()
	d := NewDecoder()
	buf := make([]byte, 65535)
	var lastWarn time.Time
	emit := func(f *Flow) {
		s.opts.Sink.Push(netflow.Dataset, RecordPlaces(f, *s.colo.Load(), s.opts.Places))
		s.records.Add(1)
	}
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (ICMP-induced ECONNREFUSED and the like)
			// must not stop the listener.
			s.log.Debug("read", "err", err)
			continue
		}
		s.datagrams.Add(1)
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !s.allow.Load().allows(ap.Addr()) {
			s.dropped[ReasonNotAllowed].Add(1)
			if now := time.Now(); now.Sub(lastWarn) >= 10*time.Second {
				lastWarn = now
				s.log.Warn("flow datagram from an exporter not in netflow.ingest.exporters dropped (see edgegw_netflow_ingest_dropped_total)", "exporter", ap)
			}
			continue
		}
		if err := d.Decode(ap, buf[:n], s.opts.Now(), emit); err != nil {
			var de *DropError
			reason := ReasonMalformed
			if errors.As(err, &de) {
				reason = de.Reason
			}
			s.dropped[reason].Add(1)
			if now := time.Now(); now.Sub(lastWarn) >= 10*time.Second {
				lastWarn = now
				s.log.Warn("flow datagram dropped (see edgegw_netflow_ingest_dropped_total)", "exporter", ap, "reason", reason, "err", err)
			}
		}
	}
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := Stats{Datagrams: s.datagrams.Load(), Records: s.records.Load(), Dropped: map[string]uint64{}}
	for r, n := range s.dropped {
		st.Dropped[r] = n.Load()
	}
	return st
}

// Collector returns the server's Prometheus metrics, for the owner to
// register.
func (s *Server) Collector() prometheus.Collector { return &collector{s: s} }

var (
	descDatagrams = prometheus.NewDesc("edgegw_netflow_ingest_datagrams_total", "NetFlow, IPFIX and sFlow datagrams received from exporters.", nil, nil)
	descRecords   = prometheus.NewDesc("edgegw_netflow_ingest_records_total", "Flow records from exporters handed to Logpush.", nil, nil)
	descDropped   = prometheus.NewDesc("edgegw_netflow_ingest_dropped_total", "Flow datagrams (or their unreadable parts) dropped, by reason.", []string{"reason"}, nil)
)

type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDatagrams
	ch <- descRecords
	ch <- descDropped
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descDatagrams, prometheus.CounterValue, float64(st.Datagrams))
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(st.Records))
	for _, r := range Reasons {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped[r]), r)
	}
}
