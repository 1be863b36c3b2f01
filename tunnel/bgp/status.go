package bgp

import (
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/prometheus/client_golang/prometheus"
)

// Status is the speaker's state for /api/v1/status.
type Status struct {
	ASN       uint32           `json:"asn"`
	RouterID  string           `json:"router_id"`
	Neighbors []NeighborStatus `json:"neighbors"`
}

// NeighborStatus is one session. Received counts the prefixes in the
// neighbor's Adj-RIB-In; Accepted those the import policy took (routes
// through Tunnel when it is set); Advertised what edgegw sends it.
type NeighborStatus struct {
	Name     string     `json:"name"`
	Address  netip.Addr `json:"address"`
	RemoteAS uint32     `json:"remote_as"`
	Tunnel   string     `json:"tunnel,omitempty"`
	State    string     `json:"state"` // idle, connect, active, opensent, openconfirm, established
	// Shutdown says why edgegw holds the session down: "max_prefixes"
	// after the neighbor sent more than import.max_prefixes.
	Shutdown   string    `json:"shutdown,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	Received   int       `json:"received"`
	Accepted   int       `json:"accepted"`
	Advertised int       `json:"advertised"`
	Flaps      int       `json:"flaps"`
}

// Status reads the current state of every configured neighbor.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{ASN: m.cfg.ASN, Neighbors: []NeighborStatus{}}
	if m.cfg.RouterID.IsValid() {
		st.RouterID = m.cfg.RouterID.String()
	}
	peers := map[netip.Addr]*api.Peer{}
	if m.srv != nil {
		m.srv.ListPeer(m.ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
				peers[a] = p
			}
		})
	}
	for _, n := range m.cfg.Neighbors {
		ns := NeighborStatus{Name: n.Name, Address: n.Address, RemoteAS: n.RemoteAS, Tunnel: n.Tunnel, State: "idle",
			Received: m.counted[n.Name].received, Accepted: m.counted[n.Name].accepted}
		if p := peers[n.Address]; p != nil {
			s := p.GetState()
			ns.State = strings.ToLower(strings.TrimPrefix(s.GetSessionState().String(), "SESSION_STATE_"))
			ns.Flaps = int(s.GetFlops())
			if s.GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT {
				ns.Shutdown = "max_prefixes"
			}
			if up := p.GetTimers().GetState().GetUptime(); up != nil && s.GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED {
				ns.Since = up.AsTime()
			}
			for _, as := range p.GetAfiSafis() {
				ns.Advertised += int(as.GetState().GetAdvertised())
			}
		}
		st.Neighbors = append(st.Neighbors, ns)
	}
	return st
}

var (
	upDesc = prometheus.NewDesc("edgegw_bgp_session_up",
		"1 if the BGP session with the neighbor is established.", []string{"neighbor"}, nil)
	prefixesDesc = prometheus.NewDesc("edgegw_bgp_prefixes",
		"Prefixes per neighbor: received (its Adj-RIB-In), accepted (by the import policy), advertised (to it).",
		[]string{"neighbor", "kind"}, nil)
	flapsDesc = prometheus.NewDesc("edgegw_bgp_session_flaps_total",
		"Times the session with the neighbor left the established state.", []string{"neighbor"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- upDesc
	ch <- prefixesDesc
	ch <- flapsDesc
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	for _, n := range m.Status().Neighbors {
		up := 0.0
		if n.State == "established" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up, n.Name)
		ch <- prometheus.MustNewConstMetric(prefixesDesc, prometheus.GaugeValue, float64(n.Received), n.Name, "received")
		ch <- prometheus.MustNewConstMetric(prefixesDesc, prometheus.GaugeValue, float64(n.Accepted), n.Name, "accepted")
		ch <- prometheus.MustNewConstMetric(prefixesDesc, prometheus.GaugeValue, float64(n.Advertised), n.Name, "advertised")
		ch <- prometheus.MustNewConstMetric(flapsDesc, prometheus.CounterValue, float64(n.Flaps), n.Name)
	}
}
