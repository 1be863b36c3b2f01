package access

import (
	"strings"
)

// emailKey is the revocation key of a user by email address, beside the
// per-login userKey (provider and subject): an identity provider's SCIM
// deactivation names users by address, and a user may have signed in
// through any provider.
func emailKey(email string) string { return "email\x00" + strings.ToLower(email) }

// EndSessions ends, at once, every Access session and open WebSocket of
// the users with these email addresses (any provider): session cookies
// and tokens issued before now are refused from the next request on, and
// kept refused across restarts (logouts.json), as a logout would. A new
// sign-in works again, which a deactivated user can no longer do at the
// provider. It returns how many WebSockets it closed.
func (s *Server) EndSessions(emails []string) int {
	now := s.now()
	closed := 0
	for _, e := range emails {
		if e == "" {
			continue
		}
		key := emailKey(e)
		s.revoked.revoke(key, now)
		closed += s.ws.revoke(key, now.UnixMilli())
	}
	s.saveRevocations()
	s.nudgeLogouts()
	if closed > 0 {
		s.metrics.wsClosed.WithLabelValues("deprovisioned").Add(float64(closed))
	}
	s.log.Info("access sessions ended: the user was deactivated or deleted at the identity provider", "emails", emails, "websockets", closed)
	return closed
}
