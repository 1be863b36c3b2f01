//go:build linux

package gre

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

const tunnelDropHelp = "GRE packets a tunnel dropped, by reason: wrong_key (from the tunnel's remote with another or no key), " +
	"missing_sequence (no sequence number on a tunnel with sequence: true), out_of_order (sequence number 64 or more behind " +
	"the newest, RFC 2890), replayed (a sequence number already received), invalid_inner_packet (payload not a whole IPv4/IPv6 " +
	"packet of the announced type), tun_write_error, send_error, too_many_segments (a TSO burst the TUN device could not split). " +
	"Kernel (ip_gre) tunnels report the interface's counters instead: out_of_order, malformed (bad GRE checksum), rx_errors (other), " +
	"rx_dropped, tx_errors, tx_dropped."

const endpointDropHelp = "GRE packets dropped before they reached a tunnel, by local address and reason: truncated, " +
	"malformed (version not 0, RFC 1701 routing bits, bad checksum, unknown payload type), unknown_source (no tunnel from that remote)."

// metrics holds a tunnel's descriptors; the tunnel name is a constant
// label so that every tunnel can register its own collector.
type metrics struct {
	rxPackets, rxBytes, rxCoalesced, txPackets, txBytes, dropped *prometheus.Desc
}

func newMetrics(t *Tunnel) *metrics {
	l := prometheus.Labels{"tunnel": t.cfg.Name}
	return &metrics{
		rxPackets: prometheus.NewDesc("edgegw_gre_received_packets_total", "Packets decapsulated from the tunnel.", nil, l),
		rxBytes:   prometheus.NewDesc("edgegw_gre_received_bytes_total", "Bytes of inner packets decapsulated from the tunnel.", nil, l),
		rxCoalesced: prometheus.NewDesc("edgegw_gre_received_coalesced_packets_total",
			"Received packets that the NIC's GRO had coalesced from several TCP segments, passed to the TUN device as one TSO packet.", nil, l),
		txPackets: prometheus.NewDesc("edgegw_gre_sent_packets_total", "Packets encapsulated into the tunnel.", nil, l),
		txBytes:   prometheus.NewDesc("edgegw_gre_sent_bytes_total", "Bytes of inner packets encapsulated into the tunnel.", nil, l),
		dropped:   prometheus.NewDesc("edgegw_gre_dropped_packets_total", tunnelDropHelp, []string{"reason"}, l),
	}
}

// Describe implements prometheus.Collector.
func (t *Tunnel) Describe(ch chan<- *prometheus.Desc) {
	m := t.metrics
	ch <- m.rxPackets
	ch <- m.rxBytes
	ch <- m.rxCoalesced
	ch <- m.txPackets
	ch <- m.txBytes
	ch <- m.dropped
}

// Collect implements prometheus.Collector.
func (t *Tunnel) Collect(ch chan<- prometheus.Metric) {
	m := t.metrics
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if t.kern != nil {
		c := t.kernelCounters()
		counter(m.rxPackets, c.rxPackets)
		counter(m.rxBytes, c.rxBytes)
		counter(m.txPackets, c.txPackets)
		counter(m.txBytes, c.txBytes)
		for _, name := range kernelDropNames {
			counter(m.dropped, c.drops[name], name)
		}
		return
	}
	counter(m.rxPackets, t.rxPackets.Load())
	counter(m.rxBytes, t.rxBytes.Load())
	counter(m.rxCoalesced, t.rxCoalesced.Load())
	counter(m.txPackets, t.txPackets.Load())
	counter(m.txBytes, t.txBytes.Load())
	for i, name := range tunnelDropNames {
		counter(m.dropped, t.drops[i].Load(), name)
	}
}

var descEndpointDropped = prometheus.NewDesc("edgegw_gre_endpoint_dropped_packets_total", endpointDropHelp, []string{"local", "reason"}, nil)

// Describe implements prometheus.Collector.
func (e *Endpoints) Describe(ch chan<- *prometheus.Desc) { ch <- descEndpointDropped }

// Collect implements prometheus.Collector.
func (e *Endpoints) Collect(ch chan<- prometheus.Metric) {
	for local, c := range e.dropCounts() {
		for i, name := range endpointDropNames {
			ch <- prometheus.MustNewConstMetric(descEndpointDropped, prometheus.CounterValue, float64(c[i]), local.String(), name)
		}
	}
}

// dropCounts sums the drops of open and closed sockets by local address.
func (e *Endpoints) dropCounts() map[netip.Addr][numEndpointDrops]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[netip.Addr][numEndpointDrops]uint64{}
	for local, c := range e.gone {
		out[local] = *c
	}
	for local, ep := range e.socks {
		c := out[local]
		for i := range c {
			c[i] += ep.drops[i].Load()
		}
		out[local] = c
	}
	return out
}

// Drops returns the drops that belong to no tunnel, by local address and
// reason, for the admin API.
func (e *Endpoints) Drops() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for local, c := range e.dropCounts() {
		m := map[string]uint64{}
		for i, name := range endpointDropNames {
			m[name] = c[i]
		}
		out[local.String()] = m
	}
	return out
}
