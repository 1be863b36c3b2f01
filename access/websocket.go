package access

import (
	"context"
	"net/http"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// wsTracker holds the upgraded connections (WebSockets) proxied for each
// user, so that a logout closes them at once rather than when the client
// next reconnects. Expiry needs no tracking: each one's context ends when
// its session does.
type wsTracker struct {
	mu sync.Mutex
	m  map[string]map[*wsConn]struct{} // by userKey
}

type wsConn struct {
	authMillis int64 // the session's login time, as compared with logouts
	cancel     context.CancelFunc
}

func isUpgrade(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

func (t *wsTracker) add(key string, c *wsConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]map[*wsConn]struct{}{}
	}
	if t.m[key] == nil {
		t.m[key] = map[*wsConn]struct{}{}
	}
	t.m[key][c] = struct{}{}
}

func (t *wsTracker) remove(key string, c *wsConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m[key], c)
	if len(t.m[key]) == 0 {
		delete(t.m, key)
	}
}

// revoke closes the user's connections whose session began at or before
// atMillis, and says how many.
func (t *wsTracker) revoke(key string, atMillis int64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for c := range t.m[key] {
		if c.authMillis <= atMillis {
			c.cancel()
			delete(t.m[key], c)
			n++
		}
	}
	if len(t.m[key]) == 0 {
		delete(t.m, key)
	}
	return n
}

// proxyUpgrade proxies an upgrade request for a session: the connection
// lives at most until the session expires and ends at the user's logout.
// httputil.ReverseProxy closes both sides of an upgraded connection when
// the request's context ends.
func (s *Server) proxyUpgrade(q *request, sess *cachedSession) {
	cl := sess.claims
	ctx, cancel := context.WithTimeout(q.r.Context(), cl.Expiry.Time().Sub(s.now()))
	defer cancel()
	key := userKey(cl.IdP, cl.Subject)
	c := &wsConn{authMillis: cl.AuthMillis, cancel: cancel}
	s.ws.add(key, c)
	defer s.ws.remove(key, c)
	// Also by address, for EndSessions (a SCIM deactivation).
	ekey := emailKey(cl.Email)
	s.ws.add(ekey, c)
	defer s.ws.remove(ekey, c)
	q.app.proxy.ServeHTTP(q.w, q.r.WithContext(ctx))
	if ctx.Err() == context.DeadlineExceeded {
		s.metrics.wsClosed.WithLabelValues("expired").Inc()
	}
}
