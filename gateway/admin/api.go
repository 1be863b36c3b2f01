package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// CreateTokenRequest is the body of POST /api/v1/tokens.
type CreateTokenRequest struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// CreatedToken answers POST /api/v1/tokens: the token's secret, shown this
// once.
type CreatedToken struct {
	Token
	Secret string `json:"token"`
}

// ReloadResult answers POST /api/v1/reload.
type ReloadResult struct {
	Reloaded bool   `json:"reloaded"`
	Error    string `json:"error,omitempty"`
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	if s.opts.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Metrics, promhttp.HandlerOpts{Registry: s.opts.Metrics}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reasons := s.opts.Ready(); len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:")
			for _, r := range reasons {
				fmt.Fprintln(w, "  "+r)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if s.opts.Status != nil {
		mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, s.opts.Status())
		})
		mux.HandleFunc("GET "+PathStatusEvents, s.statusEvents)
	}
	if s.opts.Logpush != nil {
		mux.HandleFunc("GET "+PathLogpush, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, s.opts.Logpush())
		})
	}
	if s.opts.Routes != nil {
		mux.HandleFunc("GET "+PathRoutes, s.showRoutes)
	}
	if s.opts.Devices != nil {
		devs := s.audited(s.opts.Devices)
		mux.Handle(PathDevices, devs)
		mux.Handle(PathDevices+"/", devs)
	}
	mux.HandleFunc("GET "+PathAudit, s.listAudit)
	if s.opts.Firewall != nil {
		mux.HandleFunc("GET "+PathFirewall, s.showFirewall)
	}
	if s.opts.FirewallTest != nil {
		mux.HandleFunc("POST "+PathFirewallTest, s.testFirewall)
	}
	if s.opts.EnrollPort != nil {
		mux.HandleFunc("GET "+PathEnrollLink, s.enrollLink)
	}
	if s.opts.DNSTop != nil {
		mux.HandleFunc("GET "+PathDNSTop, s.showDNSTop)
	}
	if s.opts.Egress != nil {
		mux.HandleFunc("GET "+PathEgress, s.showEgress)
	}
	if s.opts.RunningConfig != nil {
		mux.HandleFunc("GET "+PathConfig, s.showConfig)
	}
	mux.HandleFunc("GET "+PathSeries, s.listSeries)
	if s.opts.Config != nil {
		mux.HandleFunc("GET "+PathConfigSource, s.configSource)
		mux.HandleFunc("POST "+PathConfigCheck, s.adminOnly(s.checkConfig))
		mux.HandleFunc("POST "+PathConfigApply, s.adminOnly(s.applyConfig))
		mux.HandleFunc("GET "+PathConfigHistory, s.listHistory)
		mux.HandleFunc("GET "+PathConfigHistory+"/{id}", s.showHistory)
		mux.HandleFunc("POST "+PathConfigHistory+"/{id}/rollback", s.adminOnly(s.rollback))
	}
	if s.opts.Flows != nil {
		mux.Handle("GET "+PathFlows, s.opts.Flows)
		mux.Handle("GET "+PathFlows+"/", s.opts.Flows)
	}
	mux.HandleFunc("GET "+PathTokens, s.adminOnly(s.listTokens))
	mux.HandleFunc("POST "+PathTokens, s.adminOnly(s.createToken))
	mux.HandleFunc("POST "+PathTokens+"/{name}/revoke", s.adminOnly(s.revokeToken))
	if s.opts.Reload != nil {
		mux.HandleFunc("POST "+PathReload, s.adminOnly(s.reload))
	}
	return mux
}

// adminOnly refuses an actor without the admin role (a viewer listing
// tokens). Changes by viewers never get this far.
func (s *Server) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a, ok := ActorFrom(r.Context()); !ok || a.Role != RoleAdmin {
			s.refused(resultForbidden, "admin: refused a token request from a viewer", "actor", a.ID, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "forbidden", "This needs the admin role.")
			return
		}
		h(w, r)
	}
}

// audited wraps a handler that is not the admin package's own (the device
// API): each audited action it serves becomes an audit event, with the
// resource it answered as the new value.
func (s *Server) audited(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		act, ok := actionOf(r)
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		a, _ := ActorFrom(r.Context())
		e := Event{
			Action: act.action, Actor: a, ResourceType: act.resourceType, ResourceID: act.resourceID,
			Result:   rec.status >= 200 && rec.status < 300,
			Metadata: map[string]any{"method": r.Method, "path": r.URL.Path, "status": rec.status},
		}
		if e.Result {
			e.Description = fmt.Sprintf("%s %s %s", act.resourceType, act.resourceID, pastTense(act.action))
			if json.Valid(rec.body.Bytes()) {
				e.NewValue = json.RawMessage(append([]byte(nil), rec.body.Bytes()...))
			}
		} else {
			e.Description = fmt.Sprintf("%s %s %s failed", act.action, act.resourceType, act.resourceID)
			var body struct {
				Error APIError `json:"error"`
			}
			if json.Unmarshal(rec.body.Bytes(), &body) == nil && body.Error.Message != "" {
				e.Error = body.Error.Message
			} else {
				e.Error = http.StatusText(rec.status)
			}
		}
		s.Audit(e)
	})
}

func pastTense(action string) string {
	switch action {
	case "create":
		return "created"
	case "revoke":
		return "revoked"
	case "approve":
		return "approved"
	}
	return action
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.tokens.all())
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	a, _ := ActorFrom(r.Context())
	var req CreateTokenRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.auditToken(r, a, "create", "", nil, fmt.Errorf("bad request: %w", err))
		writeError(w, http.StatusBadRequest, "bad_request", "Expected {\"name\": NAME, \"role\": \"admin\" or \"viewer\"}: "+err.Error())
		return
	}
	tok, secret, err := s.tokens.create(req.Name, req.Role, a.ID)
	if err != nil {
		s.auditToken(r, a, "create", req.Name, nil, err)
		status, code := http.StatusBadRequest, "bad_request"
		switch {
		case errors.Is(err, ErrTokenExists):
			status, code = http.StatusConflict, "exists"
		case !errors.Is(err, errBadName) && req.Role.Valid():
			status, code = http.StatusInternalServerError, "internal"
		}
		writeError(w, status, code, err.Error())
		return
	}
	s.auditToken(r, a, "create", tok.Name, &tok, nil)
	writeJSON(w, http.StatusCreated, CreatedToken{Token: tok, Secret: secret})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	a, _ := ActorFrom(r.Context())
	name := r.PathValue("name")
	old, err := s.tokens.revoke(name)
	switch {
	case errors.Is(err, ErrTokenNotFound):
		s.auditToken(r, a, "revoke", name, nil, err)
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("No token is named %q.", name))
		return
	case err != nil:
		// Revoked in memory, not on disk: a failure the admin must see.
		s.auditToken(r, a, "revoke", name, nil, err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	e := s.tokenEvent(r, a, "revoke", name, nil, nil)
	e.OldValue = mustJSON(old)
	s.Audit(e)
	writeJSON(w, http.StatusOK, old)
}

func (s *Server) auditToken(r *http.Request, a Actor, act, name string, tok *Token, err error) {
	s.Audit(s.tokenEvent(r, a, act, name, tok, err))
}

func (s *Server) tokenEvent(r *http.Request, a Actor, act, name string, tok *Token, err error) Event {
	e := Event{
		Action: act, Result: err == nil, Actor: a, ResourceType: "admin_token", ResourceID: name,
		Description: fmt.Sprintf("admin token %q %s", name, pastTense(act)),
		Metadata:    map[string]any{"method": r.Method, "path": r.URL.Path},
	}
	if tok != nil {
		e.Description += " with role " + string(tok.Role)
		e.NewValue = mustJSON(tok)
	}
	if err != nil {
		e.Error = err.Error()
		e.Description = fmt.Sprintf("%s admin token %q failed", act, name)
	}
	return e
}

// reload runs a reload and waits for its outcome, like SIGHUP but with
// the answer.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	a, _ := ActorFrom(r.Context())
	start := time.Now()
	file, err := s.opts.Reload(r.Context())
	e := Event{
		Action: "reload", Result: err == nil, Actor: a, ResourceType: "configuration", ResourceID: file,
		Description: "reload applied",
		Metadata:    map[string]any{"method": r.Method, "path": r.URL.Path, "duration_ms": time.Since(start).Milliseconds()},
	}
	if err != nil {
		e.Error = err.Error()
		e.Description = "reload refused; the previous configuration keeps running"
		s.Audit(e)
		writeJSON(w, http.StatusUnprocessableEntity, ReloadResult{Error: err.Error()})
		return
	}
	s.Audit(e)
	writeJSON(w, http.StatusOK, ReloadResult{Reloaded: true})
}

// writeJSON writes v indented, as every admin endpoint answers.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// APIError is the body of every refusal: {"error":{"code","message"}}, as
// the device API answers.
type APIError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Error APIError `json:"error"`
	}{APIError{Code: code, Message: msg}})
}

// recorder keeps a handler's status and (the start of) its body, for the
// audit record of a request it served.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if room := 64<<10 - r.body.Len(); room > 0 {
		r.body.Write(b[:min(room, len(b))])
	}
	return r.ResponseWriter.Write(b)
}
