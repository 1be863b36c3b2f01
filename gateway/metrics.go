package gateway

import (
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics is the gateway's own Prometheus registry; subsystems register
// collectors on it, never on the global default registry.
type metrics struct {
	reg            *prometheus.Registry
	reloadOK       prometheus.Gauge
	reloadSuccess  prometheus.Gauge
	revertFailures prometheus.Counter

	mu    sync.Mutex
	parts map[string]prometheus.Collector // each running part's collector
}

func newMetrics(version string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), parts: map[string]prometheus.Collector{}}
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgegw_config_last_reload_successful",
		Help: "Whether the last configuration load or reload succeeded (1) or was rejected (0).",
	})
	m.reloadSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgegw_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully, as a Unix time.",
	})
	m.revertFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgegw_config_revert_failures_total",
		Help: "Parts that could not be put back to the running configuration after a reload failed: each leaves that part on the new configuration.",
	})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "edgegw_build_info",
		Help:        "Always 1; the labels carry the build's version.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.reloadOK, m.reloadSuccess, m.revertFailures, build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) reload(ok bool, at time.Time) {
	if ok {
		m.reloadOK.Set(1)
		m.reloadSuccess.Set(float64(at.Unix()))
	} else {
		m.reloadOK.Set(0)
	}
}

// revertFailed counts a part that could not be put back.
func (m *metrics) revertFailed() { m.revertFailures.Inc() }

// set swaps the collector a part registered under key (nil: none).
func (m *metrics) set(key string, c prometheus.Collector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.parts[key]; old != nil {
		m.reg.Unregister(old)
		delete(m.parts, key)
	}
	if c != nil {
		m.reg.MustRegister(c)
		m.parts[key] = c
	}
}
