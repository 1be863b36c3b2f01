package scim

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	filter "github.com/scim2/filter-parser/v2"

	"github.com/edgegw/edgegw/access/identity"
)

// Prefix is where the server is mounted on the Access listener.
const Prefix = "/scim/v2"

// Handles reports whether the Access listener should hand path to the
// SCIM server.
func Handles(path string) bool { return path == Prefix || strings.HasPrefix(path, Prefix+"/") }

// Registry is what the server changes in the device registry
// (*identity.Registry implements it).
type Registry interface {
	RevokeUser(ctx context.Context, emails []string) ([]identity.Device, error)
	SetUserGroups(ctx context.Context, emails, groups []string) ([]identity.Device, error)
}

// Options configure a Server.
type Options struct {
	// StateDir holds scim.db.
	StateDir string
	// Registry takes the effects of the provider's changes.
	Registry Registry
	// Applied, when set, is called after the registry revoked devices and
	// returns once the gateway follows (WireGuard peers, identity sets), so
	// a deactivation is answered only when it took effect. Group changes
	// do not wait: the registry's refresh, which its writes wake, carries
	// them.
	Applied func(ctx context.Context)
	// Token is the bearer token the provider must send (SetToken rotates it).
	Token  []byte
	Logger *slog.Logger
	// Now is the clock for created and lastModified; time.Now when nil.
	Now func() time.Time
}

// Server is the SCIM service provider. It is an http.Handler for paths
// under Prefix; its methods are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	now     func() time.Time
	reg     Registry
	applied func(context.Context)
	db      *store
	token   atomic.Pointer[[sha256.Size]byte]
	metrics *metrics

	// wmu serializes writes: each one computes its effects from the state
	// it read, applies them to the registry, stores and installs the
	// result before the next begins. Reads go on beside it under mu.
	wmu      sync.Mutex
	mu       sync.RWMutex
	users    map[string]*user
	groups   map[string]*group
	byName   map[string]string              // lower-case userName → user id
	groupsOf map[string]map[string]struct{} // user id → ids of the groups it is a member of

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating) the store in o.StateDir and loads it. The caller
// owns the Server and calls Close.
func Open(ctx context.Context, o Options) (*Server, error) {
	if o.Registry == nil {
		return nil, errors.New("scim: no device registry to apply changes to")
	}
	s := &Server{log: o.Logger, now: o.Now, reg: o.Registry, applied: o.Applied, metrics: newMetrics()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	db, err := openStore(ctx, o.StateDir)
	if err != nil {
		return nil, err
	}
	users, groups, err := db.load(ctx)
	if err != nil {
		db.close()
		return nil, err
	}
	s.db, s.users, s.groups = db, users, groups
	s.byName = make(map[string]string, len(users))
	s.groupsOf = make(map[string]map[string]struct{}, len(users))
	for id, u := range users {
		s.byName[strings.ToLower(u.userName())] = id
	}
	for gid, g := range groups {
		for uid := range g.members {
			s.addGroupOf(uid, gid)
		}
	}
	s.SetToken(o.Token)
	return s, nil
}

// Close closes the store; it is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.close() })
	return s.closeErr
}

// SetToken sets the bearer token the provider must present; an empty token
// refuses every request. Only its SHA-256 is kept.
func (s *Server) SetToken(tok []byte) {
	tok = []byte(strings.TrimSpace(string(tok)))
	if len(tok) == 0 {
		s.token.Store(nil)
		return
	}
	h := sha256.Sum256(tok)
	s.token.Store(&h)
}

// Counts is how many users and groups the server holds.
func (s *Server) Counts() (users, groups int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users), len(s.groups)
}

func (s *Server) authorized(r *http.Request) bool {
	want := s.token.Load()
	if want == nil {
		return false
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ServeHTTP serves RFC 7644's endpoints for users and groups.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	kind, id, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	endpoint := strings.ToLower(kind)
	if !s.authorized(r) {
		s.metrics.refused.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgegw scim"`)
		s.fail(w, r, &Error{Status: http.StatusUnauthorized, Detail: "a valid bearer token is required"})
		return
	}
	var err error
	switch {
	case endpoint == "users" || endpoint == "groups":
		err = s.resource(w, r, endpoint, id)
	case endpoint == "serviceproviderconfig" && r.Method == http.MethodGet:
		s.reply(w, http.StatusOK, serviceProviderConfig(base(r)))
	case endpoint == "resourcetypes" && r.Method == http.MethodGet:
		s.reply(w, http.StatusOK, resourceTypes(base(r), id))
	case endpoint == "schemas" && r.Method == http.MethodGet:
		s.reply(w, http.StatusOK, map[string]any{"schemas": []string{msgListResponse}, "totalResults": 0, "Resources": []any{}})
	case endpoint == "bulk" || endpoint == "me":
		err = &Error{Status: http.StatusNotImplemented, Detail: "/" + kind + " is not supported"}
	default:
		err = notFound("no endpoint %s", r.URL.Path)
	}
	if err != nil {
		s.fail(w, r, err)
	}
}

// base is the server's URL as the client reached it, for meta.location.
func base(r *http.Request) string {
	return "https://" + r.Host + Prefix
}

func (s *Server) resource(w http.ResponseWriter, r *http.Request, endpoint, id string) error {
	isUser := endpoint == "users"
	switch {
	case id == "" && r.Method == http.MethodGet:
		return s.list(w, r, isUser)
	case id == "" && r.Method == http.MethodPost:
		body, err := readBody(w, r)
		if err != nil {
			return err
		}
		if isUser {
			return s.createUser(w, r, body)
		}
		return s.createGroup(w, r, body)
	case id == "":
		return &Error{Status: http.StatusMethodNotAllowed, Detail: r.Method + " is not allowed on /" + endpoint}
	case r.Method == http.MethodGet:
		return s.get(w, r, isUser, id)
	case r.Method == http.MethodDelete:
		if isUser {
			return s.deleteUser(w, r, id)
		}
		return s.deleteGroup(w, r, id)
	case r.Method == http.MethodPut || r.Method == http.MethodPatch:
		body, err := readBody(w, r)
		if err != nil {
			return err
		}
		if isUser {
			return s.changeUser(w, r, id, body)
		}
		return s.changeGroup(w, r, id, body)
	}
	return &Error{Status: http.StatusMethodNotAllowed, Detail: r.Method + " is not allowed on a resource"}
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("body is larger than %d bytes", maxBodyBytes)}
	}
	if err != nil {
		return nil, badRequest("invalidSyntax", "read body: %v", err)
	}
	return body, nil
}

func (s *Server) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("scim: write response", "err", err)
	}
}

// fail answers with err as a SCIM error; an error that is not one (the
// registry or the store failed) is a 503 or 500 whose cause goes to the
// log, not to the client.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, identity.ErrInvalid):
		e = badRequest("invalidValue", "%v", err)
	case errors.Is(err, identity.ErrUnavailable):
		s.log.Error("scim: device registry unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		e = &Error{Status: http.StatusServiceUnavailable, Detail: "the device registry is unavailable; nothing was changed, retry later"}
	default:
		s.log.Error("scim: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e = &Error{Status: http.StatusInternalServerError, Detail: "internal error; see the gateway's log"}
	}
	if e.Status != http.StatusUnauthorized {
		reason := e.Type
		if reason == "" {
			reason = strconv.Itoa(e.Status)
		}
		s.metrics.refused.WithLabelValues(reason).Inc()
	}
	s.reply(w, e.Status, e.body())
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, isUser bool, id string) error {
	proj := parseProjection(r.URL.Query().Get("attributes"), r.URL.Query().Get("excludedAttributes"))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if isUser {
		u := s.users[id]
		if u == nil {
			return notFound("no user %q", id)
		}
		s.reply(w, http.StatusOK, s.userJSON(u, base(r), proj))
		return nil
	}
	g := s.groups[id]
	if g == nil {
		return notFound("no group %q", id)
	}
	s.reply(w, http.StatusOK, s.groupJSON(g, base(r), proj))
	return nil
}

// Paging limits for list requests.
const (
	defaultCount = 100
	maxCount     = 1000
)

func (s *Server) list(w http.ResponseWriter, r *http.Request, isUser bool) error {
	q := r.URL.Query()
	schema := groupSchema
	if isUser {
		schema = userSchema
	}
	var expr filter.Expression
	if f := q.Get("filter"); f != "" {
		var err error
		if expr, err = parseFilter(f, schema); err != nil {
			return err
		}
	}
	start, count := 1, defaultCount
	if v := q.Get("startIndex"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return badRequest("invalidValue", "startIndex %q is not a number", v)
		}
		start = max(n, 1)
	}
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return badRequest("invalidValue", "count %q is not a number", v)
		}
		count = min(max(n, 0), maxCount)
	}
	proj := parseProjection(q.Get("attributes"), q.Get("excludedAttributes"))
	s.mu.RLock()
	defer s.mu.RUnlock()
	type hit struct {
		id      string
		created time.Time
	}
	var hits []hit
	if isUser {
		if id, ok := s.userByNameFilter(expr); ok {
			if id != "" {
				hits = append(hits, hit{id, s.users[id].created})
			}
		} else {
			for id, u := range s.users {
				if expr == nil || match(expr, userView{s, u}, userSchema) {
					hits = append(hits, hit{id, u.created})
				}
			}
		}
	} else {
		for id, g := range s.groups {
			if expr == nil || match(expr, groupView{s, g}, groupSchema) {
				hits = append(hits, hit{id, g.created})
			}
		}
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	page := hits[min(start-1, len(hits)):]
	page = page[:min(count, len(page))]
	res := make([]any, 0, len(page))
	for _, h := range page {
		if isUser {
			res = append(res, s.userJSON(s.users[h.id], base(r), proj))
		} else {
			res = append(res, s.groupJSON(s.groups[h.id], base(r), proj))
		}
	}
	s.reply(w, http.StatusOK, map[string]any{
		"schemas":      []string{msgListResponse},
		"totalResults": len(hits),
		"startIndex":   start,
		"itemsPerPage": len(res),
		"Resources":    res,
	})
	return nil
}

// userByNameFilter answers `userName eq "x"`, the lookup both providers
// make before creating a user, from the index; ok is false for any other
// filter.
func (s *Server) userByNameFilter(e filter.Expression) (id string, ok bool) {
	ae, isAttr := e.(*filter.AttributeExpression)
	if !isAttr || ae.Operator != filter.EQ || ae.AttributePath.SubAttribute != nil ||
		!strings.EqualFold(ae.AttributePath.AttributeName, "userName") ||
		(ae.AttributePath.URIPrefix != nil && !strings.EqualFold(*ae.AttributePath.URIPrefix, SchemaUser)) {
		return "", false
	}
	v, isStr := ae.CompareValue.(string)
	if !isStr {
		return "", false
	}
	return s.byName[strings.ToLower(v)], true
}

// userView is a user as filters see it.
type userView struct {
	s *Server
	u *user
}

func (v userView) get(ext, name string) (any, bool) {
	if ext == "" {
		switch name {
		case "id":
			return v.u.id, true
		case "meta":
			return map[string]any{"created": v.u.created.UTC().Format(time.RFC3339Nano), "lastModified": v.u.modified.UTC().Format(time.RFC3339Nano), "resourceType": "User"}, true
		case "groups":
			return v.s.userGroupsJSON(v.u.id), true
		}
	}
	return mapView(v.u.doc).get(ext, name)
}

// groupView is a group as filters see it.
type groupView struct {
	s *Server
	g *group
}

func (v groupView) get(ext, name string) (any, bool) {
	if ext == "" {
		switch name {
		case "id":
			return v.g.id, true
		case "meta":
			return map[string]any{"created": v.g.created.UTC().Format(time.RFC3339Nano), "lastModified": v.g.modified.UTC().Format(time.RFC3339Nano), "resourceType": "Group"}, true
		case "members":
			list := make([]any, 0, len(v.g.members))
			for id := range v.g.members {
				list = append(list, map[string]any{"value": id})
			}
			return list, true
		}
	}
	return mapView(v.g.doc).get(ext, name)
}

func (v groupView) hasMember(id string) bool { _, ok := v.g.members[id]; return ok }

// userJSON renders u; s.mu is held.
func (s *Server) userJSON(u *user, base string, p projection) map[string]any {
	out := make(map[string]any, len(u.doc)+4)
	for k, v := range u.doc {
		if p.keep(k) {
			out[k] = v
		}
	}
	out["schemas"] = schemasOf(u.doc, userSchema)
	out["id"] = u.id
	out["meta"] = meta("User", base, u.id, u.created, u.modified)
	if p.keep("groups") {
		if gs := s.userGroupsJSON(u.id); len(gs) > 0 {
			out["groups"] = gs
		}
	}
	return out
}

func (s *Server) userGroupsJSON(uid string) []any {
	ids := make([]string, 0, len(s.groupsOf[uid]))
	for gid := range s.groupsOf[uid] {
		ids = append(ids, gid)
	}
	slices.Sort(ids)
	out := make([]any, 0, len(ids))
	for _, gid := range ids {
		out = append(out, map[string]any{"value": gid, "display": s.groups[gid].displayName(), "type": "direct"})
	}
	return out
}

// groupJSON renders g; s.mu is held.
func (s *Server) groupJSON(g *group, base string, p projection) map[string]any {
	out := make(map[string]any, len(g.doc)+4)
	for k, v := range g.doc {
		if p.keep(k) {
			out[k] = v
		}
	}
	out["schemas"] = schemasOf(g.doc, groupSchema)
	out["id"] = g.id
	out["meta"] = meta("Group", base, g.id, g.created, g.modified)
	if p.keep("members") {
		ids := make([]string, 0, len(g.members))
		for id := range g.members {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		ms := make([]any, 0, len(ids))
		for _, id := range ids {
			m := map[string]any{"value": id, "type": "User"}
			if u := s.users[id]; u != nil {
				m["display"] = u.userName()
			}
			ms = append(ms, m)
		}
		out["members"] = ms
	}
	return out
}

// newID returns a resource id: 32 random hex characters.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("scim: read random bytes: %v", err))
	}
	return fmt.Sprintf("%x", b)
}

func (s *Server) addGroupOf(uid, gid string) {
	m := s.groupsOf[uid]
	if m == nil {
		m = map[string]struct{}{}
		s.groupsOf[uid] = m
	}
	m[gid] = struct{}{}
}

func (s *Server) delGroupOf(uid, gid string) {
	if m := s.groupsOf[uid]; m != nil {
		delete(m, gid)
		if len(m) == 0 {
			delete(s.groupsOf, uid)
		}
	}
}

// clock is the time at the store's precision (microseconds), so a
// resource reads the same before and after a restart.
func (s *Server) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }
