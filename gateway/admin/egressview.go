package admin

import (
	"net/http"
	"strconv"
)

// PathEgress shows who leaves from where: GET /api/v1/egress.
const PathEgress = "/api/v1/egress"

// EgressView answers GET /api/v1/egress: each egress address with where it
// geolocates, the policies that choose it and the identities mapped to it,
// with what connection tracking holds for it now; the policies with their
// connection counters; and each identity address with the egress it
// leaves from.
type EgressView struct {
	Addresses  []EgressAddress  `json:"addresses"`
	Policies   []EgressPolicy   `json:"policies"`
	Identities []EgressIdentity `json:"identities"`
	// GeofeedPath is where the admin listener serves the RFC 8805
	// geofeed without authentication; empty: it is not served.
	GeofeedPath string `json:"geofeed_path,omitempty"`
	// FlowsError says why connection tracking could not be read; the
	// active counts are then zero.
	FlowsError string `json:"flows_error,omitempty"`
}

// EgressAddress is one egress address.
type EgressAddress struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Prefix    string `json:"prefix"` // what the geofeed publishes
	Interface string `json:"interface"`
	Country   string `json:"country"`
	Region    string `json:"region,omitempty"`
	City      string `json:"city,omitempty"`
	// Policies are the ids of the policies that choose this address.
	Policies []string `json:"policies"`
	// Identities are the emails whose traffic without a destination
	// condition leaves from here (the policies evaluated for them).
	Identities []string `json:"identities"`
	// ConnectionsTotal is the connections the policies gave this address
	// since the ruleset was applied (the NAT chain's counters).
	ConnectionsTotal uint64 `json:"connections_total"`
	EgressFlows
}

// EgressFlows is what connection tracking holds now for an address or an
// identity: the connections translated to the egress address and the
// bytes and packets they carried each way (out: to the internet). Bytes
// and packets count from when flow accounting was turned on.
type EgressFlows struct {
	ActiveConnections int    `json:"active_connections"`
	BytesOut          uint64 `json:"bytes_out"`
	BytesIn           uint64 `json:"bytes_in"`
	PacketsOut        uint64 `json:"packets_out"`
	PacketsIn         uint64 `json:"packets_in"`
}

// EgressPolicy is one egress policy, in evaluation order (first match
// wins).
type EgressPolicy struct {
	ID         string `json:"id"`
	Expression string `json:"expression"`
	Egress     string `json:"egress"`
	// Connections counts the connections it gave its address since the
	// ruleset was applied.
	Connections uint64 `json:"connections"`
}

// EgressIdentity is one address of an identity (a WireGuard peer or an
// enrolled device) and where it leaves from.
type EgressIdentity struct {
	Email  string `json:"email"`
	Source string `json:"source"` // the identity's tunnel address or prefix
	// Egress is the name of the address its traffic without a
	// destination condition leaves from, and Policy the policy that chose
	// it; both empty: masqueraded to the WAN address.
	Egress        string `json:"egress"`
	EgressAddress string `json:"egress_address,omitempty"`
	Country       string `json:"country,omitempty"`
	Policy        string `json:"policy,omitempty"`
	// Active are the connections of this source tracked now, by the
	// egress address they were translated to (a policy with destination
	// conditions can send some elsewhere than Egress).
	Active []EgressActive `json:"active"`
}

// EgressActive is the tracked connections of one source through one
// egress address.
type EgressActive struct {
	EgressAddress string `json:"egress_address"`
	EgressFlows
}

// showEgress serves GET /api/v1/egress.
func (s *Server) showEgress(w http.ResponseWriter, r *http.Request) {
	v, err := s.opts.Egress()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "The egress counters could not be read: "+err.Error())
		return
	}
	if v.Addresses == nil {
		v.Addresses = []EgressAddress{}
	}
	if v.Policies == nil {
		v.Policies = []EgressPolicy{}
	}
	if v.Identities == nil {
		v.Identities = []EgressIdentity{}
	}
	writeJSON(w, http.StatusOK, v)
}

// serveGeofeed answers GET or HEAD of the configured geofeed path with
// the RFC 8805 CSV, open to anyone and for any Host: a geofeed URL is
// fetched by geolocation providers under the operator's public name, and
// its content is what the gateway publishes anyway (no DNS-rebinding
// risk). It reports whether r was the geofeed's.
func (s *Server) serveGeofeed(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.Geofeed == nil {
		return false
	}
	path, body := s.opts.Geofeed()
	if path == "" || r.URL.Path != path {
		return false
	}
	s.results.WithLabelValues(resultOK).Inc()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "The geofeed is read with GET.")
		return true
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
	return true
}
