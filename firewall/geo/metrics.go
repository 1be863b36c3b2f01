package geo

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the state of a Watcher: edgegw_geoip_loads_total and
// edgegw_geoip_load_failures_total (a changed file that did not load, the
// previous snapshot kept), edgegw_geoip_networks by kind (country, asn)
// and edgegw_geoip_loaded_timestamp_seconds.
type Collector struct {
	w                         *Watcher
	loads, failures, networks *prometheus.Desc
	loaded                    *prometheus.Desc
}

// NewCollector returns a Collector for w.
func NewCollector(w *Watcher) *Collector {
	return &Collector{
		w: w,
		loads: prometheus.NewDesc("edgegw_geoip_loads_total",
			"GeoIP database snapshots loaded, the first included.", nil, nil),
		failures: prometheus.NewDesc("edgegw_geoip_load_failures_total",
			"GeoIP database files that changed but could not be loaded; the previous snapshot stayed in use.", nil, nil),
		networks: prometheus.NewDesc("edgegw_geoip_networks",
			"Networks with a country (kind country) or an AS number (kind asn) in the current GeoIP snapshot.",
			[]string{"kind"}, nil),
		loaded: prometheus.NewDesc("edgegw_geoip_loaded_timestamp_seconds",
			"When the current GeoIP snapshot was loaded, in seconds since the Unix epoch.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.loads
	ch <- c.failures
	ch <- c.networks
	ch <- c.loaded
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	loads, failures := c.w.Stats()
	ch <- prometheus.MustNewConstMetric(c.loads, prometheus.CounterValue, float64(loads))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(failures))
	db := c.w.Current()
	var countries, asns int
	if db != nil {
		for _, ps := range db.countries {
			countries += len(ps)
		}
		for _, ps := range db.asns {
			asns += len(ps)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.networks, prometheus.GaugeValue, float64(countries), "country")
	ch <- prometheus.MustNewConstMetric(c.networks, prometheus.GaugeValue, float64(asns), "asn")
	ch <- prometheus.MustNewConstMetric(c.loaded, prometheus.GaugeValue, float64(c.w.LoadedAt().UnixNano())/1e9)
}
