package posture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Path is where devices send their reports, on the Access listener.
const Path = "/api/v1/posture"

// Handles reports whether the Access listener should hand path to a
// Server.
func Handles(path string) bool { return path == Path }

// MaxClockSkew bounds how far a report's time may be from the gateway's
// clock: a captured report is worth nothing after it.
const MaxClockSkew = 5 * time.Minute

// sweepEvery is how often the server looks for devices whose reports went
// stale.
const sweepEvery = 5 * time.Second

// Registry is what the server needs of the device registry.
type Registry interface {
	Snapshot() *identity.Snapshot
	RecordPosture(ctx context.Context, id string, reported time.Time, report []byte, quarantined bool, attrs rules.Posture) (identity.Device, error)
	QuarantineStale(ctx context.Context, reportedBefore, enrolledBefore time.Time) ([]identity.Device, error)
}

// Options configure a Server.
type Options struct {
	Registry Registry
	Policy   *Policy
	// GatewayKey is the gateway's WireGuard private key: with it the
	// server checks that a report comes from the holder of the device's
	// key.
	GatewayKey wgconf.Key
	// Applied, when set, waits until a quarantine or release is in the
	// kernel (WireGuard peers and firewall identity sets), so a report is
	// answered when its effect holds.
	Applied func(context.Context)
	Logger  *slog.Logger
	Now     func() time.Time // time.Now when nil
}

// Server takes devices' posture reports (POST /api/v1/posture), judges
// them against the policy and quarantines or releases the device in the
// registry; Run quarantines devices whose reports went stale.
type Server struct {
	reg     Registry
	applied func(context.Context)
	log     *slog.Logger
	now     func() time.Time
	cur     atomic.Pointer[config] // policy and key, swapped by Update
	metrics *metrics
}

type config struct {
	policy *Policy
	key    wgconf.Key
}

// New returns a server; the caller runs Run.
func New(o Options) (*Server, error) {
	if o.Registry == nil || o.Policy == nil {
		return nil, errors.New("posture: a registry and a policy are required")
	}
	if o.GatewayKey.IsZero() {
		return nil, errors.New("posture: no gateway key to check reports with")
	}
	s := &Server{reg: o.Registry, applied: o.Applied, log: o.Logger, now: o.Now, metrics: newMetrics()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.applied == nil {
		s.applied = func(context.Context) {}
	}
	s.cur.Store(&config{policy: o.Policy, key: o.GatewayKey})
	return s, nil
}

// Update swaps the policy and key in place (a reload); reports judged
// from now on use them.
func (s *Server) Update(p *Policy, key wgconf.Key) {
	if p == nil || key.IsZero() {
		return
	}
	s.cur.Store(&config{policy: p, key: key})
}

// Response is the server's answer to an accepted report.
type Response struct {
	Device      string   `json:"device"`
	Compliant   bool     `json:"compliant"`
	Quarantined bool     `json:"quarantined"`
	Failed      []string `json:"failed,omitempty"`
	// NextReport is when the device should report again, in seconds.
	NextReport int `json:"next_report_seconds"`
}

// apiError is the body of a refusal.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func (s *Server) refuse(w http.ResponseWriter, status int, code, msg string) {
	s.metrics.refused.WithLabelValues(code).Inc()
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.refuse(w, http.StatusMethodNotAllowed, "method", "send reports with POST")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxReportBytes+1))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "body", "cannot read the report")
		return
	}
	if len(body) > MaxReportBytes {
		s.refuse(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("a report has at most %d bytes", MaxReportBytes))
		return
	}
	cfg := s.cur.Load()
	pub, err := DeviceKey(r.Header)
	if err != nil {
		s.refuse(w, http.StatusUnauthorized, "unauthenticated", "the report carries no device key")
		return
	}
	dev, ok := s.reg.Snapshot().ByKey(pub)
	if !ok {
		// Unknown, revoked, expired or pending: one answer for all, so the
		// endpoint tells nobody which keys are enrolled.
		s.refuse(w, http.StatusUnauthorized, "unauthenticated", "not an enrolled device, or the report's MAC does not match its key")
		return
	}
	if err := Verify(r.Header, body, pub, cfg.key); err != nil {
		s.log.Warn("posture report refused: bad MAC", "device", dev.ID, "remote", r.RemoteAddr, "err", err)
		s.refuse(w, http.StatusUnauthorized, "unauthenticated", "not an enrolled device, or the report's MAC does not match its key")
		return
	}
	rep, err := ParseReport(body)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	now := s.now()
	if d := rep.Time.Sub(now); d > MaxClockSkew || d < -MaxClockSkew {
		s.refuse(w, http.StatusBadRequest, "clock", fmt.Sprintf("the report's time %s is %s from the gateway's clock (at most %s): set the device's clock", rep.Time.Format(time.RFC3339), d.Round(time.Second), MaxClockSkew))
		return
	}
	res := cfg.policy.Evaluate(rep)
	was := dev.Quarantined
	stored, err := s.reg.RecordPosture(r.Context(), dev.ID, rep.Time, body, !res.Compliant, cfg.policy.Attributes(rep, res))
	switch {
	case errors.Is(err, identity.ErrStaleReport):
		s.refuse(w, http.StatusConflict, "replay", "the report is not newer than the device's last accepted report")
		return
	case errors.Is(err, identity.ErrRevoked), errors.Is(err, identity.ErrNotFound):
		s.refuse(w, http.StatusUnauthorized, "unauthenticated", "not an enrolled device, or the report's MAC does not match its key")
		return
	case err != nil:
		s.log.Error("posture report: registry", "device", dev.ID, "err", err)
		s.refuse(w, http.StatusServiceUnavailable, "unavailable", "the device registry is unavailable; report again later")
		return
	}
	result := "compliant"
	if !res.Compliant {
		result = "noncompliant"
	}
	s.metrics.reports.WithLabelValues(result).Inc()
	if stored.Quarantined != was {
		if stored.Quarantined {
			s.metrics.quarantined.WithLabelValues("report").Inc()
		}
		s.log.Info("posture: device state changed", "device", dev.ID, "email", dev.Email, "quarantined", stored.Quarantined, "failed", res.Failed)
		s.applied(r.Context())
	}
	writeJSON(w, http.StatusOK, Response{
		Device: dev.ID, Compliant: res.Compliant, Quarantined: stored.Quarantined, Failed: res.Failed,
		NextReport: int(ReportInterval / time.Second),
	})
}

// Run quarantines, every few seconds, the devices whose last report is
// older than the policy's max_age, or that have not reported within the
// grace after enrolling, until ctx ends. A failing registry is logged
// and retried at the next tick.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		s.sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Server) sweep(ctx context.Context) {
	p := s.cur.Load().policy
	now := s.now()
	devs, err := s.reg.QuarantineStale(ctx, now.Add(-p.MaxAge()), now.Add(-p.Grace()))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("posture: look for stale reports", "err", err)
		}
		return
	}
	if len(devs) == 0 {
		return
	}
	s.metrics.quarantined.WithLabelValues("stale").Add(float64(len(devs)))
	s.applied(ctx)
}

// metrics counts reports and quarantines.
type metrics struct {
	reports      *prometheus.CounterVec
	refused      *prometheus.CounterVec
	quarantined  *prometheus.CounterVec
	inQuarantine *prometheus.Desc
}

func newMetrics() *metrics {
	return &metrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_posture_reports_total",
			Help: "Posture reports accepted, by result: compliant or noncompliant.",
		}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_posture_reports_refused_total",
			Help: "Posture reports refused, by reason: unauthenticated, malformed, clock, replay, too_large, method, body, unavailable.",
		}, []string{"reason"}),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_posture_quarantines_total",
			Help: "Devices quarantined, by cause: report (a failing report) or stale (no report within max_age, or none within the grace after enrolling).",
		}, []string{"cause"}),
		inQuarantine: prometheus.NewDesc("edgegw_posture_devices_quarantined", "Active enrolled devices in quarantine now.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	s.metrics.reports.Describe(ch)
	s.metrics.refused.Describe(ch)
	s.metrics.quarantined.Describe(ch)
	ch <- s.metrics.inQuarantine
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	s.metrics.reports.Collect(ch)
	s.metrics.refused.Collect(ch)
	s.metrics.quarantined.Collect(ch)
	n := 0
	for d := range s.reg.Snapshot().All() {
		if d.Quarantined {
			n++
		}
	}
	ch <- prometheus.MustNewConstMetric(s.metrics.inQuarantine, prometheus.GaugeValue, float64(n))
}
