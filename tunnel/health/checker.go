package health

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/tunnel"
)

// Path is what a check needs of a tunnel: to send a packet into it as if
// routed there, and to see ICMP packets arriving from it first. GRE's
// *gre.Tunnel implements it; so must every tunnel kind with health checks.
type Path interface {
	Inject(pkt []byte) error
	// SetProbeHandler installs f, which returns true for packets it
	// consumes; nil removes it.
	SetProbeHandler(f func(pkt []byte) bool)
}

// Options are a checker's collaborators.
type Options struct {
	Logger *slog.Logger // nil discards
	// OnChange is called (from the checker's goroutine) after every
	// state change, typically to re-run the route manager.
	OnChange func(name string, s tunnel.State)
	// Thresholds; zero means DefaultThresholds.
	Thresholds Thresholds
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Load returns the bytes the tunnel has carried so far, both
	// directions; quality probes sent while it moves at least
	// LoadedBitrate measure latency under load. Nil: no loaded latency.
	Load func() uint64
	// QualityInterval is the quality probes' interval; zero means
	// DefaultQualityInterval. SetQualityInterval changes it later.
	QualityInterval time.Duration
}

// Checker probes one tunnel. Run it with Run; read it from any goroutine.
type Checker struct {
	name   string
	cfg    tunnel.HealthCheck
	local  netip.Addr // this end's tunnel address
	target netip.Addr
	rate   Rate
	path   Path
	log    *slog.Logger
	opts   Options
	id     uint16

	replies chan uint16

	// qid is the ICMP identifier of quality probes (id with the top bit
	// flipped), so that their answers never count as health answers.
	qid      uint16
	quality  quality
	qualityT atomic.Int64 // the quality probes' interval, nanoseconds
	qsent    atomic.Uint64

	mu      sync.Mutex
	machine *Machine

	sent, ok, failed, changes atomic.Uint64
	lastRTT                   atomic.Int64 // nanoseconds

	descs *descs
}

// New returns a checker for tunnel name whose interface address is
// address. cfg must have passed SetDefaults and Validate.
func New(name string, cfg tunnel.HealthCheck, address netip.Prefix, path Path, opts Options) *Checker {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Thresholds == (Thresholds{}) {
		opts.Thresholds = DefaultThresholds
	}
	target := cfg.Target
	if !target.IsValid() {
		target = tunnel.Peer(address)
	}
	var id [2]byte
	rand.Read(id[:])
	c := &Checker{
		name: name, cfg: cfg, local: address.Addr(), target: target,
		rate: Rates[cfg.Rate], path: path, opts: opts, id: binary.BigEndian.Uint16(id[:]),
		log:     opts.Logger.With("component", "health", "tunnel", name),
		replies: make(chan uint16, 16),
		machine: NewMachine(opts.Thresholds, opts.Now()),
	}
	if c.rate == (Rate{}) {
		c.rate = Rates["mid"]
	}
	c.qid = c.id ^ 0x8000
	if opts.QualityInterval <= 0 {
		opts.QualityInterval = DefaultQualityInterval
	}
	c.qualityT.Store(int64(opts.QualityInterval))
	c.descs = newDescs(name)
	return c
}

// State returns the tunnel's current health.
func (c *Checker) State() tunnel.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, _ := c.machine.State()
	return s
}

// Status is a check's state for the admin API.
type Status struct {
	State   tunnel.State  `json:"state"`
	Since   time.Time     `json:"since"`
	Target  netip.Addr    `json:"target"`
	Type    string        `json:"type"`
	Rate    string        `json:"rate"`
	Sent    uint64        `json:"probes_sent"`
	Failed  uint64        `json:"probes_failed"`
	LastRTT time.Duration `json:"last_rtt_ns"`
	// Quality is the quality probes' view over the last QualityWindow.
	Quality QualityStatus `json:"quality"`
}

// QualityStatus is a tunnel's measured quality and its AIM-style scores.
// Scores is nil until the window holds MinQualitySamples probes.
type QualityStatus struct {
	Window        time.Duration `json:"window_ns"`
	ProbeInterval time.Duration `json:"probe_interval_ns"`
	ProbesSent    uint64        `json:"probes_sent"`
	Measurement
	Scores *Scores `json:"scores,omitempty"`
}

// MinQualitySamples is the number of decided quality probes a window
// needs before it is scored.
const MinQualitySamples = 20

// Status reads the check's state and counters.
func (c *Checker) Status() Status {
	c.mu.Lock()
	s, since := c.machine.State()
	c.mu.Unlock()
	return Status{State: s, Since: since, Target: c.target, Type: c.cfg.Type, Rate: c.cfg.Rate,
		Sent: c.sent.Load(), Failed: c.failed.Load(), LastRTT: time.Duration(c.lastRTT.Load()),
		Quality: c.Quality()}
}

// Quality measures the last QualityWindow of quality probes and scores it.
func (c *Checker) Quality() QualityStatus {
	m := c.quality.measure(c.opts.Now(), QualityWindow)
	qs := QualityStatus{Window: QualityWindow, ProbeInterval: time.Duration(c.qualityT.Load()),
		ProbesSent: c.qsent.Load(), Measurement: m}
	if m.Samples >= MinQualitySamples {
		s := Score(m)
		qs.Scores = &s
	}
	return qs
}

// Recent measures the quality probes of the last window, for steering.
func (c *Checker) Recent(window time.Duration) Measurement {
	return c.quality.measure(c.opts.Now(), window)
}

// SetQualityInterval changes the quality probes' interval (from the next
// probe on); d ≤ 0 means DefaultQualityInterval.
func (c *Checker) SetQualityInterval(d time.Duration) {
	if d <= 0 {
		d = DefaultQualityInterval
	}
	c.qualityT.Store(int64(d))
}

// Run probes until ctx ends; it installs the probe handler on the path
// and removes it on return.
func (c *Checker) Run(ctx context.Context) error {
	c.path.SetProbeHandler(c.handle)
	defer c.path.SetProbeHandler(nil)
	c.log.Info("health check started", "target", c.target, "type", c.cfg.Type, "rate", c.cfg.Rate,
		"detection", c.rate.DetectionTime(c.opts.Thresholds))
	// The quality prober is Run's: it stops with ctx, and Run waits for
	// it before removing the probe handler.
	qctx, qcancel := context.WithCancel(ctx)
	var qwg sync.WaitGroup
	qwg.Go(func() { c.runQuality(qctx) })
	defer qwg.Wait()
	defer qcancel()
	var seq uint16
	retries := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		start := time.Now()
		seq++
		ok := c.probe(ctx, seq)
		if ctx.Err() != nil {
			return nil
		}
		c.observe(ok)
		if !ok && retries < c.opts.Thresholds.QuickRetries {
			retries++
			continue
		}
		retries = 0
		timer.Reset(max(0, c.rate.Interval-time.Since(start)))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// probe sends one probe and waits for its answer or the timeout.
func (c *Checker) probe(ctx context.Context, seq uint16) bool {
	// Drain answers to earlier probes that came in late.
	for len(c.replies) > 0 {
		<-c.replies
	}
	c.sent.Add(1)
	start := time.Now()
	if err := c.path.Inject(c.packet(c.id, seq)); err != nil {
		c.log.Debug("send probe", "err", err)
	}
	timeout := time.NewTimer(c.rate.Timeout)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timeout.C:
			c.failed.Add(1)
			return false
		case got := <-c.replies:
			if got == seq {
				c.lastRTT.Store(int64(time.Since(start)))
				return true
			}
		}
	}
}

func (c *Checker) observe(ok bool) {
	now := c.opts.Now()
	c.mu.Lock()
	from, _ := c.machine.State()
	to, changed := c.machine.Observe(ok, now)
	c.mu.Unlock()
	if !changed {
		return
	}
	c.changes.Add(1)
	c.log.Warn("tunnel health changed", "from", from, "to", to, "penalty", to.Penalty())
	if c.opts.OnChange != nil {
		c.opts.OnChange(c.name, to)
	}
}

// runQuality sends quality probes at the current interval until ctx
// ends, sampling the tunnel's load before each.
func (c *Checker) runQuality(ctx context.Context) {
	var seq uint16
	var lastLoad time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := c.opts.Now()
		if c.opts.Load != nil && now.Sub(lastLoad) >= loadSlot {
			c.quality.sampleLoad(c.opts.Load(), now)
			lastLoad = now
		}
		seq++
		c.quality.sent(seq, now)
		c.qsent.Add(1)
		if err := c.path.Inject(c.packet(c.qid, seq)); err != nil {
			c.log.Debug("send quality probe", "err", err)
		}
		// Keep the pace whatever sending cost, without catching up in a
		// burst after a stall.
		next = next.Add(time.Duration(c.qualityT.Load()))
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
		} else {
			next = time.Now()
			timer.Reset(0)
		}
	}
}

// handle runs on the tunnel's receive path: it consumes echo replies from
// the target to this end carrying our identifiers.
func (c *Checker) handle(p []byte) bool {
	r, ok := parseEchoReply(p)
	if !ok || (r.id != c.id && r.id != c.qid) || r.src != c.target || r.dst != c.local {
		return false
	}
	if r.id == c.qid {
		c.quality.answer(r.seq, c.opts.Now())
		return true
	}
	select {
	case c.replies <- r.seq:
	default:
	}
	return true
}

// echoReply is what a health check reads from an ICMP echo reply.
type echoReply struct {
	src, dst netip.Addr
	id, seq  uint16
}

// parseEchoReply reads p, a packet that arrived through a tunnel (bytes
// the far end, or anyone able to put packets into the tunnel, chose), as
// an IPv4 ICMP echo reply. It accepts only a whole, well-formed one: an
// IPv4 header of at least 20 bytes whose total length fits in p, no
// fragment (a later fragment's first bytes are payload, not an ICMP
// header), ICMP type 0 code 0 and a correct ICMP checksum. Bytes past the
// IP total length (link padding) are ignored.
func parseEchoReply(p []byte) (echoReply, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != 1 {
		return echoReply{}, false
	}
	ihl := int(p[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(p[2:]))
	if ihl < 20 || total < ihl+8 || total > len(p) {
		return echoReply{}, false
	}
	if binary.BigEndian.Uint16(p[6:])&0x3fff != 0 { // MF set or a fragment offset
		return echoReply{}, false
	}
	m := p[ihl:total]
	if m[0] != 0 || m[1] != 0 || checksum(m) != 0 {
		return echoReply{}, false
	}
	return echoReply{
		src: netip.AddrFrom4([4]byte(p[12:16])), dst: netip.AddrFrom4([4]byte(p[16:20])),
		id: binary.BigEndian.Uint16(m[4:]), seq: binary.BigEndian.Uint16(m[6:]),
	}, true
}

// packet builds probe seq with ICMP identifier id: an echo reply from the
// target to this end (type reply) or an echo request from this end to the
// target.
func (c *Checker) packet(id, seq uint16) []byte {
	const payload = "edgegw-health"
	b := make([]byte, 20+8+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 1
	src, dst := c.target, c.local
	icmpType := byte(0) // echo reply
	if c.cfg.Type == "request" {
		src, dst, icmpType = c.local, c.target, 8
	}
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	m := b[20:]
	m[0] = icmpType
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:], checksum(m))
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

type descs struct {
	state, probes, failures, changes                     *prometheus.Desc
	latency, jitter, loss, loaded, grade, qprobes, qsamp *prometheus.Desc
}

func newDescs(name string) *descs {
	l := prometheus.Labels{"tunnel": name}
	return &descs{
		state:    prometheus.NewDesc("edgegw_tunnel_health_state", "1 for the tunnel's current health state (healthy, degraded, down), 0 for the others.", []string{"state"}, l),
		probes:   prometheus.NewDesc("edgegw_tunnel_health_probes_total", "Health-check probes sent through the tunnel.", nil, l),
		failures: prometheus.NewDesc("edgegw_tunnel_health_probe_failures_total", "Health-check probes not answered within the timeout.", nil, l),
		changes:  prometheus.NewDesc("edgegw_tunnel_health_state_changes_total", "Health state changes of the tunnel.", nil, l),
		latency: prometheus.NewDesc("edgegw_tunnel_latency_seconds",
			"Median round trip of the tunnel's quality probes over the quality window (10 s), while not under load.", nil, l),
		jitter: prometheus.NewDesc("edgegw_tunnel_jitter_seconds",
			"Mean absolute difference of consecutive quality-probe round trips over the quality window.", nil, l),
		loss: prometheus.NewDesc("edgegw_tunnel_loss_ratio",
			"Fraction of the tunnel's quality probes not answered within 1 s, over the quality window.", nil, l),
		loaded: prometheus.NewDesc("edgegw_tunnel_loaded_latency_seconds",
			"Median round trip of quality probes sent while the tunnel carried at least 1 Mbit/s; absent without such probes.", nil, l),
		grade: prometheus.NewDesc("edgegw_tunnel_quality_grade",
			"AIM-style grade of the tunnel per experience: 0 bad, 1 poor, 2 average, 3 good, 4 great; absent until enough probes.",
			[]string{"experience"}, l),
		qprobes: prometheus.NewDesc("edgegw_tunnel_quality_probes_total", "Quality probes sent through the tunnel.", nil, l),
		qsamp: prometheus.NewDesc("edgegw_tunnel_quality_samples",
			"Quality probes with a known outcome in the quality window.", nil, l),
	}
}

// Describe implements prometheus.Collector.
func (c *Checker) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.descs.state
	ch <- c.descs.probes
	ch <- c.descs.failures
	ch <- c.descs.changes
	ch <- c.descs.latency
	ch <- c.descs.jitter
	ch <- c.descs.loss
	ch <- c.descs.loaded
	ch <- c.descs.grade
	ch <- c.descs.qprobes
	ch <- c.descs.qsamp
}

// Collect implements prometheus.Collector.
func (c *Checker) Collect(ch chan<- prometheus.Metric) {
	cur := c.State()
	for _, s := range []tunnel.State{tunnel.Healthy, tunnel.Degraded, tunnel.Down} {
		v := 0.0
		if s == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.descs.state, prometheus.GaugeValue, v, s.String())
	}
	ch <- prometheus.MustNewConstMetric(c.descs.probes, prometheus.CounterValue, float64(c.sent.Load()))
	ch <- prometheus.MustNewConstMetric(c.descs.failures, prometheus.CounterValue, float64(c.failed.Load()))
	ch <- prometheus.MustNewConstMetric(c.descs.changes, prometheus.CounterValue, float64(c.changes.Load()))
	q := c.Quality()
	ch <- prometheus.MustNewConstMetric(c.descs.qprobes, prometheus.CounterValue, float64(q.ProbesSent))
	ch <- prometheus.MustNewConstMetric(c.descs.qsamp, prometheus.GaugeValue, float64(q.Samples))
	if q.Samples == 0 {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.descs.latency, prometheus.GaugeValue, q.Latency.Seconds())
	ch <- prometheus.MustNewConstMetric(c.descs.jitter, prometheus.GaugeValue, q.Jitter.Seconds())
	ch <- prometheus.MustNewConstMetric(c.descs.loss, prometheus.GaugeValue, q.Loss)
	if q.LoadedSamples > 0 {
		ch <- prometheus.MustNewConstMetric(c.descs.loaded, prometheus.GaugeValue, q.LoadedLatency.Seconds())
	}
	if q.Scores != nil {
		for _, e := range []struct {
			name string
			g    Grade
		}{{"streaming", q.Scores.Streaming}, {"gaming", q.Scores.Gaming}, {"video_calls", q.Scores.VideoCalls}} {
			ch <- prometheus.MustNewConstMetric(c.descs.grade, prometheus.GaugeValue, float64(e.g), e.name)
		}
	}
}

// String names the checker in logs.
func (c *Checker) String() string { return fmt.Sprintf("health(%s → %s)", c.name, c.target) }
