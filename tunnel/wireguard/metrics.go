package wireguard

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descLastHandshake = prometheus.NewDesc("edgegw_wireguard_peer_last_handshake_timestamp_seconds",
		"Unix time of the peer's last completed handshake; 0 if none.", []string{"interface", "peer"}, nil)
	descReceive = prometheus.NewDesc("edgegw_wireguard_peer_receive_bytes_total",
		"Bytes received from the peer, WireGuard overhead included.", []string{"interface", "peer"}, nil)
	descTransmit = prometheus.NewDesc("edgegw_wireguard_peer_transmit_bytes_total",
		"Bytes sent to the peer, WireGuard overhead included.", []string{"interface", "peer"}, nil)
	descDropped = prometheus.NewDesc("edgegw_wireguard_dropped_packets_total", droppedHelp,
		[]string{"interface", "reason"}, nil)
	descOnDemand = prometheus.NewDesc("edgegw_wireguard_ondemand_peers",
		"On-demand peers (enrolled devices) the device holds now: those with a handshake in the last 9 minutes.",
		[]string{"interface"}, nil)
	descOnDemandCreated = prometheus.NewDesc("edgegw_wireguard_ondemand_peers_created_total",
		"On-demand peers created on their first handshake initiation.", []string{"interface"}, nil)
	descOnDemandRemoved = prometheus.NewDesc("edgegw_wireguard_ondemand_peers_removed_total",
		"On-demand peers removed, by reason: idle (no handshake for 9 minutes) or revoked (the registry dropped or changed them).",
		[]string{"interface", "reason"}, nil)
	descInitiations = prometheus.NewDesc("edgegw_wireguard_initiations_not_looked_up_total",
		"Handshake initiations from keys the device does not hold that created no peer, by reason: "+
			"unknown (looked up: neither a configured peer nor an enrolled device), limited_source (its source address, "+
			"or IPv6 /64, over 10 lookups per second), limited_global (all sources over 1000 per second), cookie (under load "+
			"without a valid mac2: answered with a cookie reply), invalid_mac1 (under load: dropped before wireguard-go), "+
			"queue_full (the peer-creating worker was behind).",
		[]string{"interface", "reason"}, nil)
	descLookups = prometheus.NewDesc("edgegw_wireguard_initiation_lookups_total",
		"Handshake initiations from keys the device does not hold whose sender was looked up (one X25519 each).",
		[]string{"interface"}, nil)
	descCookieErrors = prometheus.NewDesc("edgegw_wireguard_cookie_reply_errors_total",
		"Cookie replies that could not be sent.", []string{"interface"}, nil)
	descUnderLoad = prometheus.NewDesc("edgegw_wireguard_under_load",
		"1 while more than 250 lookups a second are wanted: initiations from keys the device does not hold then "+
			"need a valid mac2 (WireGuard's cookie) to be looked up.", []string{"interface"}, nil)
)

const droppedHelp = "Packets the device dropped, by reason: malformed (not a WireGuard message), invalid_handshake " +
	"(rejected handshake message: unknown key, bad MAC, replay), disallowed_source (inner source outside " +
	"the peer's allowed_ips), invalid_inner_packet, tun_rx_dropped and tun_tx_dropped (the interface's kernel counters)."

// Collector exports the device's metrics, read when scraped. Peers are
// labelled with their configured name (or their public key if they have
// none).
func (d *Device) Collector() prometheus.Collector { return collector{d} }

type collector struct{ d *Device }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLastHandshake
	ch <- descReceive
	ch <- descTransmit
	ch <- descDropped
	ch <- descOnDemand
	ch <- descOnDemandCreated
	ch <- descOnDemandRemoved
	ch <- descInitiations
	ch <- descLookups
	ch <- descCookieErrors
	ch <- descUnderLoad
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	for _, p := range d.Status().Peers {
		name := p.Name
		if name == "" {
			name = p.PublicKey.String()
		}
		var hs float64
		if !p.LastHandshake.IsZero() {
			hs = float64(p.LastHandshake.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(descLastHandshake, prometheus.GaugeValue, hs, d.name, name)
		ch <- prometheus.MustNewConstMetric(descReceive, prometheus.CounterValue, float64(p.RxBytes), d.name, name)
		ch <- prometheus.MustNewConstMetric(descTransmit, prometheus.CounterValue, float64(p.TxBytes), d.name, name)
	}
	drop := func(reason string, v uint64) {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(v), d.name, reason)
	}
	drop("malformed", d.drops.malformed.Load())
	drop("invalid_handshake", d.drops.invalidHandshake.Load())
	drop("disallowed_source", d.drops.disallowedSource.Load())
	drop("invalid_inner_packet", d.drops.invalidInner.Load())
	od := d.od.stats()
	ch <- prometheus.MustNewConstMetric(descOnDemand, prometheus.GaugeValue, float64(od.Held), d.name)
	ch <- prometheus.MustNewConstMetric(descOnDemandCreated, prometheus.CounterValue, float64(od.Created), d.name)
	ch <- prometheus.MustNewConstMetric(descOnDemandRemoved, prometheus.CounterValue, float64(od.Idle), d.name, "idle")
	ch <- prometheus.MustNewConstMetric(descOnDemandRemoved, prometheus.CounterValue, float64(od.Revoked), d.name, "revoked")
	for _, r := range []struct {
		reason string
		n      uint64
	}{
		{"unknown", od.Unknown}, {"limited_source", od.LimitedSource}, {"limited_global", od.LimitedGlobal},
		{"cookie", od.Cookies}, {"invalid_mac1", od.InvalidMAC1}, {"queue_full", od.QueueFull},
	} {
		ch <- prometheus.MustNewConstMetric(descInitiations, prometheus.CounterValue, float64(r.n), d.name, r.reason)
	}
	ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(od.LookedUp), d.name)
	ch <- prometheus.MustNewConstMetric(descCookieErrors, prometheus.CounterValue, float64(od.CookieErrors), d.name)
	underLoad := 0.0
	if od.UnderLoad {
		underLoad = 1
	}
	ch <- prometheus.MustNewConstMetric(descUnderLoad, prometheus.GaugeValue, underLoad, d.name)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil || link.Attrs().Statistics == nil {
		return
	}
	s := link.Attrs().Statistics
	drop("tun_rx_dropped", s.RxDropped)
	drop("tun_tx_dropped", s.TxDropped)
}
