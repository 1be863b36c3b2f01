package access

import (
	"context"
	"time"
)

// LogoutStore shares logouts between the appliances that serve the same
// users with the same cookie key (an HA pair): a user who logged out, or
// whom SCIM deactivated, on one node must not be let in by the other after
// a failover. The gateway's is the device registry both nodes share.
type LogoutStore interface {
	// Logouts returns every appliance's logouts: revocation key -> Unix
	// ms. The map is read only.
	Logouts() map[string]int64
	// RecordLogouts records logouts for every appliance; rows older than
	// forgetBefore may be dropped.
	RecordLogouts(ctx context.Context, logouts map[string]int64, forgetBefore time.Time) error
}

// logoutShareInterval is how often the server compares its logouts with
// the store's; a logout here wakes it at once.
const logoutShareInterval = 500 * time.Millisecond

// shareLogouts keeps this server's logouts and the store's in step until
// ctx ends. Run owns it.
func (s *Server) shareLogouts(ctx context.Context, store LogoutStore) {
	t := time.NewTicker(logoutShareInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.logoutNudge:
		}
		err := s.syncLogouts(ctx, store)
		switch {
		case err != nil && !failing:
			s.log.Error("sharing logouts with the other appliances failed; retrying (they are in force here)", "err", err)
		case err == nil && failing:
			s.log.Info("sharing logouts works again")
		}
		failing = err != nil
	}
}

// syncLogouts takes the store's logouts that are newer than this server's
// (and closes the WebSockets they end), and writes this server's that the
// store lacks. A logout is in force here from the moment it is made; the
// store only carries it to the other appliances.
func (s *Server) syncLogouts(ctx context.Context, store LogoutStore) error {
	shared := store.Logouts()
	var pulled, push map[string]int64
	s.revoked.mu.Lock()
	for k, at := range shared {
		if s.revoked.m[k] < at {
			if s.revoked.m == nil {
				s.revoked.m = map[string]int64{}
			}
			s.revoked.m[k] = at
			if pulled == nil {
				pulled = map[string]int64{}
			}
			pulled[k] = at
		}
	}
	for k, at := range s.revoked.m {
		if shared[k] < at {
			if push == nil {
				push = map[string]int64{}
			}
			push[k] = at
		}
	}
	s.revoked.mu.Unlock()
	if len(pulled) > 0 {
		closed := 0
		for k, at := range pulled {
			closed += s.ws.revoke(k, at)
		}
		if closed > 0 {
			s.metrics.wsClosed.WithLabelValues("logout").Add(float64(closed))
		}
		s.saveRevocations() // kept across a restart with the store down
		s.log.Info("logouts from another appliance are in force", "users", len(pulled), "websockets", closed)
	}
	if len(push) == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return store.RecordLogouts(wctx, push, s.now().Add(-maxSessionDuration))
}

// revokedAt reports whether a token issued at authMillis to the user with
// key was ended by a logout, here or on another appliance.
func (s *Server) revokedAt(key string, authMillis int64) bool {
	if s.revoked.revoked(key, authMillis) {
		return true
	}
	if st := s.opts.Logouts; st != nil {
		if at, ok := st.Logouts()[key]; ok && authMillis <= at {
			return true
		}
	}
	return false
}

// nudgeLogouts wakes shareLogouts after a logout here.
func (s *Server) nudgeLogouts() {
	select {
	case s.logoutNudge <- struct{}{}:
	default:
	}
}
