package admin

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// PathAudit lists the most recent audit events, newest first.
const PathAudit = "/api/v1/audit"

// auditKeep is how many audit events the admin server remembers for
// GET /api/v1/audit (the console's Audit page). The full trail goes to
// the audit_logs Logpush datasets; this is the recent past, bounded.
const auditKeep = 1000

// AuditEntry is one audit event as GET /api/v1/audit shows it: who did
// what and when, without the resource's values.
type AuditEntry struct {
	ID           string     `json:"id"`
	When         time.Time  `json:"when"`
	Action       string     `json:"action"`
	Result       bool       `json:"result"`
	Error        string     `json:"error,omitempty"`
	Actor        AuditActor `json:"actor"`
	ResourceType string     `json:"resource_type"`
	ResourceID   string     `json:"resource_id"`
	Description  string     `json:"description"`
}

// AuditActor is an Event's Actor in JSON.
type AuditActor struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Context   string `json:"context"`
	Role      Role   `json:"role,omitempty"`
	IP        string `json:"ip,omitempty"`
	Interface string `json:"interface"`
}

// auditRing holds the last auditKeep events.
type auditRing struct {
	mu   sync.Mutex
	buf  []AuditEntry
	next int // where the next entry goes once buf is full
}

func (a *auditRing) add(e Event) {
	x := AuditEntry{
		ID: e.ID, When: e.When, Action: e.Action, Result: e.Result, Error: e.Error,
		Actor:        AuditActor{Type: e.Actor.Type, ID: e.Actor.ID, Context: e.Actor.Context, Role: e.Actor.Role, IP: e.Actor.IP, Interface: e.Actor.Interface},
		ResourceType: e.ResourceType, ResourceID: e.ResourceID, Description: e.Description,
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.buf) < auditKeep {
		a.buf = append(a.buf, x)
		return
	}
	a.buf[a.next] = x
	a.next = (a.next + 1) % auditKeep
}

// recent returns up to n entries, newest first.
func (a *auditRing) recent(n int) []AuditEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	n = min(n, len(a.buf))
	out := make([]AuditEntry, 0, n)
	// The newest is just before next (or the last one while filling).
	i := len(a.buf) - 1
	if len(a.buf) == auditKeep {
		i = (a.next - 1 + auditKeep) % auditKeep
	}
	for range n {
		out = append(out, a.buf[i])
		i = (i - 1 + len(a.buf)) % len(a.buf)
	}
	return out
}

// listAudit serves GET /api/v1/audit?limit=N (default 100, at most
// auditKeep): the recent audit events, newest first. Viewers may read it,
// as they may read the rest.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit: expected a positive number")
			return
		}
		limit = min(n, auditKeep)
	}
	writeJSON(w, http.StatusOK, s.auditLog.recent(limit))
}
