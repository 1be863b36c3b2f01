package health

import (
	"slices"
	"sync"
	"time"
)

// Quality probes are sent beside the health probes, pipelined (each at its
// own time, not waiting for the previous answer), and feed rolling
// windows of latency, jitter, loss and latency under load. They never
// change the health state: that stays Magic WAN's machine on the health
// probes, and quality acts through steering (see tunnel.Steerer).
const (
	// QualityWindow is how far back the measurements and scores in the
	// status and metrics look.
	QualityWindow = 10 * time.Second
	// SteeringWindow is how far back the measurement that quality
	// steering compares with its thresholds looks: short, so that a
	// path is left within seconds of going bad.
	SteeringWindow = 2 * time.Second
	// LossTimeout is how long a quality probe may go unanswered before
	// it counts as lost. An answer arriving later is ignored, so that a
	// probe's verdict never changes once made.
	LossTimeout = time.Second
	// LoadedBitrate is the traffic (both directions, bits per second) from
	// which a tunnel is under load, and its probes measure loaded
	// latency. Quality probes alone stay far below it (100 probes a second
	// of 41-byte packets are 33 kbit/s each way).
	LoadedBitrate = 1e6
	// DefaultQualityInterval is the quality probes' interval on a tunnel
	// that no quality-steered route uses.
	DefaultQualityInterval = 100 * time.Millisecond
	// SteeringQualityInterval is their interval on a tunnel that a
	// quality-steered route uses: 100 probes a second put 200 probes in
	// the steering window, enough to tell 5 % loss from a clean path
	// within 3 s (the chance that 150 probes at 5 % loss lose fewer than
	// two is 0.4 %).
	SteeringQualityInterval = 10 * time.Millisecond
	// loadSlot is the period over which the tunnel's throughput is
	// sampled.
	loadSlot = 100 * time.Millisecond
	// ringSize bounds the probes remembered; it divides 2^16 so that a
	// probe's sequence number picks its slot, and holds more than a
	// QualityWindow plus a LossTimeout at the fastest interval.
	ringSize = 2048
)

// Measurement is what a window of quality probes says about a path.
type Measurement struct {
	// Samples is the number of probes whose outcome is known (answered,
	// or unanswered for LossTimeout) sent within the window, from the
	// first answered probe on.
	Samples int `json:"samples"`
	// Latency is the median round trip of probes sent while the tunnel
	// was not under load (of all answered probes if every one was).
	Latency time.Duration `json:"latency_ns"`
	// Jitter is the mean absolute difference of consecutive round trips.
	Jitter time.Duration `json:"jitter_ns"`
	// Loss is the fraction of Samples not answered.
	Loss float64 `json:"loss"`
	// LoadedLatency is the median round trip of probes sent while the
	// tunnel carried at least LoadedBitrate; 0 when LoadedSamples is 0.
	LoadedLatency time.Duration `json:"loaded_latency_ns"`
	LoadedSamples int           `json:"loaded_samples"`
	// Throughput is the 90th percentile of the tunnel's bit rate (both
	// directions) per 100 ms over the window.
	Throughput float64 `json:"throughput_bps"`
}

type probeRecord struct {
	seq      uint16
	sent     time.Time
	rtt      time.Duration
	answered bool
	loaded   bool
	valid    bool
}

type loadRecord struct {
	at  time.Time
	bps float64
}

// quality is the record of one tunnel's quality probes. Its methods are
// safe for concurrent use: the prober sends, the tunnel's receive path
// answers, the status and the steering read.
type quality struct {
	mu    sync.Mutex
	ring  [ringSize]probeRecord
	loads []loadRecord // oldest first, bounded to a QualityWindow

	// first is when the first answered probe was sent. Probes sent
	// before it are not measured: until the path has answered once it
	// is being set up (the peer's tunnel not up yet, neighbours being
	// resolved), and a path that never answers is the health check's to
	// call down, not a quality to score.
	first time.Time

	// lastBytes and lastLoad are the load sampler's state.
	lastBytes uint64
	lastLoad  time.Time
	loaded    bool
}

// sent records probe seq sent at now.
func (q *quality) sent(seq uint16, now time.Time) {
	q.mu.Lock()
	q.ring[int(seq)%ringSize] = probeRecord{seq: seq, sent: now, loaded: q.loaded, valid: true}
	q.mu.Unlock()
}

// answer records the answer to probe seq at now. Answers to probes that
// were never sent, were answered already or came after LossTimeout are
// ignored and reported false.
func (q *quality) answer(seq uint16, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := &q.ring[int(seq)%ringSize]
	if !r.valid || r.seq != seq || r.answered {
		return false
	}
	rtt := now.Sub(r.sent)
	if rtt < 0 || rtt >= LossTimeout {
		return false
	}
	r.rtt, r.answered = rtt, true
	if q.first.IsZero() || r.sent.Before(q.first) {
		q.first = r.sent
	}
	return true
}

// sampleLoad feeds the tunnel's byte counter (both directions) read at
// now; it keeps one rate per loadSlot and decides whether the probes sent
// next are under load.
func (q *quality) sampleLoad(bytes uint64, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.lastLoad.IsZero() {
		q.lastBytes, q.lastLoad = bytes, now
		return
	}
	dt := now.Sub(q.lastLoad)
	if dt < loadSlot {
		return
	}
	bps := 0.0
	if bytes >= q.lastBytes {
		bps = float64(bytes-q.lastBytes) * 8 / dt.Seconds()
	}
	q.lastBytes, q.lastLoad = bytes, now
	q.loaded = bps >= LoadedBitrate
	q.loads = append(q.loads, loadRecord{at: now, bps: bps})
	cut := 0
	for cut < len(q.loads) && now.Sub(q.loads[cut].at) > QualityWindow {
		cut++
	}
	q.loads = append(q.loads[:0], q.loads[cut:]...)
}

// measure summarises the probes sent within window before now.
func (q *quality) measure(now time.Time, window time.Duration) Measurement {
	q.mu.Lock()
	var recs []probeRecord
	for _, r := range q.ring {
		if r.valid && now.Sub(r.sent) <= window && !r.sent.After(now) && !q.first.IsZero() && !r.sent.Before(q.first) {
			recs = append(recs, r)
		}
	}
	var loads []float64
	for _, l := range q.loads {
		if now.Sub(l.at) <= window {
			loads = append(loads, l.bps)
		}
	}
	q.mu.Unlock()
	slices.SortFunc(recs, func(a, b probeRecord) int { return a.sent.Compare(b.sent) })

	var m Measurement
	var idle, loaded, all []time.Duration
	var prev time.Duration
	var jitterSum time.Duration
	jitterN := 0
	lost := 0
	for _, r := range recs {
		switch {
		case r.answered:
		case now.Sub(r.sent) >= LossTimeout:
			lost++
			m.Samples++
			continue
		default:
			continue // undecided yet
		}
		m.Samples++
		all = append(all, r.rtt)
		if r.loaded {
			loaded = append(loaded, r.rtt)
		} else {
			idle = append(idle, r.rtt)
		}
		if len(all) > 1 {
			d := r.rtt - prev
			jitterSum += max(d, -d)
			jitterN++
		}
		prev = r.rtt
	}
	if m.Samples > 0 {
		m.Loss = float64(lost) / float64(m.Samples)
	}
	if jitterN > 0 {
		m.Jitter = jitterSum / time.Duration(jitterN)
	}
	if len(idle) == 0 {
		idle = all
	}
	m.Latency = median(idle)
	m.LoadedSamples = len(loaded)
	m.LoadedLatency = median(loaded)
	if len(loads) > 0 {
		slices.Sort(loads)
		m.Throughput = loads[(len(loads)*9+9)/10-1]
	}
	return m
}

// median is the middle value of ds (the lower of the two middle ones for
// an even count); 0 for none. It sorts ds.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)/2]
}
