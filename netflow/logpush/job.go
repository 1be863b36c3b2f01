package logpush

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Drop reasons, the reason label of the dropped metrics.
const (
	dropSpoolLimit = "spool_limit" // the spool was full: its oldest batch went
	dropQueueFull  = "queue_full"  // the spooler fell behind (disk stalled or failing): the newest record went
	dropFormat     = "format"      // a spooled batch of another destination kind
	dropUnreadable = "unreadable"  // a spooled batch could not be read back
	dropSpoolError = "spool_error" // stopped while the spool could not be written
)

// job is one running Logpush job: Push queues encoded records, a spooler
// writes them ahead to disk (wal.go) and turns finished batches into
// spool files, and a sender delivers spooled batches in order and deletes
// them once accepted (or acked).
type job struct {
	cfg      Job
	spec     *destSpec
	redacted string
	token    string
	enc      *encoder
	filter   *compiledFilter
	dest     destination
	opts     *Options
	log      *slog.Logger
	dir      string

	mu       sync.Mutex // guards the queue and the open batch's counts
	q        []qchunk   // encoded records waiting for the spooler, oldest first
	qBytes   int        // bytes in q
	qSpare   []qchunk   // the other queue slice, reused
	woken    bool       // the spooler was woken for a full queue since it took q
	dropping bool       // records are being dropped: the queue is full
	curN     int        // records in the open batch (queued or written ahead)
	curBytes int64      // their uncompressed bytes
	first    time.Time  // when the open batch got its first record
	free     [][]byte   // chunk buffers for reuse
	wake     chan struct{}

	// stall, when set by a test before start, runs in the spooler before
	// it takes the queue: a disk that does not answer.
	stall func()

	sp     *spool // set by start (under mu)
	cancel context.CancelFunc
	done   chan struct{}

	st stats
}

// qchunk is a run of encoded records of one batch; end marks the batch's
// last chunk (it may be empty when the batch's records were already
// written ahead and only its cut remains).
type qchunk struct {
	data []byte
	n    int
	end  bool
}

// Queue sizes. The spooler takes the queue at least every SyncInterval,
// and at once when it passes queueWakeBytes, so the queue stays small; its
// limit is there for a disk that stalls.
const (
	queueWakeBytes = 1 << 20
	chunkBytes     = 256 << 10 // a queue chunk's size, about
	// walMemLimit bounds the compressed bytes the spooler holds for a
	// spool it cannot write; past it, it stops taking the queue, and
	// producers' records are dropped (counted) once the queue is full.
	walMemLimit = 16 << 20
)

// stats are the counters behind JobStatus and the metrics.
type stats struct {
	recordsSent, bytesSent, batchesSent atomic.Uint64
	sampled, filtered                   atomic.Uint64
	queueFull                           atomic.Uint64 // records dropped by Push
	recovered                           atomic.Uint64 // records recovered from write-ahead segments

	mu             sync.Mutex
	state          string
	lastComplete   time.Time
	lastError      time.Time
	errMsg         string
	retries        map[string]uint64
	droppedRecords map[string]uint64
	droppedBatches map[string]uint64
}

// compiledJob is one job's configuration checked and compiled: its
// destination parsed, its token and CA files read, its filter compiled.
// It is immutable; jobs are made from it (newJob) as often as needed.
type compiledJob struct {
	cfg    Job
	spec   *destSpec
	token  string
	roots  *x509.CertPool    // from ca_file; nil: the system's
	certs  []tls.Certificate // from cert_file and key_file
	filter *compiledFilter
}

// compileJob checks and compiles cfg, reading the files it names. It
// starts and opens nothing.
func compileJob(cfg Job) (*compiledJob, error) {
	cfg = *cfg.Clone()
	cfg.SetDefaults()
	var problems []string
	cfg.Validate(func(field, msg string) { problems = append(problems, field+": "+msg) })
	if len(problems) > 0 {
		return nil, fmt.Errorf("logpush job %q: %s", cfg.Name, strings.Join(problems, "; "))
	}
	spec, _ := parseDestination(cfg.Destination)
	c := &compiledJob{cfg: cfg, spec: spec}
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("logpush job %q: token_file: %w", cfg.Name, err)
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" {
			return nil, fmt.Errorf("logpush job %q: token_file %s is empty", cfg.Name, cfg.TokenFile)
		}
	}
	if cfg.Filter != "" {
		f, err := compileFilter(cfg.Dataset, cfg.Filter)
		if err != nil {
			return nil, fmt.Errorf("logpush job %q: filter: %w", cfg.Name, err)
		}
		c.filter = f
	}
	if spec.scheme != "file" {
		roots, err := readCAFile(&cfg)
		if err != nil {
			return nil, fmt.Errorf("logpush job %q: %w", cfg.Name, err)
		}
		c.roots = roots
		if c.certs, err = readClientCert(&cfg); err != nil {
			return nil, fmt.Errorf("logpush job %q: %w", cfg.Name, err)
		}
	}
	if spec.scheme == "s3" {
		if _, err := newS3Dest(spec.s3, c.token, c.roots, c.certs, time.Minute); err != nil {
			return nil, fmt.Errorf("logpush job %q: %w", cfg.Name, err)
		}
	}
	return c, nil
}

// newJob makes a job, not started, from a compiled one. It cannot fail.
func newJob(c *compiledJob, opts *Options) *job {
	cfg, spec := c.cfg, c.spec
	j := &job{cfg: cfg, spec: spec, redacted: spec.redacted(cfg.Destination), opts: opts,
		log: opts.Logger.With("job", cfg.Name), dir: filepath.Join(opts.StateDir, "logpush", cfg.Name),
		wake: make(chan struct{}, 1), token: c.token, filter: c.filter}
	j.st.state = "idle"
	j.st.retries, j.st.droppedRecords, j.st.droppedBatches = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	switch spec.scheme {
	case "file":
		j.dest = &fileDest{spec: spec}
	case "syslog":
		j.dest = newSyslogDest(spec.sys, c.roots, c.certs, opts.Host, syslogMsgID(cfg.Dataset), opts.RequestTimeout)
	case "s3":
		// compileJob made one already: the same inputs cannot fail here.
		j.dest, _ = newS3Dest(spec.s3, c.token, c.roots, c.certs, opts.RequestTimeout)
	default:
		j.dest = newHTTPDest(spec, &cfg, j.token, c.roots, c.certs, opts.RequestTimeout)
	}
	var meta *hecMeta
	if j.dest.format() == formatHEC {
		meta = &hecMeta{host: spec.host, source: spec.source, sourcetype: spec.sourcetype, index: spec.index}
		if meta.host == "" {
			meta.host = opts.Host
		}
	}
	j.enc = newEncoder(cfg.Fields, cfg.TimestampFormat, meta)
	if !*cfg.Enabled {
		j.st.state = "disabled"
	}
	return j
}

// push queues a record for the open batch. It never blocks on I/O or on
// the spooler: it takes the job's mutex only to encode the record into the
// queue, and when the queue is full (the spooler cannot write the disk
// fast enough) the record is dropped and counted.
func (j *job) push(r Record) {
	if j.cfg.SampleRate < 1 && rand.Float64() >= j.cfg.SampleRate {
		j.st.sampled.Add(1)
		return
	}
	if j.filter != nil && !j.filter.match(r) {
		j.st.filtered.Add(1)
		return
	}
	j.mu.Lock()
	if j.qBytes >= j.opts.QueueBytes {
		first := !j.dropping
		j.dropping = true
		j.mu.Unlock()
		j.st.queueFull.Add(1)
		if first {
			j.log.Error("the spool cannot be written fast enough: dropping new records until it catches up", "queue_bytes", j.opts.QueueBytes)
		}
		return
	}
	if j.curN == 0 {
		j.first = time.Now()
	}
	c := j.chunkLocked()
	before := len(c.data)
	c.data = j.enc.appendRecord(c.data, r)
	c.n++
	added := len(c.data) - before
	j.qBytes += added
	j.curBytes += int64(added)
	j.curN++
	wake := false
	if j.curN >= j.cfg.MaxUploadRecords || j.curBytes >= j.cfg.MaxUploadBytes {
		c.end = true
		j.curN, j.curBytes = 0, 0
		wake = true
	} else if j.qBytes >= queueWakeBytes && !j.woken {
		j.woken, wake = true, true
	}
	j.mu.Unlock()
	if wake {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

// chunkLocked returns the queue chunk that takes the open batch's next
// record. Chunks are bounded (chunkBytes) and their buffers reused, so a
// busy queue does not copy itself growing.
func (j *job) chunkLocked() *qchunk {
	if n := len(j.q); n > 0 && !j.q[n-1].end && len(j.q[n-1].data) < chunkBytes {
		return &j.q[n-1]
	}
	var buf []byte
	if n := len(j.free); n > 0 {
		buf, j.free = j.free[n-1][:0], j.free[:n-1]
	} else {
		buf = make([]byte, 0, chunkBytes+64<<10)
	}
	j.q = append(j.q, qchunk{data: buf})
	return &j.q[len(j.q)-1]
}

// endBatchLocked cuts the open batch (max_upload_interval, or a stop).
func (j *job) endBatchLocked() {
	if j.curN == 0 {
		return
	}
	if n := len(j.q); n > 0 && !j.q[n-1].end {
		j.q[n-1].end = true
	} else {
		j.q = append(j.q, qchunk{end: true})
	}
	j.curN, j.curBytes = 0, 0
}

func (j *job) drop(reason string, batches, records int) {
	j.st.mu.Lock()
	j.st.droppedBatches[reason] += uint64(batches)
	j.st.droppedRecords[reason] += uint64(records)
	j.st.mu.Unlock()
}

// start opens the spool, sizes it, spools what a crash left written
// ahead, and starts the spooler and sender. jobs is the number of running
// jobs that share the spool filesystem.
func (j *job) start(ctx context.Context, jobs int) error {
	sp, err := openSpool(j.dir, 0)
	if err != nil {
		j.setError(err, false)
		return fmt.Errorf("logpush job %q: %w", j.cfg.Name, err)
	}
	j.mu.Lock()
	j.sp = sp // written under mu for status; the goroutines see it through go
	j.mu.Unlock()
	if err := j.applyBudget(sp, jobs); err != nil {
		j.setError(err, false)
		return fmt.Errorf("logpush job %q: %w", j.cfg.Name, err)
	}
	// A segment holds at most one batch, of the max_upload_bytes in force
	// when it was written: bound it by the largest that may be configured.
	rec, dropped, err := recoverSegments(j.dir, sp, 1<<30+64<<10)
	j.spoolDropped(dropped)
	if err != nil {
		// The segments stay on disk for the next start; the job runs.
		j.setError(err, false)
		j.log.Error("cannot recover every write-ahead segment", "err", err)
	}
	if rec.segments > 0 {
		j.st.recovered.Add(uint64(rec.records))
		j.log.Warn("recovered unfinished batches written ahead before a crash", "segments", rec.segments, "records", rec.records)
	}
	ctx, j.cancel = context.WithCancel(ctx)
	j.done = make(chan struct{})
	j.setState("running")
	w := newWAL(j.dir, j.dest.format(), rec.nextID)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); j.runSpooler(ctx, w) }()
	go func() { defer wg.Done(); j.runSender(ctx) }()
	go func() { wg.Wait(); close(j.done) }()
	return nil
}

// applyBudget sizes sp from the free space of its filesystem, shared by
// jobs, and says so when the limit changes or a configured one is capped.
func (j *job) applyBudget(sp *spool, jobs int) error {
	fs, err := sp.space(sp.dir)
	if err != nil {
		return err
	}
	b := budgetFor(fs, int64(j.cfg.SpoolLimit), jobs)
	if old, oldReserve := sp.budget(); old == b.limit && oldReserve == b.reserve {
		return nil
	}
	sp.setBudget(b.limit, b.reserve)
	switch {
	case b.capped:
		j.log.Warn("spool_limit is more than the spool filesystem can hold for this job: capped", "spool_limit", int64(j.cfg.SpoolLimit),
			"limit", b.limit, "filesystem_bytes", fs.size, "jobs", jobs, "reserve_bytes", b.reserve)
	case b.auto:
		j.log.Info("spool limit from the spool filesystem's size", "limit", b.limit, "filesystem_bytes", fs.size, "jobs", jobs, "reserve_bytes", b.reserve)
	}
	return nil
}

// stop stops the goroutines (the open batch is spooled first) and waits.
func (j *job) stop() {
	if j.cancel != nil {
		j.cancel()
		<-j.done
		j.cancel = nil
		j.setState("stopped")
	}
	j.dest.close()
}

// runSpooler writes the queued records ahead and spools finished batches.
// It takes the queue when woken (a cut batch, a queue past
// queueWakeBytes) and on every tick; each tick also flushes and fsyncs the
// open segment, so a record is on disk within about SyncInterval of Push.
func (j *job) runSpooler(ctx context.Context, w *wal) {
	// A quarter of max_upload_interval keeps batches cut close to it.
	tick := time.NewTicker(min(j.opts.SyncInterval, max(j.cfg.MaxUploadInterval/4, 10*time.Millisecond)))
	defer tick.Stop()
	failing := false
	for {
		stopping, sync := false, false
		select {
		case <-ctx.Done():
			stopping, sync = true, true
		case <-j.wake:
		case <-tick.C:
			sync = true
		}
		if j.stall != nil {
			j.stall()
		}
		j.mu.Lock()
		if stopping || j.curN > 0 && time.Since(j.first) >= j.cfg.MaxUploadInterval {
			j.endBatchLocked()
		}
		var q []qchunk
		dropped := false
		// A spool that cannot be written keeps its batches in memory (they
		// are compressed, so small) up to walMemLimit; past that the queue
		// is left to fill, and Push drops.
		if stopping || w.buffered() < walMemLimit {
			q, j.q, j.qSpare = j.q, j.qSpare[:0], nil
			j.qBytes, j.woken = 0, false
			dropped, j.dropping = j.dropping, false
		}
		j.mu.Unlock()
		if dropped {
			j.log.Warn("the spool caught up: records are queued again", "dropped_total", j.st.queueFull.Load())
		}
		for _, c := range q {
			w.write(c.data, c.n)
			if c.end {
				w.end()
			}
		}
		j.mu.Lock()
		for i := range q {
			if c := cap(q[i].data); c >= chunkBytes && c <= 2*chunkBytes && len(j.free)*chunkBytes < j.opts.QueueBytes {
				j.free = append(j.free, q[i].data[:0])
			}
			q[i] = qchunk{}
		}
		j.qSpare = q[:0]
		j.mu.Unlock()

		err := w.flush(sync, j.commitSegment)
		switch {
		case err != nil && !failing:
			failing = true
			j.setError(err, false)
			j.log.Error("cannot write the spool; keeping records in memory and retrying", "err", err)
		case err == nil && failing:
			failing = false
			j.log.Info("the spool is written again")
		}
		if stopping {
			if err != nil {
				lost := w.unwritten()
				j.drop(dropSpoolError, 0, lost)
				j.log.Error("stopping with records not written to the spool: they are lost", "records", lost, "err", err)
			}
			w.close() // written segments are recovered at the next start
			return
		}
	}
}

// commitSegment spools a finished segment's batch.
func (j *job) commitSegment(s *segment) error {
	dropped, err := j.sp.add(s.stream.Bytes(), s.n, j.dest.format())
	j.spoolDropped(dropped)
	if err != nil && !errors.Is(err, errDirSync) {
		return err
	}
	if err != nil {
		j.log.Warn("spooled a batch, but could not sync the spool directory", "err", err)
	}
	return nil
}

// spoolDropped counts and logs the batches the spool deleted to stay
// within its limit and reserve.
func (j *job) spoolDropped(dropped []spoolEntry) {
	for _, d := range dropped {
		j.drop(dropSpoolLimit, 1, d.records)
		limit, reserve := j.sp.budget()
		j.log.Warn("spool full: dropped its oldest batch", "records", d.records, "bytes", d.size, "limit", limit, "reserve_bytes", reserve)
	}
}

type awaitingAck struct {
	e    spoolEntry
	id   int64
	sent time.Time
}

// maxPendingAcks bounds the batches sent but not yet acknowledged.
const maxPendingAcks = 64

func (j *job) runSender(ctx context.Context) {
	defer j.sp.releaseAll()
	var after uint64 // the last spooled batch taken, in sequence order
	var acks []awaitingAck
	var resend []spoolEntry
	var lastPoll time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		if len(acks) > 0 && (len(acks) >= maxPendingAcks || time.Since(lastPoll) >= j.opts.AckInterval) {
			lastPoll = time.Now()
			var o outcome
			acks, resend, o = j.pollAcks(ctx, acks, resend)
			if o.permanent {
				j.fail(ctx, o)
				return
			}
		}
		var e spoolEntry
		ok := false
		switch {
		case len(resend) > 0:
			e, resend, ok = resend[0], resend[1:], true
		case len(acks) < maxPendingAcks:
			if e, ok = j.sp.nextAfter(after); ok {
				after = e.seq
			}
		}
		if !ok {
			wait := time.Hour
			if len(acks) > 0 {
				wait = max(j.opts.AckInterval-time.Since(lastPoll), time.Millisecond)
			}
			timer.Reset(wait)
			select {
			case <-ctx.Done():
			case <-j.sp.notify:
			case <-timer.C:
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			continue
		}
		data, err := j.sp.read(e)
		if err != nil || e.format != j.dest.format() {
			reason := dropUnreadable
			if err == nil {
				reason = dropFormat
				err = fmt.Errorf("batch of format %s cannot go to this destination (%s)", e.format, j.dest.format())
			}
			j.log.Error("dropping a spooled batch", "batch", e.name(), "err", err)
			j.drop(reason, 1, e.records)
			j.sp.remove(e.seq)
			continue
		}
		o := j.deliver(ctx, e, data)
		switch {
		case ctx.Err() != nil:
			return
		case o.permanent:
			j.fail(ctx, o)
			return
		case o.ackID >= 0:
			acks = append(acks, awaitingAck{e: e, id: o.ackID, sent: time.Now()})
			if len(acks) == 1 {
				lastPoll = time.Now() // first poll one interval after the send
			}
		default:
			j.complete(e)
		}
	}
}

// deliver sends one batch, retrying transient failures with capped,
// jittered exponential backoff, until it is accepted, fails permanently or
// ctx ends.
func (j *job) deliver(ctx context.Context, e spoolEntry, data []byte) outcome {
	for attempt := 0; ; attempt++ {
		o := j.dest.send(ctx, data, e)
		if o.err == nil || ctx.Err() != nil || o.permanent {
			return o
		}
		j.retried(o)
		wait := max(j.backoff(attempt), o.retryAfter)
		j.log.Warn("batch not delivered; will retry", "batch", e.name(), "err", o.err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return o
		case <-t.C:
		}
	}
}

func (j *job) backoff(attempt int) time.Duration {
	d := j.opts.MaxBackoff
	if attempt < 30 {
		d = min(j.opts.MinBackoff<<attempt, j.opts.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// pollAcks asks HEC about the batches awaiting acks, completes the acked
// ones and queues for resending those waiting longer than AckTimeout.
func (j *job) pollAcks(ctx context.Context, acks []awaitingAck, resend []spoolEntry) ([]awaitingAck, []spoolEntry, outcome) {
	ids := make([]int64, len(acks))
	for i, a := range acks {
		ids[i] = a.id
	}
	done, o := j.dest.pollAcks(ctx, ids)
	if o.err != nil {
		if ctx.Err() == nil && !o.permanent {
			j.retried(o)
		}
		done = nil // judge timeouts only
	}
	keep := acks[:0]
	for _, a := range acks {
		switch {
		case done[a.id]:
			j.complete(a.e)
		case time.Since(a.sent) >= j.opts.AckTimeout:
			j.log.Warn("no indexer ack in time; sending the batch again", "batch", a.e.name(), "ack_id", a.id)
			resend = append(resend, a.e)
		default:
			keep = append(keep, a)
		}
	}
	return keep, resend, o
}

// complete deletes a delivered batch and records the success.
func (j *job) complete(e spoolEntry) {
	if err := j.sp.remove(e.seq); err != nil {
		j.log.Error("cannot delete a delivered batch; it may be sent again", "batch", e.name(), "err", err)
	}
	j.st.recordsSent.Add(uint64(e.records))
	j.st.bytesSent.Add(uint64(e.size))
	j.st.batchesSent.Add(1)
	j.st.mu.Lock()
	j.st.lastComplete = time.Now()
	j.st.lastError, j.st.errMsg = time.Time{}, ""
	j.st.mu.Unlock()
}

func (j *job) retried(o outcome) {
	j.st.mu.Lock()
	j.st.retries[o.code]++
	j.st.mu.Unlock()
	j.setError(o.err, false)
}

// fail stops delivery after a permanent error; records are still spooled
// (up to spool_limit) so that a corrected configuration can send them.
func (j *job) fail(ctx context.Context, o outcome) {
	j.setError(o.err, true)
	j.log.Error("permanent delivery error: job stopped until the configuration changes or edgegw restarts", "err", o.err)
	j.sp.releaseAll()
	<-ctx.Done()
}

func (j *job) setError(err error, permanent bool) {
	j.st.mu.Lock()
	defer j.st.mu.Unlock()
	j.st.lastError = time.Now()
	j.st.errMsg = err.Error()
	if permanent {
		j.st.state = "failed"
	}
}

func (j *job) setState(s string) {
	j.st.mu.Lock()
	if s != "stopped" || j.st.state != "failed" {
		j.st.state = s
	}
	j.st.mu.Unlock()
}
