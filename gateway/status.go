package gateway

import (
	"github.com/edgegw/edgegw/tunnel"
	"time"

	"github.com/edgegw/edgegw/gateway/dns"
	"github.com/edgegw/edgegw/gateway/ha"
	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/tunnel/bgp"
	"github.com/edgegw/edgegw/tunnel/site"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// Status is the body of GET /api/v1/status.
type Status struct {
	Version       string              `json:"version"`
	Appliance     string              `json:"appliance"`
	StartedAt     time.Time           `json:"started_at"`
	UptimeSeconds float64             `json:"uptime_seconds"`
	Config        ConfigStatus        `json:"config"`
	Ready         bool                `json:"ready"`
	NotReady      []string            `json:"not_ready,omitempty"`
	WAN           string              `json:"wan"`
	Tunnels       []TunnelStatus      `json:"tunnels"`
	Access        *AccessStatus       `json:"access,omitempty"`
	Logpush       []logpush.JobStatus `json:"logpush,omitempty"`
	DNS           *dns.Status         `json:"dns,omitempty"`
	// HA is this node's role in an active/standby pair, when ha: is set.
	HA *ha.Status `json:"ha,omitempty"`
	// BGP is the speaker's sessions, when bgp: is set.
	BGP *bgp.Status `json:"bgp,omitempty"`
	// Devices is the number of active enrolled devices.
	Devices int `json:"devices"`
	// Routes are the site-to-site routes as installed, `ip route` style.
	Routes []string `json:"routes,omitempty"`
	// Steering is the tunnel quality steering chose for each prefix
	// routed with steering: quality, and why.
	Steering map[string]tunnel.Choice `json:"steering,omitempty"`
	// DroppedByLocal counts GRE packets dropped per local address, by
	// reason (unknown source, wrong key, truncated, …).
	DroppedByLocal map[string]map[string]uint64 `json:"dropped_by_local_address,omitempty"`
}

// AccessStatus is the Access proxy's state.
type AccessStatus struct {
	Listen string `json:"listen"`
	Ready  bool   `json:"ready"`
	Error  string `json:"error,omitempty"`
	// ACME is the certificates access.acme keeps, one per name.
	ACME []ACMECertificate `json:"acme,omitempty"`
}

// ACMECertificate is one name of access.acme. Expires is zero while no
// certificate was obtained: the listener serves its fallback then.
type ACMECertificate struct {
	Domain  string    `json:"domain"`
	Expires time.Time `json:"expires,omitzero"`
}

// ConfigStatus says which file runs and how the last reload went.
type ConfigStatus struct {
	File                 string    `json:"file"`
	LastReload           time.Time `json:"last_reload"`
	LastReloadSuccessful bool      `json:"last_reload_successful"`
	LastReloadError      string    `json:"last_reload_error,omitempty"`
}

// TunnelStatus is one tunnel of any kind.
type TunnelStatus struct {
	Name      string             `json:"name"`
	Kind      string             `json:"kind"`
	State     string             `json:"state"`
	WireGuard *wireguard.Status  `json:"wireguard,omitempty"`
	Site      *site.TunnelStatus `json:"site,omitempty"`
}

// Status reports the running gateway.
func (g *Gateway) Status() Status {
	notReady := g.notReady()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := Status{
		Version:       g.opts.Version,
		Appliance:     g.plan.Config.Appliance.Name,
		StartedAt:     g.started,
		UptimeSeconds: time.Since(g.started).Seconds(),
		Config: ConfigStatus{
			File:                 g.plan.Config.File,
			LastReload:           g.reloadAt,
			LastReloadSuccessful: g.reloadOK,
			LastReloadError:      g.reloadE,
		},
		Ready:    len(notReady) == 0,
		NotReady: notReady,
		Tunnels:  []TunnelStatus{},
		WAN:      g.plan.WAN,
	}
	for _, p := range g.parts {
		p.status(&s)
	}
	return s
}
