package firewall

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the counters of a Table, read from the kernel at each
// scrape: edgegw_firewall_rule_packets_total and
// edgegw_firewall_rule_bytes_total by rule id,
// edgegw_firewall_spoofed_packets_total by the interface that owns the
// forged source address, and
// edgegw_firewall_rate_limit_dropped_packets_total by rule id, and
// edgegw_firewall_egress_connections_total by egress policy id.
// Register it with the gateway's registry.
type Collector struct {
	t           *Table
	read        func() (Counts, error)
	packets     *prometheus.Desc
	bytes       *prometheus.Desc
	spoofed     *prometheus.Desc
	rateDropped *prometheus.Desc
	egress      *prometheus.Desc
	errs        *prometheus.Desc
}

// NewCollector returns a Collector for t.
func NewCollector(t *Table) *Collector {
	return &Collector{
		t:    t,
		read: t.ReadCounts,
		packets: prometheus.NewDesc("edgegw_firewall_rule_packets_total",
			"Packets matched by a firewall rule since the ruleset was applied.", []string{"rule"}, nil),
		bytes: prometheus.NewDesc("edgegw_firewall_rule_bytes_total",
			"Bytes of packets matched by a firewall rule since the ruleset was applied.", []string{"rule"}, nil),
		spoofed: prometheus.NewDesc("edgegw_firewall_spoofed_packets_total",
			"Packets dropped before any rule because their source address belongs to a tunnel "+
				"(interface: the tunnel interfaces that own it) but they arrived on another interface, since the ruleset was applied.",
			[]string{"interface"}, nil),
		rateDropped: prometheus.NewDesc("edgegw_firewall_rate_limit_dropped_packets_total",
			"Packets a rate_limit rule dropped (over the rate, or its meter of sources full), since the ruleset was applied.",
			[]string{"rule"}, nil),
		egress: prometheus.NewDesc("edgegw_firewall_egress_connections_total",
			"Connections an egress policy gave its egress address, since the ruleset was applied.",
			[]string{"policy"}, nil),
		errs: prometheus.NewDesc("edgegw_firewall_counters_read_failed",
			"1 if the last read of the rule counters from the kernel failed, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.spoofed
	ch <- c.rateDropped
	ch <- c.egress
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
	for id, v := range cs.Rules {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.Packets), id)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v.Bytes), id)
	}
	for ifc, v := range cs.Spoofed {
		ch <- prometheus.MustNewConstMetric(c.spoofed, prometheus.CounterValue, float64(v.Packets), ifc)
	}
	for id, v := range cs.RateDropped {
		ch <- prometheus.MustNewConstMetric(c.rateDropped, prometheus.CounterValue, float64(v.Packets), id)
	}
	for id, v := range cs.Egress {
		ch <- prometheus.MustNewConstMetric(c.egress, prometheus.CounterValue, float64(v.Packets), id)
	}
}
