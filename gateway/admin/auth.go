package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/console"
)

type peerKey struct{}

// peerContext records the socket peer's credentials (SO_PEERCRED: the
// process that connected) in the connection's context.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil || err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, *cred)
}

// handler is what one listener serves: the checks of its kind, then the
// routes.
func (s *Server) handler(l *listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if l.unix {
			s.serveUnix(w, r)
			return
		}
		s.serveTCP(l, w, r)
	})
}

// serveUnix serves the socket: root only, as an admin. The socket's mode
// already keeps other users out; the peer check holds even if someone
// loosens it.
func (s *Server) serveUnix(w http.ResponseWriter, r *http.Request) {
	cred, ok := r.Context().Value(peerKey{}).(unix.Ucred)
	if !ok || cred.Uid != 0 {
		uid := "unknown"
		if ok {
			uid = fmt.Sprint(cred.Uid)
		}
		s.refused(resultForbidden, "admin socket: refused a peer that is not root", "uid", uid, "pid", cred.Pid, "path", r.URL.Path)
		writeError(w, http.StatusForbidden, "forbidden", "Only root may use the admin socket.")
		return
	}
	s.results.WithLabelValues(resultOK).Inc()
	a := Actor{Type: "user", ID: "uid:0", Context: "unix_socket", Role: RoleAdmin, Interface: "CLI"}
	s.mux.ServeHTTP(w, r.WithContext(withActor(r.Context(), a)))
}

// serveTCP serves a TCP listener: the Host header first, then the path's
// rule: health open, metrics per admin.metrics, the console's pages by
// their own session check, everything else a token or a console session.
func (s *Server) serveTCP(l *listener, w http.ResponseWriter, r *http.Request) {
	if s.serveGeofeed(w, r) { // public, for any Host: see serveGeofeed
		return
	}
	pol := s.policy.Load()
	remote := remoteAddr(r)
	if !hostAllowed(r.Host, localAddr(r), pol.hosts) {
		s.refused(resultMisdirected, "admin: refused a request whose Host header does not name this listener (DNS rebinding?)",
			"host", r.Host, "remote", remote, "path", r.URL.Path)
		writeError(w, http.StatusMisdirectedRequest, "misdirected", "This Host is not served here: use the listener's address, localhost, or a name in admin.hosts.")
		return
	}
	switch {
	case r.URL.Path == "/":
		s.results.WithLabelValues(resultOK).Inc()
		http.Redirect(w, r, console.Prefix, http.StatusFound)
		return
	case strings.HasPrefix(r.URL.Path, console.Prefix):
		// The console authenticates its own pages (login is open).
		s.results.WithLabelValues(resultOK).Inc()
		s.console.ServeHTTP(w, r)
		return
	case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
		s.results.WithLabelValues(resultOK).Inc()
		s.mux.ServeHTTP(w, r)
		return
	case r.URL.Path == "/metrics":
		if l.loopback || slices.ContainsFunc(pol.metricsAllow, func(p netip.Prefix) bool { return p.Contains(remote) }) {
			s.results.WithLabelValues(resultOK).Inc()
			s.mux.ServeHTTP(w, r)
			return
		}
		if !pol.metricsToken {
			s.refused(resultForbidden, "admin: refused a metrics scrape (not in admin.metrics.allow, and admin.metrics.token is off)", "remote", remote)
			writeError(w, http.StatusForbidden, "forbidden", "/metrics is not open to this address: see admin.metrics.")
			return
		}
	}
	var a Actor
	if r.Header.Get("Authorization") == "" && console.HasSession(r) {
		id, err := s.console.Session(r)
		if err != nil {
			if errors.Is(err, console.ErrCSRF) {
				s.refused(resultForbidden, "admin: refused a console change without its CSRF token or from another site",
					"remote", remote, "method", r.Method, "path", r.URL.Path, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
				writeError(w, http.StatusForbidden, "csrf", "Refused: a change from the console needs its CSRF token and must come from the console's own page.")
				return
			}
			s.refused(resultUnauthenticated, "admin: refused a console request without a live session", "remote", remote, "path", r.URL.Path, "reason", err.Error())
			writeError(w, http.StatusUnauthorized, "unauthenticated", "The console session ended ("+err.Error()+"): log in again.")
			return
		}
		a = consoleActor(id, r)
	} else {
		tok, ok := s.bearer(r)
		if !ok {
			return401(w)
			s.refused(resultUnauthenticated, "admin: refused a request without a valid token", "remote", remote, "method", r.Method, "path", r.URL.Path,
				"token_given", r.Header.Get("Authorization") != "")
			return
		}
		a = Actor{Type: "user", ID: tok.Name, Context: "api_token", Role: tok.Role, IP: remote.String(), Interface: "API"}
	}
	if a.Role != RoleAdmin && r.Method != http.MethodGet && r.Method != http.MethodHead && !readOnlyPost(r) {
		s.refused(resultForbidden, "admin: refused a change asked with a viewer token", "token", a.ID, "remote", remote, "method", r.Method, "path", r.URL.Path)
		if act, ok := actionOf(r); ok {
			s.Audit(Event{
				Action: act.action, Result: false, Actor: a, ResourceType: act.resourceType, ResourceID: act.resourceID,
				Error:       "forbidden: the token's role is viewer",
				Description: fmt.Sprintf("%s %s refused: token %q is a viewer", act.action, act.resourceType, a.ID),
				Metadata:    map[string]any{"method": r.Method, "path": r.URL.Path, "status": http.StatusForbidden},
			})
		}
		writeError(w, http.StatusForbidden, "forbidden", "This token's role is viewer: it may only read (GET).")
		return
	}
	s.results.WithLabelValues(resultOK).Inc()
	s.mux.ServeHTTP(w, r.WithContext(withActor(r.Context(), a)))
}

func return401(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="edgegw admin"`)
	writeError(w, http.StatusUnauthorized, "unauthenticated", "A valid admin token is required: Authorization: Bearer TOKEN (edgegw admin token create).")
}

// bearer authenticates the request's Authorization header.
func (s *Server) bearer(r *http.Request) (Token, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return Token{}, false
	}
	scheme, secret, ok := strings.Cut(h[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Token{}, false
	}
	return s.tokens.authenticate(strings.TrimSpace(secret))
}

// refused counts a refusal and logs it, at most burst lines a second.
func (s *Server) refused(result, msg string, attrs ...any) {
	s.results.WithLabelValues(result).Inc()
	ok, suppressed := s.denied.allow(s.opts.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed_before", suppressed)
	}
	s.log.Warn(msg, attrs...)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func localAddr(r *http.Request) netip.Addr {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// action is an audited action a request asks for.
type action struct {
	action, resourceType, resourceID string
}

// actionOf names the audited action of a request, if it asks for one.
func actionOf(r *http.Request) (action, bool) {
	if r.Method != http.MethodPost && r.Method != http.MethodDelete {
		return action{}, false
	}
	p := r.URL.Path
	if p == PathReload {
		return action{"reload", "configuration", ""}, true
	}
	if p == PathTokens {
		return action{"create", "admin_token", ""}, true
	}
	if p == PathConfigApply {
		return action{"apply", "configuration", ""}, true
	}
	if rest, ok := strings.CutPrefix(p, PathConfigHistory+"/"); ok {
		if id, ok := strings.CutSuffix(rest, "/rollback"); ok && id != "" && !strings.Contains(id, "/") {
			return action{"rollback", "configuration", id}, true
		}
	}
	for prefix, typ := range map[string]string{PathTokens + "/": "admin_token", PathDevices + "/": "device"} {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			if id, ok := strings.CutSuffix(rest, "/revoke"); ok && id != "" && !strings.Contains(id, "/") {
				return action{"revoke", typ, id}, true
			}
			if id, ok := strings.CutSuffix(rest, "/approve"); ok && typ == "device" && id != "" && !strings.Contains(id, "/") {
				return action{"approve", typ, id}, true
			}
		}
	}
	return action{}, false
}

// logLimiter lets through at most burst lines, refilled one per every, so
// a flood of bad tokens cannot flood the log; the metric counts them all.
type logLimiter struct {
	every time.Duration
	burst int

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were suppressed
// since the last one logged.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = float64(l.burst)
	} else {
		l.tokens = min(float64(l.burst), l.tokens+float64(now.Sub(l.last))/float64(l.every))
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
