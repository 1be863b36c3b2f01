package alert

import "github.com/prometheus/client_golang/prometheus"

var (
	descFiring        = prometheus.NewDesc("edgegw_flow_alerts_firing", "Volumetric flow alerts open now (per rule and prefix, or per summed rule).", nil, nil)
	descEvents        = prometheus.NewDesc("edgegw_flow_alert_events_total", "Volumetric flow alert events, by state (firing, resolved).", []string{"state"}, nil)
	descNotifications = prometheus.NewDesc("edgegw_flow_alert_notifications_total", "Flow alert notifications, by result: delivered, failed (every attempt refused or unreachable), dropped (queue full).", []string{"result"}, nil)
	descLate          = prometheus.NewDesc("edgegw_flow_alert_late_bytes_total", "Bytes of flows that ended before every rule's window, so no rule counted them.", nil, nil)
)

// Collector returns the engine's metrics, for the owner to register.
func (e *Engine) Collector() prometheus.Collector { return collector{e} }

type collector struct{ e *Engine }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFiring, descEvents, descNotifications, descLate} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.e.Stats()
	ch <- prometheus.MustNewConstMetric(descFiring, prometheus.GaugeValue, float64(st.Firing))
	ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(st.Fired), string(Firing))
	ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(st.Resolved), string(Resolved))
	ch <- prometheus.MustNewConstMetric(descNotifications, prometheus.CounterValue, float64(st.Delivered), "delivered")
	ch <- prometheus.MustNewConstMetric(descNotifications, prometheus.CounterValue, float64(st.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(descNotifications, prometheus.CounterValue, float64(st.QueueDropped), "dropped")
	ch <- prometheus.MustNewConstMetric(descLate, prometheus.CounterValue, float64(st.LateFlowBytes))
}
