package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// PathStatusEvents streams the status as server-sent events.
const PathStatusEvents = "/api/v1/status/events"

// Stream timing defaults.
const (
	// defaultStreamEvery is how often a status stream sends the status.
	defaultStreamEvery = 2 * time.Second
	// streamMaxAge ends a stream after this long; the browser's
	// EventSource reconnects, and the new request is authenticated anew.
	streamMaxAge = 5 * time.Minute
)

type closingKey struct{}

// closingContext gives a listener's requests its closing channel, closed
// when the listener shuts down: a stream ends then, so that the shutdown
// need not wait for it. (Not a cancelled context: a reload asked on a
// listener that moves is still answered on it.)
func closingContext(ctx context.Context, closing <-chan struct{}) context.Context {
	return context.WithValue(ctx, closingKey{}, closing)
}

// statusEvents serves GET /api/v1/status/events: the status at once and
// then every StreamEvery as an SSE "status" event, for the console's live
// pages. The request's credentials are checked again before every event,
// so a logout, a revoked token or policies that no longer allow the user
// end the stream within one interval.
func (s *Server) statusEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	every := s.opts.StreamEvery
	if every <= 0 {
		every = defaultStreamEvery
	}
	closing, _ := r.Context().Value(closingKey{}).(<-chan struct{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	deadline := time.NewTimer(streamMaxAge)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	// Tell the browser how soon to come back after the stream ends.
	fmt.Fprintf(w, "retry: %d\n\n", every.Milliseconds())
	for {
		b, err := json.Marshal(s.opts.Status())
		if err != nil {
			s.log.Error("admin: status stream", "err", err)
			return
		}
		fmt.Fprintf(w, "event: status\ndata: %s\n\n", b)
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-closing:
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
		if !s.stillAllowed(r) {
			return
		}
	}
}

// stillAllowed checks a streaming request's credentials again: its
// console session, or its bearer token. The socket's root peer stays.
func (s *Server) stillAllowed(r *http.Request) bool {
	a, _ := ActorFrom(r.Context())
	switch a.Context {
	case "unix_socket":
		return true
	case "console_session":
		_, err := s.console.Session(r)
		return err == nil
	}
	_, ok := s.bearer(r)
	return ok
}
