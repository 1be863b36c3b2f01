package store

import "github.com/prometheus/client_golang/prometheus"

var (
	descFlows   = prometheus.NewDesc("edgegw_flow_store_flows_total", "Flow records rolled up in the analytics store.", nil, nil)
	descDropped = prometheus.NewDesc("edgegw_flow_store_dropped_total", "Flow records the analytics store did not keep, by reason: too_old (past the retention), full (no room even coarse), invalid (no addresses or time).", []string{"reason"}, nil)
	descCoarse  = prometheus.NewDesc("edgegw_flow_store_coarsened_total", "Flow records rolled up with addresses cut to /24 or /64 because their minute filled the store.", nil, nil)
	descEvicted = prometheus.NewDesc("edgegw_flow_store_evictions_total", "Minute rollups dropped before their retention to stay under max_bytes.", nil, nil)
	descCompact = prometheus.NewDesc("edgegw_flow_store_compactions_total", "Minute rollups rolled up coarser (addresses to /24 or /64, ports from 1024 to 0) to stay under max_bytes.", nil, nil)
	descRows    = prometheus.NewDesc("edgegw_flow_store_rows", "Rollup rows held by the analytics store.", nil, nil)
	descBytes   = prometheus.NewDesc("edgegw_flow_store_bytes", "Estimated memory of the analytics store's rollups, in bytes.", nil, nil)
)

// Collector returns the store's metrics, for the owner to register.
func (s *Store) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Store }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFlows, descDropped, descCoarse, descEvicted, descCompact, descRows, descBytes} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descFlows, prometheus.CounterValue, float64(st.Flows))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.TooOld), "too_old")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Full), "full")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Invalid), "invalid")
	ch <- prometheus.MustNewConstMetric(descCoarse, prometheus.CounterValue, float64(st.Coarsened))
	ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(descCompact, prometheus.CounterValue, float64(st.Compacted))
	ch <- prometheus.MustNewConstMetric(descRows, prometheus.GaugeValue, float64(st.Rows))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Bytes))
}
