package admin

import "net/http"

// PathFirewall shows the firewall's rules with their hit counters.
const PathFirewall = "/api/v1/firewall"

// FirewallView answers GET /api/v1/firewall: the rules in the order they
// are evaluated (first match wins) with the kernel's counters, and the
// lists they use.
type FirewallView struct {
	Rules []FirewallRule `json:"rules"`
	Lists []FirewallList `json:"lists"`
}

// FirewallRule is one rule and what it matched since it was applied.
type FirewallRule struct {
	ID         string `json:"id"`
	Action     string `json:"action"`
	Expression string `json:"expression"`
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
}

// FirewallList is one named list of the firewall section.
type FirewallList struct {
	Name    string `json:"name"`
	Entries int    `json:"entries"`
}

// showFirewall serves GET /api/v1/firewall.
func (s *Server) showFirewall(w http.ResponseWriter, r *http.Request) {
	v, err := s.opts.Firewall()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "The firewall's counters could not be read: "+err.Error())
		return
	}
	if v.Rules == nil {
		v.Rules = []FirewallRule{}
	}
	if v.Lists == nil {
		v.Lists = []FirewallList{}
	}
	writeJSON(w, http.StatusOK, v)
}
