package admin

import "net/http"

// PathRoutes shows the site-to-site routing table.
const PathRoutes = "/api/v1/routes"

// RoutesView answers GET /api/v1/routes: every route edgegw plans
// through its tunnels, one row per route and source, sorted by prefix
// and metric, the rows each prefix uses now marked active.
type RoutesView struct {
	Routes []RouteRow `json:"routes"`
}

// RouteRow is one route. Source is "static" (the routes section),
// "bgp:NEIGHBOR" (learned), "connected" (a tunnel's own subnet),
// "fallback" (the unreachable route under every routed prefix) or
// "bgp guard" (the unreachable route under a BGP import range). Metric
// is Priority plus the tunnel's health penalty (State) and quality
// steering's (Steering "away").
type RouteRow struct {
	Prefix   string `json:"prefix"`
	Via      string `json:"via,omitempty"`
	Source   string `json:"source"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight,omitempty"`
	State    string `json:"state,omitempty"`
	Steering string `json:"steering,omitempty"`
	Metric   int    `json:"metric"`
	Active   bool   `json:"active"`
}

// showRoutes serves GET /api/v1/routes.
func (s *Server) showRoutes(w http.ResponseWriter, r *http.Request) {
	v, err := s.opts.Routes()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "The routing table could not be read: "+err.Error())
		return
	}
	if v.Routes == nil {
		v.Routes = []RouteRow{}
	}
	writeJSON(w, http.StatusOK, v)
}
