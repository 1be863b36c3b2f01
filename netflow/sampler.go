package netflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	nflog "github.com/florianl/go-nflog/v2"
	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// Options configure a Sampler. Zero values take the defaults shown.
type Options struct {
	Group  uint16       // NFLOG group the firewall logs samples to (required, > 0)
	Colo   Colo         // ColoCode, ColoName, ColoCountry of records until SetColo
	Sink   logpush.Sink // where records go (required)
	Logger *slog.Logger // nil: discard

	// CopyRange is how many bytes of each packet the kernel copies, 256:
	// enough for IPv6 + GRE + IPv6 + TCP with options. A log rule's own
	// snaplen, if smaller, wins.
	CopyRange uint32
	// ReadBuffer is the netlink socket's receive buffer in bytes, 4 MiB.
	// Root sets it past net.core.rmem_max (SO_RCVBUFFORCE).
	ReadBuffer int
	// QueueThreshold batches up to this many samples per netlink message
	// in the kernel, 16: one wakeup and one read per batch instead of per
	// sample. FlushTimeout sends a partial batch after this long, 100ms
	// (the kernel rounds to 10ms). A log rule's own queue-threshold wins.
	QueueThreshold uint32
	FlushTimeout   time.Duration
	// NetNS is a file descriptor of the network namespace to read in; 0:
	// the caller's. For tests.
	NetNS int
	// Now is the clock for samples without a kernel timestamp; nil:
	// time.Now.
	Now func() time.Time
	// Places tells the country and AS of the addresses (record.go); nil:
	// the Source/Destination Country and ASN fields are left out.
	Places Places
}

// Stats are the Sampler's counters since it was built.
type Stats struct {
	Samples   uint64            // samples read from the kernel
	Records   uint64            // records handed to the sink
	Lost      uint64            // samples the kernel could not deliver (sequence gaps)
	Overruns  uint64            // ENOBUFS: the socket buffer overflowed
	Malformed map[string]uint64 // samples dropped, by reason
	Foreign   uint64            // samples with a prefix that is not edgegw's
}

// Sampler reads the packets edgegw's firewall samples to an NFLOG group and
// pushes one network_analytics_logs record per packet to a Sink. The
// rules, interfaces and identities it names records with are immutable
// snapshots the owner swaps with SetRules, SetInterfaces and SetIdentities
// while Run reads.
type Sampler struct {
	opts Options
	log  *slog.Logger

	colo  atomic.Pointer[Colo]
	rules atomic.Pointer[Rules]
	ifs   atomic.Pointer[Interfaces]
	roles atomic.Pointer[Roles]
	ids   atomic.Pointer[identitiesBox]

	running atomic.Bool
	bound   chan struct{} // closed once Run has bound the group
	bindOne sync.Once

	samples, records, lost, overruns, foreign atomic.Uint64
	malMu                                     sync.Mutex
	malformed                                 map[string]uint64

	// Read by the reader goroutine only.
	haveSeq  bool
	lastSeq  uint32
	lastWarn time.Time
	pkt      Packet
	// The interface table resolved from roles (see SetRoles), and when.
	resolvedFrom *Roles
	resolved     Interfaces
	resolvedAt   time.Time
}

type identitiesBox struct{ ids Identities }

// New checks the options and builds a Sampler; Run opens the socket.
func New(opts Options) (*Sampler, error) {
	if opts.Group == 0 {
		return nil, errors.New("netflow: NFLOG group 0 is the kernel's catch-all; use a group above 0")
	}
	if opts.Sink == nil {
		return nil, errors.New("netflow: no sink for records")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CopyRange == 0 {
		opts.CopyRange = 256
	}
	if opts.ReadBuffer == 0 {
		opts.ReadBuffer = 4 << 20
	}
	if opts.QueueThreshold == 0 {
		opts.QueueThreshold = 16
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Sampler{opts: opts, log: opts.Logger.With("component", "netflow", "nflog_group", opts.Group),
		malformed: map[string]uint64{}, bound: make(chan struct{})}
	s.colo.Store(&opts.Colo)
	s.rules.Store(&Rules{SampleInterval: 1})
	s.ifs.Store(&Interfaces{})
	s.ids.Store(&identitiesBox{})
	return s, nil
}

// SetRules publishes the ruleset the kernel table now logs with. Call it
// with the same Apply that installs the table: a sample names its rule by
// position.
func (s *Sampler) SetRules(r Rules) {
	r.RuleIDs = append([]string(nil), r.RuleIDs...)
	s.rules.Store(&r)
}

// SetColo changes the Colo… fields of later records (appliance name,
// code or country changed on reload).
func (s *Sampler) SetColo(c Colo) { s.colo.Store(&c) }

// SetInterfaces publishes the interface table (the map is not copied: do
// not modify it afterwards).
func (s *Sampler) SetInterfaces(ifs Interfaces) { s.ifs.Store(&ifs) }

// Roles says what each interface is to the gateway, by name.
type Roles map[string]Role

// SetRoles publishes what each interface is, by name, in place of an
// index table (SetInterfaces). The sampler finds the kernel indexes
// itself, again whenever a sample arrives through an index it does not
// know (at most once a second), so a tunnel created or re-created after
// this call is named too: the owner need not order the sampler after
// every interface. The map is not copied: do not modify it afterwards.
func (s *Sampler) SetRoles(r Roles) { s.roles.Store(&r) }

// interfaces is the table to name a sample arriving through index idx
// with. Handle's goroutine only.
func (s *Sampler) interfaces(idx uint32) Interfaces {
	roles := s.roles.Load()
	if roles == nil {
		return *s.ifs.Load()
	}
	_, known := s.resolved[idx]
	now := s.opts.Now()
	if roles != s.resolvedFrom || (idx != 0 && !known && now.Sub(s.resolvedAt) >= time.Second) {
		s.resolved = resolveRoles(*roles, s.log)
		s.resolvedFrom, s.resolvedAt = roles, now
	}
	return s.resolved
}

// resolveRoles maps the indexes of the interfaces named in roles that
// exist now.
func resolveRoles(roles Roles, log *slog.Logger) Interfaces {
	ifs := Interfaces{}
	all, err := net.Interfaces()
	if err != nil {
		log.Warn("list interfaces: samples carry no direction until the next try", "err", err)
		return ifs
	}
	for _, ifi := range all {
		if role, ok := roles[ifi.Name]; ok {
			ifs[uint32(ifi.Index)] = Interface{Name: ifi.Name, Role: role}
		}
	}
	return ifs
}

// SetIdentities publishes the identity lookup (nil: none).
func (s *Sampler) SetIdentities(ids Identities) { s.ids.Store(&identitiesBox{ids}) }

// Bound is closed once Run has bound the NFLOG group for the first time:
// from then on the kernel keeps the samples for it. An owner that lets
// traffic through only after sampling is in place waits for it.
func (s *Sampler) Bound() <-chan struct{} { return s.bound }

// Stats returns the counters.
func (s *Sampler) Stats() Stats {
	st := Stats{Samples: s.samples.Load(), Records: s.records.Load(), Lost: s.lost.Load(),
		Overruns: s.overruns.Load(), Foreign: s.foreign.Load(), Malformed: map[string]uint64{}}
	s.malMu.Lock()
	for k, v := range s.malformed {
		st.Malformed[k] = v
	}
	s.malMu.Unlock()
	return st
}

// Handle turns one sample into a record and pushes it. Run calls it for
// every packet read; it is exported for the owner's tests and for
// replaying samples. It must not be called concurrently with itself or
// with Run.
func (s *Sampler) Handle(sm Sample) error {
	s.samples.Add(1)
	vd, err := firewall.ParseSamplePrefix(sm.Prefix)
	if err != nil {
		s.foreign.Add(1)
		return fmt.Errorf("sample with prefix %q: %w", sm.Prefix, err)
	}
	if err := DecodePacket(sm.Payload, &s.pkt); err != nil {
		s.countMalformed(reason(err))
		return fmt.Errorf("sample of rule %d: %w", vd.Rule, err)
	}
	v := view{colo: *s.colo.Load(), rules: s.rules.Load(), ifs: s.interfaces(sm.InDev), ids: s.ids.Load().ids, places: s.opts.Places}
	r, err := buildRecord(&v, &sm, vd, &s.pkt, s.opts.Now())
	if err != nil {
		s.countMalformed("unknown_rule")
		return err
	}
	s.opts.Sink.Push(Dataset, r)
	s.records.Add(1)
	return nil
}

func (s *Sampler) countMalformed(why string) {
	s.malMu.Lock()
	s.malformed[why]++
	s.malMu.Unlock()
}

// reason is the malformed-sample metric label of a decode error.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrEmptyPacket):
		return "empty"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrBadVersion):
		return "bad_version"
	case errors.Is(err, ErrNestedGRE):
		return "nested_gre"
	}
	return "bad_header"
}

// seq notes a sample's NFULA_SEQ and counts the samples missing before it.
// The kernel numbers every message of the group's instance as it builds
// it, so a number skipped is a sample the socket never got.
func (s *Sampler) seq(n uint32) {
	if s.haveSeq && n != s.lastSeq+1 {
		if gap := n - s.lastSeq - 1; gap < 1<<31 {
			s.lost.Add(uint64(gap))
			if now := time.Now(); now.Sub(s.lastWarn) >= 10*time.Second {
				s.lastWarn = now
				s.log.Warn("samples lost between kernel and edgegw: the reader falls behind (see edgegw_netflow_samples_lost_total)", "lost", gap)
			}
		}
	}
	s.haveSeq, s.lastSeq = true, n
}

// Run binds the NFLOG group and reads samples until ctx ends, then returns
// nil; it returns an error if the group cannot be bound or reading fails.
// Only one Run may be active at a time.
func (s *Sampler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("netflow: sampler already running")
	}
	defer s.running.Store(false)
	s.haveSeq = false

	nf, err := nflog.Open(&nflog.Config{
		NetNS:    s.opts.NetNS,
		Group:    s.opts.Group,
		Copymode: nflog.CopyPacket,
		Bufsize:  s.opts.CopyRange,
		// Local sequence numbers reveal kernel-side loss; the global ones
		// count every group's messages and so cannot.
		Flags:   nflog.FlagSeq,
		QThresh: s.opts.QueueThreshold,
		Timeout: uint32(max(s.opts.FlushTimeout/(10*time.Millisecond), 1)),
	})
	if err != nil {
		return fmt.Errorf("netflow: open NFLOG group %d: %w", s.opts.Group, err)
	}
	var closeOnce sync.Once
	closeNF := func() { closeOnce.Do(func() { nf.Close() }) }
	defer closeNF()
	if err := setReadBuffer(nf.Con, s.opts.ReadBuffer); err != nil {
		s.log.Warn("cannot size the NFLOG socket buffer", "bytes", s.opts.ReadBuffer, "err", err)
	}

	// The library's reader goroutine stops when a callback returns
	// non-zero. Stopping is ours (not ctx's) so that the reader always
	// tells us it has gone: a read deadline in the past wakes it, and
	// every callback after that returns 1.
	var (
		stopping atomic.Bool
		exitOnce sync.Once
		exited   = make(chan struct{})
		readErr  error
	)
	exit := func(err error) int {
		exitOnce.Do(func() { readErr = err; close(exited) })
		return 1
	}
	hook := func(a nflog.Attribute) int {
		if stopping.Load() {
			return exit(nil)
		}
		if a.Seq != nil {
			s.seq(*a.Seq)
		}
		sm := Sample{}
		if a.Prefix != nil {
			sm.Prefix = *a.Prefix
		}
		if a.InDev != nil {
			sm.InDev = *a.InDev
		}
		if a.Timestamp != nil && a.Timestamp.Unix() > 0 {
			sm.Time = *a.Timestamp
		}
		if a.Payload != nil {
			sm.Payload = *a.Payload
		}
		if err := s.Handle(sm); err != nil {
			s.log.Debug("sample dropped", "err", err)
		}
		return 0
	}
	errfn := func(err error) int {
		if stopping.Load() {
			return exit(nil)
		}
		if errors.Is(err, syscall.ENOBUFS) {
			// The socket buffer overflowed: the kernel dropped samples,
			// which the next sequence number shows as a gap.
			s.overruns.Add(1)
			return 0
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0
		}
		return exit(fmt.Errorf("netflow: read NFLOG group %d: %w", s.opts.Group, err))
	}
	regCtx, cancelReg := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReg()
	if err := nf.RegisterWithErrorFunc(regCtx, hook, errfn); err != nil {
		return fmt.Errorf("netflow: bind NFLOG group %d: %w", s.opts.Group, err)
	}
	s.log.Info("sampling", "copy_range", s.opts.CopyRange)
	s.bindOne.Do(func() { close(s.bound) })
	select {
	case <-ctx.Done():
		// Samples logged before the stop may still wait in the kernel's
		// NFLOG instance (fewer than QueueThreshold, sent after
		// FlushTimeout) or in the socket: read them first.
		drain := time.NewTimer(s.opts.FlushTimeout + 100*time.Millisecond)
		select {
		case <-drain.C:
		case <-exited:
			drain.Stop()
			return readErr
		}
		stopping.Store(true)
		nf.Con.SetReadDeadline(time.Now().Add(-time.Second))
		<-exited
		return nil
	case <-exited:
		return readErr
	}
}

// setReadBuffer sizes the socket's receive buffer, past rmem_max if the
// process may (CAP_NET_ADMIN).
func setReadBuffer(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n) != nil {
			serr = os.NewSyscallError("setsockopt SO_RCVBUF", syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n))
		}
	}); err != nil {
		return err
	}
	return serr
}

// Collector returns the sampler's Prometheus metrics, for the owner to
// register.
func (s *Sampler) Collector() prometheus.Collector { return &collector{s: s} }

var (
	descSamples   = prometheus.NewDesc("edgegw_netflow_samples_total", "Packets the firewall sampled that edgegw read from NFLOG.", nil, nil)
	descRecords   = prometheus.NewDesc("edgegw_netflow_records_total", "network_analytics_logs records handed to Logpush.", nil, nil)
	descLost      = prometheus.NewDesc("edgegw_netflow_samples_lost_total", "Samples the kernel logged but edgegw never read (NFLOG sequence gaps).", nil, nil)
	descOverruns  = prometheus.NewDesc("edgegw_netflow_socket_overruns_total", "Times the NFLOG socket's receive buffer overflowed (ENOBUFS).", nil, nil)
	descMalformed = prometheus.NewDesc("edgegw_netflow_samples_malformed_total", "Samples dropped because the packet or its rule could not be read, by reason.", []string{"reason"}, nil)
	descForeign   = prometheus.NewDesc("edgegw_netflow_samples_foreign_total", "Samples whose NFLOG prefix is not edgegw's ef/<n>/<a|b>.", nil, nil)
)

type collector struct{ s *Sampler }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSamples, descRecords, descLost, descOverruns, descMalformed, descForeign} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	for _, m := range []struct {
		d *prometheus.Desc
		v uint64
	}{{descSamples, st.Samples}, {descRecords, st.Records}, {descLost, st.Lost}, {descOverruns, st.Overruns}, {descForeign, st.Foreign}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
	for _, r := range []string{"empty", "truncated", "bad_version", "bad_header", "nested_gre", "unknown_rule"} {
		ch <- prometheus.MustNewConstMetric(descMalformed, prometheus.CounterValue, float64(st.Malformed[r]), r)
	}
}
