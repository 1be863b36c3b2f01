package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/alert"
	"github.com/edgegw/edgegw/netflow/export"
	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/netflow/store"
)

// analyticsPart keeps the gateway's flow records (its own NFLOG samples
// and flows ingested from other routers) in the embedded store behind
// /api/v1/flows (netflow.analytics), and evaluates volumetric alert rules
// on them (netflow.alerts), and sends the gateway's own flows to IPFIX
// collectors (netflow.export). It owns the alert engine's and the
// exporter's Run goroutines.
// The record sink hands it records through tap whether or not Logpush
// runs.
type analyticsPart struct {
	log     *slog.Logger
	metrics *metrics
	tap     *analyticsTap
	// sink takes the alert events as flow_alerts records (for Logpush).
	sink *recordSink
	// coloName is the appliance's name in flow_alerts records, from the
	// latest plan (read by the engine's goroutine).
	coloName atomic.Pointer[string]

	store  *store.Store
	alerts *alert.Engine
	run    actor

	// exp sends the gateway's own flows to IPFIX collectors
	// (netflow.export); expRun owns its goroutine, expTo is what it sends to.
	exp    *export.Exporter
	expRun actor
	expTo  []export.Collector
}

// analyticsTap is where the record sink hands network_analytics_logs
// records, and what the admin server serves under /api/v1/flows. Its
// pointers are swapped by the analytics part; a nil one takes nothing.
type analyticsTap struct {
	store  atomic.Pointer[store.Store]
	alerts atomic.Pointer[alert.Engine]
	export atomic.Pointer[export.Exporter]
	api    atomic.Pointer[http.Handler]
}

// ServeHTTP serves /api/v1/flows and below for the admin server.
func (t *analyticsTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := t.api.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "No flow analytics run: configure netflow.analytics or netflow.alerts.", http.StatusNotFound)
}

// push reads a flow record once for the store and the alerts. It takes
// a short lock in each and never blocks on I/O.
func (t *analyticsTap) push(dataset string, r logpush.Record) {
	if dataset != netflow.Dataset {
		return
	}
	if e := t.export.Load(); e != nil {
		e.Push(dataset, r) // queued; never blocks
	}
	s, a := t.store.Load(), t.alerts.Load()
	if s == nil && a == nil {
		return
	}
	f, ok := store.FromRecord(r)
	if !ok {
		if s != nil {
			s.Push(dataset, r) // counted as invalid
		}
		return
	}
	if s != nil {
		s.Add(f)
	}
	if a != nil {
		a.Observe(f)
	}
}

func (p *analyticsPart) name() string { return "netflow.analytics" }

// alertsPlan is netflow.alerts compiled: the rules and the notifiers,
// their secrets read.
type alertsPlan struct {
	rules []alert.Rule
	hooks []alert.Webhook
	pds   []alert.PagerDuty
	mails []alert.Email
}

// prepareAlerts reads the notifiers' secrets (Prepare).
func prepareAlerts(c *alert.Config, appliance string) (*alertsPlan, error) {
	hooks, err := c.LoadWebhooks()
	if err != nil {
		return nil, err
	}
	pds, err := c.LoadPagerDuty(appliance)
	if err != nil {
		return nil, err
	}
	mails, err := c.LoadEmail()
	if err != nil {
		return nil, err
	}
	return &alertsPlan{rules: c.AllRules(), hooks: hooks, pds: pds, mails: mails}, nil
}

func (p *analyticsPart) commit(ctx context.Context, _, np *Plan) error {
	var sc *store.Config
	if next := np.Config; next.Netflow != nil {
		sc = next.Netflow.Analytics
	}
	var to []export.Collector
	if next := np.Config; next.Netflow != nil {
		to = next.Netflow.ExportCollectors()
	}
	name := np.Config.Appliance.Name
	p.coloName.Store(&name)
	if err := p.applyAlerts(ctx, np.alerts); err != nil {
		return err
	}
	if err := p.applyExport(ctx, to); err != nil {
		return err
	}
	p.applyStore(sc)
	if h := p.handler(); h != nil {
		p.tap.api.Store(&h)
	} else {
		p.tap.api.Store(nil)
	}
	return nil
}

// applyStore starts the store, or stops it (its rollups go). A store
// whose retention or size changes is rebuilt empty: rollups are a cache of
// what Logpush keeps.
func (p *analyticsPart) applyStore(c *store.Config) {
	if c == nil {
		p.tap.store.Store(nil)
		p.store = nil
		p.metrics.set("flow_store", nil)
		return
	}
	if p.store != nil && p.store.Options().Retention == c.Retention && p.store.Options().MaxBytes == c.MaxBytes {
		return
	}
	s, err := store.New(c.Options())
	if err != nil { // validated with the configuration
		p.log.Error("flow store", "err", err)
		return
	}
	p.store = s
	p.tap.store.Store(s)
	p.metrics.set("flow_store", s.Collector())
}

// applyAlerts starts the engine, changes its rules, webhooks, PagerDuty
// services and mail servers (open alerts of unchanged rules stay open), or
// stops it (c nil).
func (p *analyticsPart) applyAlerts(ctx context.Context, c *alertsPlan) error {
	if c == nil {
		p.closeAlerts()
		return nil
	}
	if p.alerts != nil {
		if err := p.alerts.SetNotifiers(c.hooks, c.pds, c.mails); err != nil {
			return err
		}
		return p.alerts.SetRules(c.rules)
	}
	e, err := alert.New(alert.Options{Rules: c.rules, Webhooks: c.hooks, PagerDuty: c.pds, Email: c.mails, Logger: p.log,
		OnEvent: p.emitAlert})
	if err != nil {
		return err
	}
	p.alerts = e
	p.run.start(ctx, e.Run)
	p.tap.alerts.Store(e)
	p.metrics.set("flow_alerts", e.Collector())
	return nil
}

// emitAlert hands an alert event to Logpush as a flow_alerts record; the
// sink never blocks.
func (p *analyticsPart) emitAlert(ev alert.Event) {
	if p.sink == nil {
		return
	}
	name := ""
	if n := p.coloName.Load(); n != nil {
		name = *n
	}
	p.sink.Push(alert.Dataset, ev.Logpush(name))
}

func (p *analyticsPart) closeAlerts() {
	if p.alerts == nil {
		return
	}
	p.tap.alerts.Store(nil)
	if err := p.run.stop(); err != nil {
		p.log.Error("flow alerts stopped", "err", err)
	}
	p.metrics.set("flow_alerts", nil)
	p.alerts = nil
}

// handler serves /api/v1/flows from the store and /api/v1/flows/alerts
// (the alert history, oldest first) from the engine; nil when neither runs.
func (p *analyticsPart) handler() http.Handler {
	if p.store == nil && p.alerts == nil {
		return nil
	}
	mux := http.NewServeMux()
	none := func(what string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "No "+what+" runs: configure netflow."+what+".", http.StatusNotFound)
		}
	}
	if p.store != nil {
		mux.Handle("GET "+admin.PathFlows, p.store.Handler())
	} else {
		mux.Handle("GET "+admin.PathFlows, none("analytics"))
	}
	if e := p.alerts; e != nil {
		mux.HandleFunc("GET "+admin.PathFlows+"/alerts", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(struct {
				Events []alert.Event `json:"events"`
			}{append([]alert.Event{}, e.History()...)})
		})
	} else {
		mux.Handle("GET "+admin.PathFlows+"/alerts", none("alerts"))
	}
	return mux
}

// applyExport starts the IPFIX exporter, restarts it when its collectors
// change (templates go out again at once), or stops it (to empty).
func (p *analyticsPart) applyExport(ctx context.Context, to []export.Collector) error {
	if p.exp != nil && slices.Equal(p.expTo, to) {
		return nil
	}
	p.closeExport()
	if len(to) == 0 {
		return nil
	}
	e, err := export.New(ctx, export.Options{Collectors: to, Logger: p.log})
	if err != nil {
		return err
	}
	p.exp, p.expTo = e, slices.Clone(to)
	p.expRun.start(ctx, e.Run)
	p.tap.export.Store(e)
	p.metrics.set("flow_export", e.Collector())
	return nil
}

func (p *analyticsPart) closeExport() {
	if p.exp == nil {
		return
	}
	p.tap.export.Store(nil)
	if err := p.expRun.stop(); err != nil {
		p.log.Error("ipfix export stopped", "err", err)
	}
	p.metrics.set("flow_export", nil)
	p.exp, p.expTo = nil, nil
}

func (p *analyticsPart) close() {
	p.tap.api.Store(nil)
	p.closeExport()
	p.closeAlerts()
	p.applyStore(nil)
}

func (p *analyticsPart) ready() error {
	if p.exp != nil {
		if exited, err := p.expRun.exited(); exited {
			return errors.Join(errors.New("ipfix export stopped"), err)
		}
	}
	if p.alerts == nil {
		return nil
	}
	if exited, err := p.run.exited(); exited {
		return errors.Join(errors.New("flow alerts: engine stopped"), err)
	}
	return nil
}

func (p *analyticsPart) status(s *Status) {}
