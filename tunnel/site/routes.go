package site

import (
	"net/netip"

	"github.com/edgegw/edgegw/tunnel"
)

// Table is the routing table the manager plans now, for `edgegw routes`:
// configured and learned routes with their sources and the health and
// steering that make their metrics ([tunnel.Table]), and each tunnel's
// own subnet, connected on its device.
func (m *Manager) Table() []tunnel.TableRoute {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return []tunnel.TableRoute{}
	}
	rows := tunnel.Table(m.cfg.Routes, m.learned.BySource(), m.states(), m.steer)
	connected := func(name string, p netip.Prefix) {
		rows = append(rows, tunnel.TableRoute{Prefix: p.Masked(), Via: name, Source: tunnel.SourceConnected})
	}
	for _, c := range m.cfg.GRE {
		connected(c.Name, c.Address)
	}
	for _, c := range m.cfg.IPsec {
		connected(c.Name, c.Address)
	}
	tunnel.SettleTable(rows)
	return rows
}
