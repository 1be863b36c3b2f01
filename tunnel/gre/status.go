//go:build linux

package gre

import "net/netip"

// Status is a tunnel's configuration and counters for the admin API.
type Status struct {
	Name      string            `json:"name"`
	Local     netip.Addr        `json:"local"`
	Remote    netip.Addr        `json:"remote"`
	Address   netip.Prefix      `json:"address"`
	MTU       int               `json:"mtu"`
	Key       *uint32           `json:"key,omitempty"`
	Sequence  bool              `json:"sequence"`
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	Drops     map[string]uint64 `json:"drops"`
}

// Status reads the tunnel's counters.
func (t *Tunnel) Status() Status {
	s := Status{
		Name: t.cfg.Name, Local: t.cfg.Local, Remote: t.cfg.Remote, Address: t.cfg.Address,
		MTU: t.cfg.MTU, Key: t.cfg.Key, Sequence: t.cfg.Sequence,
		RxPackets: t.rxPackets.Load(), RxBytes: t.rxBytes.Load(),
		TxPackets: t.txPackets.Load(), TxBytes: t.txBytes.Load(),
		Drops: map[string]uint64{},
	}
	for i, name := range tunnelDropNames {
		s.Drops[name] = t.drops[i].Load()
	}
	return s
}
