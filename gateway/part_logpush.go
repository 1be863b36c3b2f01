package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// logpushPart runs the Logpush jobs. It owns the manager's goroutine, and
// publishes the running manager to the sink that producers (Access now,
// flows and DNS as they land) hold, so producers never see a stopped one.
type logpushPart struct {
	log     *slog.Logger
	metrics *metrics
	sink    *recordSink

	mgr *logpush.Manager
	run actor
}

func (p *logpushPart) name() string { return "logpush" }

func (p *logpushPart) commit(ctx context.Context, _, np *Plan) error {
	next := np.Config
	if np.logpush == nil {
		p.close()
		return nil
	}
	if p.mgr != nil {
		// Unchanged jobs (same section, same token) keep running.
		p.mgr.Commit(np.logpush)
		return nil
	}
	mgr, err := logpush.NewPlan(np.logpush, logpush.Options{
		Logger:   p.log,
		StateDir: next.Appliance.StateDir,
		Host:     next.Appliance.Name,
	})
	if err != nil {
		return err
	}
	p.mgr = mgr
	p.run.start(ctx, mgr.Run)
	p.metrics.set("logpush", mgr.Collector())
	p.sink.mgr.Store(mgr)
	return nil
}

func (p *logpushPart) close() {
	if p.mgr == nil {
		return
	}
	p.sink.mgr.Store(nil)
	p.metrics.set("logpush", nil)
	// Run spools what is still in memory before it returns: nothing
	// accepted from a producer is lost at shutdown.
	if err := p.run.stop(); err != nil {
		p.log.Error("logpush stopped", "err", err)
	}
	p.mgr = nil
}

func (p *logpushPart) ready() error { return nil }

func (p *logpushPart) status(s *Status) {
	if p.mgr != nil {
		s.Logpush = p.mgr.Status()
	}
}

// recordSink hands records from producers (the DNS loop, Access handlers,
// the flow sampler) to Logpush when it runs, and drops them (there is no
// job to take them) when it does not. Handing over never blocks the
// producer: Manager.Push only encodes the record into each job's bounded
// queue, and a record that does not fit (the disk stalls) is dropped and
// counted in edgegw_logpush_dropped_records_total{reason="queue_full"}.
type recordSink struct {
	mgr atomic.Pointer[logpush.Manager]
	// analytics takes flow records for the flow store and alerts
	// (part_analytics.go), with or without Logpush.
	analytics analyticsTap
}

// Push implements logpush.Sink for producers that build their own records
// (Gateway DNS).
func (s *recordSink) Push(dataset string, r logpush.Record) {
	s.analytics.push(dataset, r)
	if m := s.mgr.Load(); m != nil {
		m.Push(dataset, r)
	}
}
