package logpush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sink takes records from producers (the NFLOG sampler, Gateway DNS,
// Access). Push is cheap and never blocks, whatever the destination or the
// disk do: the record is filtered, sampled and encoded into each matching
// job's bounded queue, or dropped and counted (reason queue_full) when
// that queue is full. The record must not be modified afterwards.
type Sink interface {
	Push(dataset string, r Record)
}

// Options configure a Manager. Zero durations take the defaults shown.
type Options struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	StateDir   string                // spools live in <StateDir>/logpush/<job>/
	Host       string                // the appliance name: HEC "host" unless the destination sets host=

	MinBackoff     time.Duration // first retry delay, 1s
	MaxBackoff     time.Duration // cap of the retry delay, 5m
	AckInterval    time.Duration // HEC indexer-ack poll interval, 10s
	AckTimeout     time.Duration // resend a batch not acked after this, 5m
	RequestTimeout time.Duration // one HTTP request, 60s
	// SyncInterval is how often a job's open batch is flushed to its
	// write-ahead segment and fsynced, 500ms: the most a crash or power
	// cut loses. Finished batches are fsynced when they are cut.
	SyncInterval time.Duration
	// QueueBytes bounds a job's queue of encoded records waiting for the
	// spooler, 32 MiB; a record that does not fit is dropped and counted.
	QueueBytes int
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.MinBackoff, time.Second)
	def(&o.MaxBackoff, 5*time.Minute)
	def(&o.AckInterval, 10*time.Second)
	def(&o.AckTimeout, 5*time.Minute)
	def(&o.RequestTimeout, time.Minute)
	def(&o.SyncInterval, 500*time.Millisecond)
	if o.QueueBytes <= 0 {
		o.QueueBytes = 32 << 20
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
}

// Manager runs the Logpush jobs. It implements [Sink].
type Manager struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	jobs   []*job // in configuration order
	ctx    context.Context
	routes atomic.Pointer[map[string][]*job] // dataset → enabled jobs
}

// Plan is a list of jobs compiled (Compile): checked, destinations
// parsed, token and CA files read, filters compiled. It is immutable, and
// a Manager commits it (New, Commit) without reading or compiling again.
type Plan struct {
	jobs []*compiledJob // in configuration order
}

// Compile checks and compiles jobs without starting or opening anything.
func Compile(jobs []Job) (*Plan, error) {
	var errs []error
	seen := map[string]bool{}
	p := &Plan{}
	for _, c := range jobs {
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("logpush job %q: defined twice", c.Name))
			continue
		}
		seen[c.Name] = true
		cj, err := compileJob(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.jobs = append(p.jobs, cj)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// New compiles jobs and builds a Manager for them (NewPlan).
func New(jobs []Job, opts Options) (*Manager, error) {
	p, err := Compile(jobs)
	if err != nil {
		return nil, err
	}
	return NewPlan(p, opts)
}

// NewPlan builds a Manager for the compiled jobs without starting
// anything; Run starts them. Metrics are registered on opts.Registerer.
func NewPlan(p *Plan, opts Options) (*Manager, error) {
	if opts.StateDir == "" {
		return nil, errors.New("logpush: no state directory")
	}
	opts.setDefaults()
	m := &Manager{opts: opts, log: opts.Logger.With("component", "logpush")}
	m.opts.Logger = m.log
	m.jobs = m.build(p)
	m.publish()
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(m.Collector()); err != nil {
			return nil, fmt.Errorf("logpush: register metrics: %w", err)
		}
	}
	return m, nil
}

// Collector returns the Prometheus collector of the jobs' metrics, for an
// owner that registers collectors itself (leave Options.Registerer nil
// then). It reads the jobs at scrape time, so Set needs no re-registration.
func (m *Manager) Collector() prometheus.Collector { return &collector{m: m} }

// build makes jobs for p, reusing the current job of the same name when
// its configuration and token are unchanged.
func (m *Manager) build(p *Plan) []*job {
	out := make([]*job, 0, len(p.jobs))
	for _, c := range p.jobs {
		if old := m.find(c.cfg.Name); old != nil && old.cfg.Equal(&c.cfg) && old.token == c.token {
			out = append(out, old)
			continue
		}
		out = append(out, newJob(c, &m.opts))
	}
	return out
}

func (m *Manager) find(name string) *job {
	for _, j := range m.jobs {
		if j.cfg.Name == name {
			return j
		}
	}
	return nil
}

// publish makes the current enabled jobs visible to Push.
func (m *Manager) publish() {
	r := map[string][]*job{}
	for _, j := range m.jobs {
		if *j.cfg.Enabled {
			r[j.cfg.Dataset] = append(r[j.cfg.Dataset], j)
		}
	}
	m.routes.Store(&r)
}

// Push hands a record of a dataset to every enabled job of that dataset.
func (m *Manager) Push(dataset string, r Record) {
	for _, j := range (*m.routes.Load())[dataset] {
		j.push(r)
	}
}

// Run starts the enabled jobs and runs them until ctx ends; then it spools
// every batch still in memory, stops all goroutines and returns nil. Run
// may be called again after it returns.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.ctx != nil {
		m.mu.Unlock()
		return errors.New("logpush: already running")
	}
	m.ctx = ctx
	for _, j := range m.jobs {
		if *j.cfg.Enabled {
			if err := j.start(ctx, m.enabled()); err != nil {
				m.log.Error("job not started", "job", j.cfg.Name, "err", err)
			}
		}
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	var wg sync.WaitGroup
	for _, j := range m.jobs {
		wg.Go(j.stop)
	}
	wg.Wait()
	m.ctx = nil
	return nil
}

// Set compiles jobs and commits them (Commit). On error nothing changes.
func (m *Manager) Set(jobs []Job) error {
	p, err := Compile(jobs)
	if err != nil {
		return err
	}
	m.Commit(p)
	return nil
}

// Commit applies compiled jobs: added jobs start, removed ones stop (their
// in-memory batch is spooled; the spool stays on disk), changed ones are
// restarted and keep their spool, unchanged ones are not touched. It
// reads and compiles nothing.
func (m *Manager) Commit(p *Plan) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.build(p)
	prev := m.jobs
	m.jobs = next
	m.publish()
	if m.ctx == nil {
		return
	}
	var wg sync.WaitGroup
	for _, j := range prev {
		if !slices.Contains(next, j) {
			wg.Go(j.stop)
		}
	}
	wg.Wait()
	for _, j := range next {
		if !slices.Contains(prev, j) && *j.cfg.Enabled {
			if err := j.start(m.ctx, m.enabled()); err != nil {
				m.log.Error("job not started", "job", j.cfg.Name, "err", err)
			}
		}
	}
	// The jobs that kept running share the filesystem with a different
	// number of jobs now.
	for _, j := range next {
		if slices.Contains(prev, j) && j.cancel != nil {
			if err := j.applyBudget(j.sp, m.enabled()); err != nil {
				m.log.Error("cannot size the spool", "job", j.cfg.Name, "err", err)
			}
		}
	}
}

// enabled counts the enabled jobs: they share the spool filesystem.
func (m *Manager) enabled() int {
	n := 0
	for _, j := range m.jobs {
		if *j.cfg.Enabled {
			n++
		}
	}
	return n
}

// JobStatus is one job's state, as served by /api/v1/logpush. Field names
// follow Cloudflare's Logpush job where it has them.
type JobStatus struct {
	Name        string `json:"name"`
	Dataset     string `json:"dataset"`
	Destination string `json:"destination_conf"` // header_* values redacted
	Enabled     bool   `json:"enabled"`
	// State is idle (not started), running, failed (a permanent error
	// stopped delivery), stopped or disabled.
	State          string     `json:"state"`
	LastComplete   *time.Time `json:"last_complete"` // last batch accepted
	LastError      *time.Time `json:"last_error"`    // non-nil: currently failing
	ErrorMessage   *string    `json:"error_message"`
	RecordsSent    uint64     `json:"records_sent"`
	BytesSent      uint64     `json:"bytes_sent"` // compressed
	BatchesSent    uint64     `json:"batches_sent"`
	SpooledBatches int        `json:"spooled_batches"`
	SpooledBytes   int64      `json:"spooled_bytes"`
	// SpoolLimit is the limit in force: spool_limit, or the automatic one
	// from the spool filesystem's size, capped to what the filesystem can
	// hold for this job above its 10 % reserve.
	SpoolLimit int64 `json:"spool_limit"`
	// Recovered counts records spooled at start from batches a crash left
	// written ahead (write-ahead segments).
	Recovered   uint64            `json:"recovered_records"`
	Dropped     uint64            `json:"dropped"` // records, every reason
	DroppedBy   map[string]uint64 `json:"dropped_by_reason,omitempty"`
	Retries     map[string]uint64 `json:"retries"` // by HTTP status or "transport"
	SampledOut  uint64            `json:"sampled_out"`
	FilteredOut uint64            `json:"filtered_out"`
}

// Status returns every job's status in configuration order.
func (m *Manager) Status() []JobStatus {
	m.mu.Lock()
	jobs := slices.Clone(m.jobs)
	m.mu.Unlock()
	out := make([]JobStatus, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.status())
	}
	return out
}

func (j *job) status() JobStatus {
	s := JobStatus{Name: j.cfg.Name, Dataset: j.cfg.Dataset, Destination: j.redacted, Enabled: *j.cfg.Enabled,
		RecordsSent: j.st.recordsSent.Load(), BytesSent: j.st.bytesSent.Load(), BatchesSent: j.st.batchesSent.Load(),
		SampledOut: j.st.sampled.Load(), FilteredOut: j.st.filtered.Load()}
	j.mu.Lock()
	sp := j.sp
	j.mu.Unlock()
	if sp != nil {
		s.SpooledBatches, s.SpooledBytes = sp.usage()
		s.SpoolLimit, _ = sp.budget()
	}
	s.Recovered = j.st.recovered.Load()
	j.st.mu.Lock()
	defer j.st.mu.Unlock()
	s.State = j.st.state
	if !j.st.lastComplete.IsZero() {
		t := j.st.lastComplete
		s.LastComplete = &t
	}
	if !j.st.lastError.IsZero() {
		t, msg := j.st.lastError, j.st.errMsg
		s.LastError, s.ErrorMessage = &t, &msg
	}
	s.Retries = maps.Clone(j.st.retries)
	s.DroppedBy = map[string]uint64{}
	for k, v := range j.st.droppedRecords {
		s.DroppedBy[k] = v
		s.Dropped += v
	}
	if n := j.st.queueFull.Load(); n > 0 {
		s.DroppedBy[dropQueueFull] += n
		s.Dropped += n
	}
	return s
}
