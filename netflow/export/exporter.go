package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults.
const (
	// DefaultTemplateRefresh is how often templates are sent again over
	// UDP, where a collector that restarts has no other way to learn them
	// (RFC 7011 §8.4).
	DefaultTemplateRefresh = time.Minute
	// flushInterval bounds how long a record waits for a full message.
	flushInterval = time.Second
	// maxMessage keeps a message in one unfragmented datagram on any
	// path with a 1500-byte MTU (IPv6 and UDP headers included).
	maxMessage = 1400
	queueLen   = 4096
)

// Collector is one collector the flows go to.
type Collector struct {
	// Addr is the collector's UDP address, host:port.
	Addr string
	// Domain is the observation domain ID in every message; collectors
	// keep templates per exporter address and domain.
	Domain uint32
	// TemplateRefresh is how often the templates are sent again; zero:
	// DefaultTemplateRefresh.
	TemplateRefresh time.Duration
}

// Options configure an Exporter.
type Options struct {
	Collectors []Collector
	// Dial opens a connected UDP socket; nil: net.Dialer. Tests dial from
	// a network namespace.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Stats are the exporter's counters.
type Stats struct {
	Records    uint64 // flow records sent, counted once per collector
	Messages   uint64 // IPFIX messages sent
	SendErrors uint64 // messages a collector's socket refused (e.g. ICMP port unreachable)
	Dropped    uint64 // records dropped because the queue was full
}

// Exporter sends the gateway's sampled flows to collectors as IPFIX.
// Push hands it records; Run encodes and sends them.
type Exporter struct {
	opts  Options
	log   *slog.Logger
	queue chan queued
	dests []*dest

	records, messages, sendErrors, dropped atomic.Uint64
}

// queued is one flow and the sampling interval it was taken at.
type queued struct {
	f    Flow
	rate uint32
}

// dest is one collector's socket and stream state.
type dest struct {
	c        Collector
	conn     net.Conn  // nil until a dial succeeds
	lastDial time.Time // the last failed dial
	seq      uint32    // data records sent so far (the header's sequence number)
	lastTmpl time.Time // when templates were last sent; zero: never
}

// redialAfter spaces dial attempts to a collector whose name did not
// resolve.
const redialAfter = 10 * time.Second

// New checks the options and opens a UDP socket to every collector. A
// collector whose name does not resolve yet is dialled again when there is
// something to send (at most every 10 s), its messages counted as send
// errors meanwhile: a DNS outage does not stop the gateway. Run owns the
// sockets from then on; call Run, or Close if Run is never called.
func New(ctx context.Context, opts Options) (*Exporter, error) {
	if len(opts.Collectors) == 0 {
		return nil, errors.New("ipfix export: no collectors")
	}
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Exporter{opts: opts, log: opts.Logger.With("component", "ipfix-export"), queue: make(chan queued, queueLen)}
	for _, c := range opts.Collectors {
		if c.TemplateRefresh <= 0 {
			c.TemplateRefresh = DefaultTemplateRefresh
		}
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			e.Close()
			return nil, fmt.Errorf("ipfix export to %s: %w", c.Addr, err)
		}
		d := &dest{c: c}
		e.dial(ctx, d)
		e.dests = append(e.dests, d)
	}
	return e, nil
}

// dial opens d's socket, logging a failure.
func (e *Exporter) dial(ctx context.Context, d *dest) {
	conn, err := e.opts.Dial(ctx, "udp", d.c.Addr)
	if err != nil {
		d.lastDial = e.opts.Now()
		e.log.Warn("collector", "collector", d.c.Addr, "err", err)
		return
	}
	d.conn = conn
}

// Close closes the sockets of an Exporter whose Run was never called.
func (e *Exporter) Close() error {
	var errs []error
	for _, d := range e.dests {
		if d.conn != nil {
			errs = append(errs, d.conn.Close())
		}
	}
	return errors.Join(errs...)
}

// Push queues one of the gateway's own flow records for export. It never
// blocks: a record that finds the queue full is counted and dropped.
// Records of other datasets and sources are ignored.
func (e *Exporter) Push(dataset string, r logpush.Record) {
	if dataset != "network_analytics_logs" {
		return
	}
	f, rate, ok := FromRecord(r)
	if !ok {
		return
	}
	select {
	case e.queue <- queued{f, rate}:
	default:
		e.dropped.Add(1)
	}
}

// Run sends queued flows until ctx ends, then sends what is queued and
// closes the sockets. Templates and the sampler's options record go first
// to each collector, again every TemplateRefresh and whenever the sampling
// interval changes.
func (e *Exporter) Run(ctx context.Context) error {
	defer e.Close()
	var (
		pending []queued
		rate    uint32 // the announced sampling interval; 0: none yet
		buf     = make([]byte, 0, maxMessage)
	)
	flush := func() {
		if len(pending) == 0 {
			return
		}
		now := e.opts.Now()
		for _, d := range e.dests {
			if d.lastTmpl.IsZero() || now.Sub(d.lastTmpl) >= d.c.TemplateRefresh {
				buf = e.sendTemplates(ctx, buf, d, rate, now)
			}
		}
		buf = e.sendFlows(ctx, buf, pending, now)
		pending = pending[:0]
	}
	// take queues a flow. Flows sampled at another rate than the last
	// go out under the old announcement first; then every collector
	// learns the new one.
	take := func(q queued) {
		if q.rate != rate {
			flush()
			for _, d := range e.dests {
				d.lastTmpl = time.Time{}
			}
			rate = q.rate
		}
		pending = append(pending, q)
		if len(pending) >= 256 {
			flush()
		}
	}
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case q := <-e.queue:
					take(q)
					continue
				default:
				}
				flush()
				return nil
			}
		case q := <-e.queue:
			take(q)
		case now := <-t.C:
			flush()
			if rate != 0 {
				for _, d := range e.dests {
					if now.Sub(d.lastTmpl) >= d.c.TemplateRefresh {
						buf = e.sendTemplates(ctx, buf, d, rate, e.opts.Now())
					}
				}
			}
		}
	}
}

// sendTemplates sends d the templates and the sampler's options record in
// one message; after a failed send they go again with the next flows.
func (e *Exporter) sendTemplates(ctx context.Context, buf []byte, d *dest, rate uint32, now time.Time) []byte {
	buf = append(buf[:0], make([]byte, headerLen)...)
	buf = appendTemplates(buf)
	buf = appendSampling(buf, d.c.Domain, rate)
	putHeader(buf, now, d.seq, d.c.Domain)
	if e.send(ctx, d, buf) {
		d.seq++ // the options record is a data record
		d.lastTmpl = now
	}
	return buf
}

// sendFlows encodes flows into messages of at most maxMessage bytes and
// sends each to every collector.
func (e *Exporter) sendFlows(ctx context.Context, buf []byte, flows []queued, now time.Time) []byte {
	for len(flows) > 0 {
		buf = append(buf[:0], make([]byte, headerLen)...)
		n := 0
		setStart, setV6 := -1, false
		for _, q := range flows {
			v6 := !q.f.Src.Is4()
			size := recordLen(v6)
			if setStart < 0 || v6 != setV6 {
				size += setHdrLen
			}
			if len(buf)+size > maxMessage {
				break
			}
			if setStart < 0 || v6 != setV6 {
				if setStart >= 0 {
					closeSet(buf, setStart)
				}
				setStart, setV6 = len(buf), v6
				id := uint16(templateIPv4)
				if v6 {
					id = templateIPv6
				}
				buf = append(buf, byte(id>>8), byte(id), 0, 0)
			}
			buf = appendFlow(buf, &q.f)
			n++
		}
		closeSet(buf, setStart)
		for _, d := range e.dests {
			putHeader(buf, now, d.seq, d.c.Domain)
			if e.send(ctx, d, buf) {
				d.seq += uint32(n)
				e.records.Add(uint64(n))
			}
		}
		flows = flows[n:]
	}
	return buf
}

// closeSet writes the length of the set that starts at start and runs to
// the end of b.
func closeSet(b []byte, start int) {
	l := len(b) - start
	b[start+2], b[start+3] = byte(l>>8), byte(l)
}

// send writes one message; a refused write (the collector is down) is
// counted, logged at debug level and otherwise ignored: UDP export does
// not wait for collectors.
func (e *Exporter) send(ctx context.Context, d *dest, msg []byte) bool {
	if d.conn == nil && e.opts.Now().Sub(d.lastDial) >= redialAfter {
		e.dial(ctx, d)
	}
	if d.conn == nil {
		e.sendErrors.Add(1)
		return false
	}
	if _, err := d.conn.Write(msg); err != nil {
		e.sendErrors.Add(1)
		e.log.Debug("send", "collector", d.c.Addr, "err", err)
		return false
	}
	e.messages.Add(1)
	return true
}

// Stats returns the counters.
func (e *Exporter) Stats() Stats {
	return Stats{Records: e.records.Load(), Messages: e.messages.Load(), SendErrors: e.sendErrors.Load(), Dropped: e.dropped.Load()}
}

// Collector returns the exporter's Prometheus metrics.
func (e *Exporter) Collector() prometheus.Collector { return &collector{e: e} }

var (
	descRecords    = prometheus.NewDesc("edgegw_netflow_export_records_total", "Flow records sent to IPFIX collectors, once per collector.", nil, nil)
	descMessages   = prometheus.NewDesc("edgegw_netflow_export_messages_total", "IPFIX messages sent to collectors.", nil, nil)
	descSendErrors = prometheus.NewDesc("edgegw_netflow_export_send_errors_total", "IPFIX messages a collector's socket refused.", nil, nil)
	descDropped    = prometheus.NewDesc("edgegw_netflow_export_dropped_total", "Flow records dropped because the export queue was full.", nil, nil)
)

type collector struct{ e *Exporter }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRecords
	ch <- descMessages
	ch <- descSendErrors
	ch <- descDropped
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.e.Stats()
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(st.Records))
	ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(descSendErrors, prometheus.CounterValue, float64(st.SendErrors))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped))
}
