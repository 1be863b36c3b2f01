package gateway

import (
	"context"
	"log/slog"
	"reflect"
	"sync/atomic"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/gateway/config"
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

func (p *logpushPart) apply(ctx context.Context, prev, next *config.Config) error {
	if len(next.Logpush) == 0 {
		p.close()
		return nil
	}
	if p.mgr != nil {
		if prev != nil && reflect.DeepEqual(prev.Logpush, next.Logpush) && config.SameFiles(prev, next, "logpush") {
			return nil
		}
		return p.mgr.Set(next.Logpush) // unchanged jobs keep running
	}
	mgr, err := logpush.New(next.Logpush, logpush.Options{
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

// AccessRecord implements access.RecordSink with Cloudflare's
// access_requests field names.
func (s *recordSink) AccessRecord(r access.Record) {
	m := s.mgr.Load()
	if m == nil {
		return
	}
	ip := ""
	if r.IPAddress.IsValid() {
		ip = r.IPAddress.String()
	}
	m.Push("access_requests", logpush.Record{
		{Name: "Action", Value: logpush.String(r.Action)},
		{Name: "Allowed", Value: logpush.Bool(r.Allowed)},
		{Name: "AppDomain", Value: logpush.String(r.AppDomain)},
		{Name: "Connection", Value: logpush.String(r.Connection)},
		{Name: "Country", Value: logpush.String(r.Country)},
		{Name: "CreatedAt", Value: logpush.Time(r.CreatedAt)},
		{Name: "Email", Value: logpush.String(r.Email)},
		{Name: "IPAddress", Value: logpush.String(ip)},
		{Name: "RayID", Value: logpush.String(r.RayID)},
		{Name: "UserUID", Value: logpush.String(r.UserUID)},
	})
}
