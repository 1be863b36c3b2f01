//go:build linux

package gre

import "net/netip"

// Status is a tunnel's configuration and counters for the admin API.
type Status struct {
	Name      string       `json:"name"`
	Backend   Backend      `json:"backend"` // "kernel" or "userspace"
	Local     netip.Addr   `json:"local"`
	Remote    netip.Addr   `json:"remote"`
	Address   netip.Prefix `json:"address"`
	MTU       int          `json:"mtu"`
	Key       *uint32      `json:"key,omitempty"`
	Sequence  bool         `json:"sequence"`
	RxPackets uint64       `json:"rx_packets"`
	RxBytes   uint64       `json:"rx_bytes"`
	// RxCoalesced counts the received packets that the NIC's GRO had
	// coalesced from several segments (passed on as one TSO packet).
	RxCoalesced uint64            `json:"rx_coalesced"`
	TxPackets   uint64            `json:"tx_packets"`
	TxBytes     uint64            `json:"tx_bytes"`
	Drops       map[string]uint64 `json:"drops"`
}

// Status reads the tunnel's counters.
func (t *Tunnel) Status() Status {
	s := Status{
		Name: t.cfg.Name, Local: t.cfg.Local, Remote: t.cfg.Remote, Address: t.cfg.Address,
		MTU: t.cfg.MTU, Key: t.cfg.Key, Sequence: t.cfg.Sequence,
		RxPackets: t.rxPackets.Load(), RxBytes: t.rxBytes.Load(), RxCoalesced: t.rxCoalesced.Load(),
		TxPackets: t.txPackets.Load(), TxBytes: t.txBytes.Load(),
		Drops: map[string]uint64{},
	}
	s.Backend = t.Backend()
	if t.kern != nil {
		c := t.kernelCounters()
		s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes, s.Drops = c.rxPackets, c.rxBytes, c.txPackets, c.txBytes, c.drops
		return s
	}
	for i, name := range tunnelDropNames {
		s.Drops[name] = t.drops[i].Load()
	}
	return s
}
