package enroll

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	revoked  prometheus.Counter
	limited  prometheus.Counter
	notify   *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_enroll_requests_total",
			Help: "Device enrollment attempts by path (device: the API for edgegw enroll; browser: /enroll) and result (enrolled or an error code).",
		}, []string{"via", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgegw_enroll_duration_seconds",
			Help:    "Time to serve a successful enrollment, ID token verification and registry write included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"via"}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegw_enroll_rate_limited_total",
			Help: "Enrollment requests refused with 429 because their source address was over its limit.",
		}),
		notify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_enroll_notifications_total",
			Help: "Enrollment webhook notifications by result: delivered, failed (after retries) or dropped (queue full).",
		}, []string{"result"}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgegw_device_revocations_total",
			Help: "Devices revoked through the admin API.",
		}),
	}
}

func (m *metrics) observe(via, result string, d time.Duration) {
	m.requests.WithLabelValues(via, result).Inc()
	if result == resultEnrolled {
		m.duration.WithLabelValues(via).Observe(d.Seconds())
	}
}

// Describe implements prometheus.Collector; the gateway registers the
// Handler on its registry.
func (h *Handler) Describe(ch chan<- *prometheus.Desc) {
	h.metrics.requests.Describe(ch)
	h.metrics.duration.Describe(ch)
	h.metrics.limited.Describe(ch)
	h.metrics.notify.Describe(ch)
}

// Collect implements prometheus.Collector.
func (h *Handler) Collect(ch chan<- prometheus.Metric) {
	h.metrics.requests.Collect(ch)
	h.metrics.duration.Collect(ch)
	h.metrics.limited.Collect(ch)
	h.metrics.notify.Collect(ch)
}

// Describe implements prometheus.Collector.
func (a *Admin) Describe(ch chan<- *prometheus.Desc) { a.metrics.revoked.Describe(ch) }

// Collect implements prometheus.Collector.
func (a *Admin) Collect(ch chan<- prometheus.Metric) { a.metrics.revoked.Collect(ch) }
