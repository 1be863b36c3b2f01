package access

import (
	"context"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// Record is one `access_requests` entry: a login, a logout, or a decision
// on a request. Bypassed requests are not recorded, as in Cloudflare Access.
type Record struct {
	Action     string // login | logout | request
	Allowed    bool
	AppDomain  string
	AppName    string
	Connection string // identity provider name, or "service_token"
	Country    string // ISO 3166 alpha-2, when known
	CreatedAt  time.Time
	Email      string
	IPAddress  netip.Addr
	RayID      string // the request id, also sent upstream
	PolicyName string // the deciding policy; "" for deny by default
	UserUID    string // the provider's subject, or the service token name
}

// Logpush is the record with Cloudflare's access_requests field names.
func (r Record) Logpush() logpush.Record {
	ip := ""
	if r.IPAddress.IsValid() {
		ip = r.IPAddress.String()
	}
	return logpush.Record{
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
	}
}

// Record actions.
const (
	ActionLogin   = "login"
	ActionLogout  = "logout"
	ActionRequest = "request"
)

// RecordSink receives access_requests records. AccessRecord is called on
// the request path: it must not block (queue or drop instead).
type RecordSink interface {
	AccessRecord(Record)
}

// recordQueueLen is how many records may wait for the sink. A request
// path never waits for Logpush: past this the record is dropped and
// counted (edgegw_access_records_dropped_total).
const recordQueueLen = 4096

// recordQueue hands records from request handlers to the sink on a
// goroutine of its own, so a sink that blocks (a slow Logpush destination
// applying backpressure) slows only that goroutine, never a request.
type recordQueue struct {
	ch      chan Record
	pending atomic.Int64 // queued and not yet handed to the sink
}

func newRecordQueue() *recordQueue { return &recordQueue{ch: make(chan Record, recordQueueLen)} }

// push queues r without blocking; a full queue drops it and counts it.
func (q *recordQueue) push(r Record, dropped interface{ Inc() }) {
	q.pending.Add(1)
	select {
	case q.ch <- r:
	default:
		q.pending.Add(-1)
		dropped.Inc()
	}
}

// run hands queued records to sink until ctx ends, then hands over what
// is still queued and returns. Server.Run owns it and stops it after the
// HTTP server shut down, so the last requests' records are delivered.
func (q *recordQueue) run(ctx context.Context, sink RecordSink) {
	deliver := func(r Record) {
		if sink != nil {
			sink.AccessRecord(r)
		}
		q.pending.Add(-1)
	}
	for {
		select {
		case r := <-q.ch:
			deliver(r)
		case <-ctx.Done():
			for {
				select {
				case r := <-q.ch:
					deliver(r)
				default:
					return
				}
			}
		}
	}
}

// CountryLookup tells the country of an address, when known.
type CountryLookup interface {
	Country(netip.Addr) string
}

// DeviceLookup tells who owns the enrolled device at an address (the
// gateway implements it over the registry's snapshot). The `device`
// selector matches only when that owner is the request's user.
type DeviceLookup interface {
	// DeviceOwner returns the Subject (identity.SubjectOf: issuer and
	// provider subject) of the user who enrolled the device at a, and
	// false when no enrolled device has that address.
	DeviceOwner(a netip.Addr) (subject string, ok bool)
}

// PostureLookup, when the DeviceLookup also implements it, tells whether
// the enrolled device at a passes its posture checks (the device_posture
// selector); without it that selector never matches.
type PostureLookup interface {
	DeviceCompliant(a netip.Addr) bool
}

// PostureAttributes, when the DeviceLookup also implements it, gives the
// posture attributes of the enrolled device at a that posture selectors
// judge; ok is false while no posture rules run or no device is there.
type PostureAttributes interface {
	DevicePostureAttributes(a netip.Addr) (p rules.Posture, ok bool)
}

type metrics struct {
	requests     *prometheus.CounterVec
	logins       *prometheus.CounterVec
	providerUp   *prometheus.GaugeVec
	reloadOK     prometheus.Gauge
	upstreamErrs *prometheus.CounterVec
	replayFull   prometheus.Counter
	recsDropped  prometheus.Counter
	wsClosed     *prometheus.CounterVec
}

// Decisions, as metric label values.
const (
	decAllow        = "allow"
	decBypass       = "bypass"
	decServiceAuth  = "service_auth"
	decBlock        = "block"
	decDeny         = "deny"
	decLogin        = "login_redirect"
	decUnauthorized = "unauthorized"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "requests_total",
			Help: "Requests to Access apps by app and decision.",
		}, []string{"app", "decision"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "logins_total",
			Help: "Completed logins by app, identity provider and result.",
		}, []string{"app", "provider", "result"}),
		providerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "provider_up",
			Help: "1 when the identity provider's discovery succeeded.",
		}, []string{"provider"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "config_last_reload_successful",
			Help: "1 when the last Access configuration was applied.",
		}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "upstream_errors_total",
			Help: "Requests that failed to reach the app's upstream.",
		}, []string{"app"}),
		replayFull: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "replay_set_full_total",
			Help: "Logins refused because the set of used login nonces was at its bound.",
		}),
		recsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "records_dropped_total",
			Help: "access_requests records dropped because the queue to Logpush was full.",
		}),
		wsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "edgegw", Subsystem: "access", Name: "websockets_closed_total",
			Help: "Upgraded connections (WebSockets) Access closed, by reason (logout, expired, deprovisioned: the user was deactivated or deleted by SCIM).",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.logins, m.providerUp, m.reloadOK, m.upstreamErrs, m.replayFull, m.recsDropped, m.wsClosed}
}
