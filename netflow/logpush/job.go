package logpush

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Drop reasons, the reason label of the dropped metrics.
const (
	dropSpoolLimit = "spool_limit" // the spool was full: its oldest batch went
	dropOverflow   = "overflow"    // batches waited in memory for a failing spool
	dropFormat     = "format"      // a spooled batch of another destination kind
	dropUnreadable = "unreadable"  // a spooled batch could not be read back
	dropSpoolError = "spool_error" // stopped while the spool could not be written
)

// job is one running Logpush job: a batcher fed by Push, a spooler that
// compresses batches and writes them to disk, and a sender that delivers
// spooled batches in order and deletes them once accepted (or acked).
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
	memLimit int

	mu          sync.Mutex // guards the batcher
	space       *sync.Cond // on mu: the spooler took a batch
	running     bool       // the spooler runs
	overflowing bool       // the backlog hit memLimit and waiting did not help
	cur         []byte
	curN        int
	first       time.Time // when the current batch got its first record
	pending     []memBatch
	pendN       int // bytes in pending
	nextID      uint64
	lastLen     int // bytes of the last batch cut
	free        [][]byte
	wake        chan struct{}

	sp     *spool // set by start (under mu)
	cancel context.CancelFunc
	done   chan struct{}

	st stats
}

type memBatch struct {
	data []byte
	n    int
	id   uint64
}

// stats are the counters behind JobStatus and the metrics.
type stats struct {
	recordsSent, bytesSent, batchesSent atomic.Uint64
	sampled, filtered                   atomic.Uint64

	mu             sync.Mutex
	state          string
	lastComplete   time.Time
	lastError      time.Time
	errMsg         string
	retries        map[string]uint64
	droppedRecords map[string]uint64
	droppedBatches map[string]uint64
}

func newJob(cfg Job, opts *Options) (*job, error) {
	cfg = *cfg.Clone()
	cfg.SetDefaults()
	var problems []string
	cfg.Validate(func(field, msg string) { problems = append(problems, field+": "+msg) })
	if len(problems) > 0 {
		return nil, fmt.Errorf("logpush job %q: %s", cfg.Name, strings.Join(problems, "; "))
	}
	spec, _ := parseDestination(cfg.Destination)
	j := &job{cfg: cfg, spec: spec, redacted: spec.redacted(cfg.Destination), opts: opts,
		log: opts.Logger.With("job", cfg.Name), dir: filepath.Join(opts.StateDir, "logpush", cfg.Name),
		memLimit: max(64<<20, 2*int(cfg.MaxUploadBytes)), wake: make(chan struct{}, 1)}
	j.space = sync.NewCond(&j.mu)
	j.st.state = "idle"
	j.st.retries, j.st.droppedRecords, j.st.droppedBatches = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("logpush job %q: token_file: %w", cfg.Name, err)
		}
		j.token = strings.TrimSpace(string(b))
		if j.token == "" {
			return nil, fmt.Errorf("logpush job %q: token_file %s is empty", cfg.Name, cfg.TokenFile)
		}
	}
	if cfg.Filter != "" {
		f, err := compileFilter(cfg.Dataset, cfg.Filter)
		if err != nil {
			return nil, fmt.Errorf("logpush job %q: filter: %w", cfg.Name, err)
		}
		j.filter = f
	}
	switch spec.scheme {
	case "file":
		j.dest = &fileDest{spec: spec}
	default:
		d, err := newHTTPDest(spec, &cfg, j.token, opts.RequestTimeout)
		if err != nil {
			return nil, fmt.Errorf("logpush job %q: %w", cfg.Name, err)
		}
		j.dest = d
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
	return j, nil
}

// push adds a record to the current batch; it never blocks on I/O.
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
	if j.curN == 0 {
		j.first = time.Now()
	}
	j.cur = j.enc.appendRecord(j.cur, r)
	j.curN++
	if j.curN >= j.cfg.MaxUploadRecords || int64(len(j.cur)) >= j.cfg.MaxUploadBytes {
		j.cutLocked()
		if j.pendN > j.memLimit {
			j.backpressureLocked()
		}
	}
	j.mu.Unlock()
}

// backpressureLocked runs when finished batches waiting for the spooler
// exceed memLimit. A burst faster than gzip and the disk makes the producer
// wait for the spooler; if it makes no room within a second (the spool
// cannot be written), the job stops waiting and drops the oldest waiting
// batches instead, counted as overflow, until the backlog has drained.
func (j *job) backpressureLocked() {
	if j.running && !j.overflowing {
		timeout := false
		t := time.AfterFunc(time.Second, func() {
			j.mu.Lock()
			timeout = true
			j.space.Broadcast()
			j.mu.Unlock()
		})
		for j.pendN > j.memLimit && j.running && !timeout {
			j.space.Wait()
		}
		t.Stop()
		if j.pendN <= j.memLimit {
			return
		}
		j.overflowing = true
		j.log.Error("batches pile up in memory: the spool cannot be written fast enough; dropping the oldest", "bytes", j.pendN)
	}
	// pending[0] may be being spooled right now: drop the next oldest.
	for j.pendN > j.memLimit && len(j.pending) > 2 {
		old := j.pending[1]
		j.pending = append(j.pending[:1], j.pending[2:]...)
		j.pendN -= len(old.data)
		j.drop(dropOverflow, 1, old.n)
	}
}

// cutLocked ends the current batch and hands it to the spooler.
func (j *job) cutLocked() {
	if j.curN == 0 {
		return
	}
	j.nextID++
	j.pending = append(j.pending, memBatch{j.cur, j.curN, j.nextID})
	j.pendN += len(j.cur)
	j.lastLen = len(j.cur)
	j.cur, j.curN = nil, 0
	if n := len(j.free); n > 0 {
		j.cur, j.free = j.free[n-1][:0], j.free[:n-1]
	} else {
		// Size a new buffer for a batch like the last one: growing a
		// multi-megabyte batch by appending copies it several times over.
		j.cur = make([]byte, 0, min(j.lastLen+j.lastLen/8+4096, int(j.cfg.MaxUploadBytes)+64<<10))
	}
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *job) drop(reason string, batches, records int) {
	j.st.mu.Lock()
	j.st.droppedBatches[reason] += uint64(batches)
	j.st.droppedRecords[reason] += uint64(records)
	j.st.mu.Unlock()
}

// start opens the spool and starts the spooler and sender.
func (j *job) start(ctx context.Context) error {
	sp, err := openSpool(j.dir, int64(j.cfg.SpoolLimit))
	if err != nil {
		j.setError(err, false)
		return fmt.Errorf("logpush job %q: %w", j.cfg.Name, err)
	}
	ctx, j.cancel = context.WithCancel(ctx)
	j.done = make(chan struct{})
	j.setState("running")
	j.mu.Lock()
	j.sp = sp // written under mu for status; the goroutines see it through go
	j.running = true
	j.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); j.runSpooler(ctx) }()
	go func() { defer wg.Done(); j.runSender(ctx) }()
	go func() { wg.Wait(); close(j.done) }()
	return nil
}

// stop stops the goroutines (the current batch is spooled first) and waits.
func (j *job) stop() {
	if j.cancel != nil {
		j.cancel()
		<-j.done
		j.cancel = nil
		j.setState("stopped")
	}
	j.dest.close()
}

func (j *job) runSpooler(ctx context.Context) {
	tick := time.NewTicker(min(max(j.cfg.MaxUploadInterval/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	var out bytes.Buffer
	for {
		stopping := false
		select {
		case <-ctx.Done():
			stopping = true
		case <-j.wake:
		case <-tick.C:
		}
		j.mu.Lock()
		if stopping || j.curN > 0 && time.Since(j.first) >= j.cfg.MaxUploadInterval {
			j.cutLocked()
		}
		j.mu.Unlock()
		for {
			j.mu.Lock()
			if len(j.pending) == 0 {
				j.mu.Unlock()
				break
			}
			b := j.pending[0]
			j.mu.Unlock()
			out.Reset()
			gz.Reset(&out)
			gz.Write(b.data)
			gz.Close()
			dropped, err := j.sp.add(out.Bytes(), b.n, j.dest.format())
			if err != nil {
				j.setError(err, false)
				j.log.Error("cannot spool a batch; keeping it in memory", "err", err)
				if stopping {
					j.mu.Lock()
					j.running = false
					j.space.Broadcast()
					lost := j.pending
					j.pending, j.pendN = nil, 0
					j.mu.Unlock()
					for _, b := range lost {
						j.drop(dropSpoolError, 1, b.n)
					}
					j.log.Error("stopping with unspooled batches in memory: they are lost", "batches", len(lost))
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				break
			}
			for _, d := range dropped {
				j.drop(dropSpoolLimit, 1, d.records)
				j.log.Warn("spool full: dropped its oldest batch", "records", d.records, "bytes", d.size, "spool_limit", j.cfg.SpoolLimit)
			}
			j.mu.Lock()
			// The batch may have been dropped for overflow meanwhile: only
			// dequeue it if it is still first.
			if len(j.pending) > 0 && j.pending[0].id == b.id {
				j.pending = j.pending[1:]
				j.pendN -= len(b.data)
			}
			if j.pendN <= j.memLimit/2 {
				j.overflowing = false
			}
			j.space.Broadcast()
			if len(j.free) < 4 && cap(b.data) <= 2*int(j.cfg.MaxUploadBytes)+64<<10 {
				j.free = append(j.free, b.data[:0])
			}
			j.mu.Unlock()
		}
		if stopping {
			j.mu.Lock()
			j.running = false
			j.space.Broadcast()
			j.mu.Unlock()
			return
		}
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
		o := j.dest.send(ctx, data, e.records)
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
