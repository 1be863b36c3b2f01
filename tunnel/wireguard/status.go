package wireguard

import (
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/tunnel/health"
)

// Status is the device's state for the admin API.
type Status struct {
	Interface  string       `json:"interface"`
	PublicKey  Key          `json:"public_key"`
	ListenPort int          `json:"listen_port"`
	Peers      []PeerStatus `json:"peers"`
	// OnDemand counts the enrolled devices that connect on demand; those
	// connected now are among Peers.
	OnDemand OnDemandStats `json:"on_demand"`
	// Takeover is what the device did to reach its remote users after
	// taking over an HA pair's virtual address (nil: not in a pair; set
	// by the owner of the Takeover).
	Takeover *TakeoverStats `json:"ha_takeover,omitempty"`
}

// PeerStatus is one peer's configuration and counters.
type PeerStatus struct {
	Name          string         `json:"name"` // empty for a peer added through the UAPI socket
	PublicKey     Key            `json:"public_key"`
	Endpoint      string         `json:"endpoint,omitempty"` // where the peer was last seen, ip:port
	AllowedIPs    []netip.Prefix `json:"allowed_ips"`
	LastHandshake time.Time      `json:"last_handshake"` // zero if none
	RxBytes       uint64         `json:"rx_bytes"`
	TxBytes       uint64         `json:"tx_bytes"`
	Email         string         `json:"email,omitempty"`
	// Health is a site-to-site peer's health check (health_check):
	// state, probes, and quality (latency, jitter, loss, loaded latency,
	// grades); nil for a peer without one.
	Health *health.Status `json:"health,omitempty"`
}

// Status reads the device's state: configured peers in configuration order,
// then any others (on-demand peers, or added through the UAPI socket)
// ordered by key.
func (d *Device) Status() Status {
	snap := d.snap.Load()
	st := Status{Interface: d.name, PublicKey: snap.pub, ListenPort: snap.cfg.ListenPort, Peers: []PeerStatus{}, OnDemand: d.od.stats()}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return st
	}
	text, err := d.wg.IpcGet()
	d.mu.Unlock()
	if err != nil {
		d.log.Warn("read device state", "err", err)
		return st
	}
	cur, err := parseIpcGet(text)
	if err != nil {
		d.log.Warn("read device state", "err", err)
		return st
	}
	if cur.listenPort != 0 {
		st.ListenPort = cur.listenPort
	}
	add := func(name, email string, k Key, p *wgPeer) {
		ips := p.allowedIPs
		if ips == nil {
			ips = []netip.Prefix{}
		}
		st.Peers = append(st.Peers, PeerStatus{
			Name: name, PublicKey: k, Endpoint: p.endpoint, AllowedIPs: ips,
			LastHandshake: p.lastHandshake, RxBytes: p.rxBytes, TxBytes: p.txBytes, Email: email,
		})
	}
	for _, cp := range snap.cfg.Peers {
		if p, ok := cur.peers[cp.PublicKey]; ok {
			add(cp.Name, cp.Email, cp.PublicKey, p)
			if hs, ok := d.checks.status(cp.Name); ok {
				st.Peers[len(st.Peers)-1].Health = &hs
			}
			delete(cur.peers, cp.PublicKey)
		}
	}
	held := d.od.held()
	for _, k := range sortedKeys(cur.peers) {
		a := held[k] // on demand, or added through the UAPI socket
		add(a.peer.Name, a.peer.Email, k, cur.peers[k])
	}
	return st
}
