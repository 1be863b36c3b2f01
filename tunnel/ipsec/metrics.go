//go:build linux

package ipsec

import "github.com/prometheus/client_golang/prometheus"

var (
	descUp = prometheus.NewDesc("edgegw_ipsec_tunnel_up",
		"1 if the tunnel's IKE SA is established and its child SA installed.", []string{"tunnel"}, nil)
	descRekeys = prometheus.NewDesc("edgegw_ipsec_rekeys_total",
		"SA rekeys of the tunnel, by SA (ike, child).", []string{"tunnel", "sa"}, nil)
	descBytes = prometheus.NewDesc("edgegw_ipsec_bytes_total",
		"Bytes of inner packets through the tunnel's child SAs, by direction (in, out).", []string{"tunnel", "direction"}, nil)
	descPackets = prometheus.NewDesc("edgegw_ipsec_packets_total",
		"Inner packets through the tunnel's child SAs, by direction (in, out).", []string{"tunnel", "direction"}, nil)
	descFailures = prometheus.NewDesc("edgegw_ipsec_failures_total",
		"Failed negotiations of the tunnel (authentication, proposals, identities, unresponsive peer).", []string{"tunnel"}, nil)
	descRestarts = prometheus.NewDesc("edgegw_ipsec_charon_restarts_total",
		"Times edgegw had to restart its charon.", nil, nil)
	descCharonUp = prometheus.NewDesc("edgegw_ipsec_charon_up",
		"1 while edgegw's charon runs and answers on VICI.", nil, nil)
	descProbeWrongIf = prometheus.NewDesc("edgegw_ipsec_health_icmp_ignored_total",
		"ICMP packets the health checks did not look at because they arrived on an interface that carries no IPsec "+
			"tunnel: ordinary ICMP to the host, or answers forged with a tunnel's addresses.", nil, nil)
)

// Describe implements prometheus.Collector.
func (e *Engine) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descRekeys, descBytes, descPackets, descFailures, descRestarts, descCharonUp, descProbeWrongIf} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (e *Engine) Collect(ch chan<- prometheus.Metric) {
	st := e.Status()
	e.mu.Lock()
	restarts, running := e.restarts, e.sess != nil
	e.mu.Unlock()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, t := range st {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, b(t.Up), t.Name)
		ch <- prometheus.MustNewConstMetric(descRekeys, prometheus.CounterValue, float64(t.IKERekeys), t.Name, "ike")
		ch <- prometheus.MustNewConstMetric(descRekeys, prometheus.CounterValue, float64(t.Rekeys), t.Name, "child")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.BytesIn), t.Name, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.BytesOut), t.Name, "out")
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(t.PacketsIn), t.Name, "in")
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(t.PacketsOut), t.Name, "out")
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(t.Failures), t.Name)
	}
	ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(restarts))
	ch <- prometheus.MustNewConstMetric(descCharonUp, prometheus.GaugeValue, b(running))
	ch <- prometheus.MustNewConstMetric(descProbeWrongIf, prometheus.CounterValue, float64(e.probe.wrongIf.Load()))
}
