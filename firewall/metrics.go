package firewall

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the rule counters of a Table, read from the kernel at
// each scrape, as edgegw_firewall_rule_packets_total and
// edgegw_firewall_rule_bytes_total by rule id. Register it with the
// gateway's registry.
type Collector struct {
	t       *Table
	read    func() (map[string]Counter, error)
	packets *prometheus.Desc
	bytes   *prometheus.Desc
	errs    *prometheus.Desc
}

// NewCollector returns a Collector for t.
func NewCollector(t *Table) *Collector {
	return &Collector{
		t:    t,
		read: t.Counters,
		packets: prometheus.NewDesc("edgegw_firewall_rule_packets_total",
			"Packets matched by a firewall rule since the ruleset was applied.", []string{"rule"}, nil),
		bytes: prometheus.NewDesc("edgegw_firewall_rule_bytes_total",
			"Bytes of packets matched by a firewall rule since the ruleset was applied.", []string{"rule"}, nil),
		errs: prometheus.NewDesc("edgegw_firewall_counters_read_failed",
			"1 if the last read of the rule counters from the kernel failed, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.errs
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	cs, err := c.read()
	failed := 0.0
	if err != nil {
		c.t.log.Warn("read firewall counters", "err", err)
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.GaugeValue, failed)
	for id, v := range cs {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.Packets), id)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v.Bytes), id)
	}
}
