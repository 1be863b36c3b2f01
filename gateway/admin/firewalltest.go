package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// PathFirewallTest answers which rule a described packet meets.
const PathFirewallTest = "/api/v1/firewall/test"

// FirewallTestRequest is the body of POST /api/v1/firewall/test: a packet
// in the words of `edgegw firewall test`, field == value conditions
// joined by and.
type FirewallTestRequest struct {
	Packet string `json:"packet"`
}

// FirewallTestResult answers POST /api/v1/firewall/test: the packet as
// completed (ingress aliases resolved, the identity behind its source),
// the rule it meets first, if any, and the verdict.
//
// A description that does not parse is answered as a check is (200, with
// Error set and nothing else), like POST /api/v1/config/check's problems:
// the question was well formed, the packet was not.
type FirewallTestResult struct {
	Error   string            `json:"error,omitempty"`
	Packet  string            `json:"packet,omitempty"`
	Rule    *FirewallTestRule `json:"rule,omitempty"`
	Verdict string            `json:"verdict,omitempty"`
}

// FirewallTestRule is the rule a tested packet met.
type FirewallTestRule struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
	// Position is the rule's 1-based place in firewall.rules.
	Position int    `json:"position"`
	Action   string `json:"action"`
	Rate     string `json:"rate,omitempty"`
}

// ErrBadPacket wraps a packet description that does not parse: an answer
// to show, not the gateway's failure.
var ErrBadPacket = errors.New("packet")

// readOnlyPost reports whether r is a POST that changes nothing, which a
// viewer may make: it only carries its question in a body.
func readOnlyPost(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == PathFirewallTest
}

// testFirewall serves POST /api/v1/firewall/test (viewers too: it
// evaluates the running rules, as `edgegw firewall test` does, and
// changes nothing).
func (s *Server) testFirewall(w http.ResponseWriter, r *http.Request) {
	var req FirewallTestRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 8192))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Packet == "" {
		msg := "Expected {\"packet\": \"ip.src == 10.0.0.9 and tcp.dstport == 22\"}"
		if err != nil {
			msg += ": " + err.Error()
		}
		writeError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	res, err := s.opts.FirewallTest(req.Packet)
	switch {
	case errors.Is(err, ErrBadPacket):
		writeJSON(w, http.StatusOK, FirewallTestResult{Error: err.Error()})
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "The firewall could not be tested: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}
