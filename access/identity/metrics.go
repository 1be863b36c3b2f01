package identity

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the registry's Prometheus metrics for the owner to
// register. Values are read from the current snapshot at scrape time.
func (r *Registry) Collector() prometheus.Collector { return collector{r} }

var (
	devicesDesc = prometheus.NewDesc("edgegw_identity_devices",
		"Enrolled devices by state: active, expired (not revoked, not pending, past their expiry), revoked.", []string{"state"}, nil)
	generationDesc = prometheus.NewDesc("edgegw_identity_registry_generation",
		"Registry generation of the current snapshot; it grows with every change.", nil, nil)
	syncErrorsDesc = prometheus.NewDesc("edgegw_identity_registry_sync_errors_total",
		"Polls of the registry database that failed (the last snapshot stayed in force).", nil, nil)
	retriesDesc = prometheus.NewDesc("edgegw_identity_enroll_retries_total",
		"Enrollments retried because another writer took the same address or key first.", nil, nil)
	lastSyncDesc = prometheus.NewDesc("edgegw_identity_registry_last_sync_timestamp_seconds",
		"When the registry database was last read successfully (Unix time).", nil, nil)
)

type collector struct{ r *Registry }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{devicesDesc, generationDesc, syncErrorsDesc, retriesDesc, lastSyncDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Snapshot()
	active, expired, revoked := s.Len(), 0, 0
	if s != nil {
		expired, revoked = s.expired, s.revoked
	}
	ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(active), "active")
	ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(expired), "expired")
	ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(revoked), "revoked")
	ch <- prometheus.MustNewConstMetric(generationDesc, prometheus.GaugeValue, float64(s.Generation()))
	ch <- prometheus.MustNewConstMetric(syncErrorsDesc, prometheus.CounterValue, float64(c.r.syncErrors.Load()))
	ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(c.r.retries.Load()))
	last := 0.0
	if ns := c.r.lastSync.Load(); ns != 0 {
		last = float64(ns) / float64(time.Second)
	}
	ch <- prometheus.MustNewConstMetric(lastSyncDesc, prometheus.GaugeValue, last)
}
