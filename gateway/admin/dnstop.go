package admin

import (
	"net/http"
	"strconv"
)

// PathDNSTop shows Gateway DNS's most asked and most blocked names, and
// per user, over the last minutes.
const PathDNSTop = "/api/v1/dns/top"

// showDNSTop serves GET /api/v1/dns/top?n=N&user=EMAIL: n of each table
// (default 10, at most 100); user keeps only that user ("-": the queries
// without an identity).
func (s *Server) showDNSTop(w http.ResponseWriter, r *http.Request) {
	n := 10
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "bad_request", "n: expected a number from 1 to 100, got "+strconv.Quote(v))
			return
		}
	}
	v, ok := s.opts.DNSTop(n, r.URL.Query().Get("user"))
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "Gateway DNS is not running (gateway.dns).")
		return
	}
	writeJSON(w, http.StatusOK, v)
}
