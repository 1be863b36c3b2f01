package scim

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// effect is what a change at the provider means for one user's devices.
type effect struct {
	user   string   // the user's id, for the log
	emails []string // the addresses the devices were enrolled with
	revoke bool     // deactivated or deleted: revoke every device
	groups []string // otherwise the user's groups, which the devices take
}

// applyEffects changes the registry. After a revocation it waits until
// the gateway follows (Options.Applied), so a provider's answer means the
// user's devices are cut off; group changes are left to the registry's
// own refresh, which a write wakes at once and which takes a burst of
// them (a provider's initial sync) in one snapshot instead of one each.
// The effects are idempotent: a request that fails after some of them is
// retried by the provider and applies them again.
func (s *Server) applyEffects(ctx context.Context, effs []effect) error {
	revoked := 0
	for _, e := range effs {
		if e.revoke {
			devs, err := s.reg.RevokeUser(ctx, e.emails)
			if err != nil {
				return err
			}
			for _, d := range devs {
				s.log.Info("scim: device revoked: its user was deactivated or deleted at the identity provider", "user", e.user, "device", d.ID, "email", d.Email)
			}
			s.metrics.devices.WithLabelValues("revoked").Add(float64(len(devs)))
			revoked += len(devs)
			continue
		}
		devs, err := s.reg.SetUserGroups(ctx, e.emails, e.groups)
		if err != nil {
			return err
		}
		for _, d := range devs {
			s.log.Info("scim: device groups changed", "user", e.user, "device", d.ID, "email", d.Email, "groups", d.Groups)
		}
		s.metrics.devices.WithLabelValues("regrouped").Add(float64(len(devs)))
	}
	if revoked > 0 && s.applied != nil {
		s.applied(ctx)
	}
	return nil
}

// groupNames is the names of uid's groups once the group gid becomes g
// (nil: deleted). wmu is held.
func (s *Server) groupNames(uid, gid string, g *group) []string {
	var out []string
	for id := range s.groupsOf[uid] {
		if id != gid {
			out = append(out, s.groups[id].displayName())
		}
	}
	if g != nil {
		if _, ok := g.members[uid]; ok {
			out = append(out, g.displayName())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// groupEffects are the effects of group gid becoming g on the users in
// uids: each active one's devices take its new group list. wmu is held.
func (s *Server) groupEffects(uids []string, gid string, g *group) []effect {
	slices.Sort(uids)
	var effs []effect
	for _, uid := range slices.Compact(uids) {
		u := s.users[uid]
		if u == nil || !u.active() {
			continue // an inactive user's devices are revoked already
		}
		effs = append(effs, effect{user: uid, emails: u.emails(), groups: s.groupNames(uid, gid, g)})
	}
	return effs
}

func unionEmails(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	out = slices.Compact(out)
	return out[:min(len(out), maxEmails)]
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, body []byte) error {
	doc, err := decodeDoc(body)
	if err != nil {
		return err
	}
	if err := normalizeUser(doc); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	u := &user{id: newID(), doc: doc}
	if other := s.byName[strings.ToLower(u.userName())]; other != "" {
		return &Error{Status: http.StatusConflict, Type: "uniqueness", Detail: "userName " + u.userName() + " is taken by user " + other}
	}
	u.created = s.clock()
	u.modified = u.created
	if !u.active() {
		// Provisioned inactive: a device enrolled under this address
		// before provisioning must not keep working.
		if err := s.applyEffects(r.Context(), []effect{{user: u.id, emails: u.emails(), revoke: true}}); err != nil {
			return err
		}
	}
	if err := s.db.apply(r.Context(), write{putUser: u}); err != nil {
		return err
	}
	s.mu.Lock()
	s.users[u.id] = u
	s.byName[strings.ToLower(u.userName())] = u.id
	out := s.userJSON(u, base(r), projection{})
	s.mu.Unlock()
	s.metrics.writes.WithLabelValues("User", r.Method).Inc()
	s.log.Info("scim: user created", "user", u.id, "userName", u.userName(), "active", u.active())
	w.Header().Set("Location", base(r)+"/Users/"+u.id)
	s.reply(w, http.StatusCreated, out)
	return nil
}

func (s *Server) changeUser(w http.ResponseWriter, r *http.Request, id string, body []byte) error {
	var (
		doc   map[string]any
		patch patchRequest
		err   error
	)
	if r.Method == http.MethodPut {
		if doc, err = decodeDoc(body); err != nil {
			return err
		}
		if err := normalizeUser(doc); err != nil {
			return err
		}
	} else if patch, err = parsePatch(body); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old := s.users[id]
	if old == nil {
		return notFound("no user %q", id)
	}
	if r.Method == http.MethodPatch {
		t := &target{schema: userSchema, doc: deepCopy(old.doc).(map[string]any)}
		if err := t.apply(patch); err != nil {
			return err
		}
		doc = t.doc
		if err := normalizeUser(doc); err != nil {
			return err
		}
	}
	u := &user{id: id, doc: doc, created: old.created, modified: s.clock()}
	name := strings.ToLower(u.userName())
	if other := s.byName[name]; other != "" && other != id {
		return &Error{Status: http.StatusConflict, Type: "uniqueness", Detail: "userName " + u.userName() + " is taken by user " + other}
	}
	if !u.active() {
		// Revoke under the old addresses too: a deactivation that also
		// renames must still reach the devices.
		eff := effect{user: id, emails: unionEmails(old.emails(), u.emails()), revoke: true}
		if err := s.applyEffects(r.Context(), []effect{eff}); err != nil {
			return err
		}
	}
	if err := s.db.apply(r.Context(), write{putUser: u}); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.byName, strings.ToLower(old.userName()))
	s.byName[name] = id
	s.users[id] = u
	out := s.userJSON(u, base(r), parseProjection(r.URL.Query().Get("attributes"), r.URL.Query().Get("excludedAttributes")))
	s.mu.Unlock()
	s.metrics.writes.WithLabelValues("User", r.Method).Inc()
	if old.active() != u.active() {
		s.log.Info("scim: user active changed", "user", id, "userName", u.userName(), "active", u.active())
	}
	s.reply(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old := s.users[id]
	if old == nil {
		return notFound("no user %q", id)
	}
	if err := s.applyEffects(r.Context(), []effect{{user: id, emails: old.emails(), revoke: true}}); err != nil {
		return err
	}
	if err := s.db.apply(r.Context(), write{delUser: id}); err != nil {
		return err
	}
	s.mu.Lock()
	for gid := range s.groupsOf[id] {
		delete(s.groups[gid].members, id)
	}
	delete(s.groupsOf, id)
	delete(s.byName, strings.ToLower(old.userName()))
	delete(s.users, id)
	s.mu.Unlock()
	s.metrics.writes.WithLabelValues("User", r.Method).Inc()
	s.log.Info("scim: user deleted", "user", id, "userName", old.userName())
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, body []byte) error {
	doc, err := decodeDoc(body)
	if err != nil {
		return err
	}
	ids, err := normalizeGroup(doc)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	g := &group{id: newID(), doc: doc, members: map[string]struct{}{}}
	for _, uid := range ids {
		if s.users[uid] == nil {
			return badRequest("invalidValue", "member %q is no user of this server", uid)
		}
		g.members[uid] = struct{}{}
	}
	g.created = s.clock()
	g.modified = g.created
	return s.storeGroup(w, r, nil, g, http.StatusCreated)
}

func (s *Server) changeGroup(w http.ResponseWriter, r *http.Request, id string, body []byte) error {
	var (
		doc   map[string]any
		ids   []string
		patch patchRequest
		err   error
	)
	if r.Method == http.MethodPut {
		if doc, err = decodeDoc(body); err != nil {
			return err
		}
		if ids, err = normalizeGroup(doc); err != nil {
			return err
		}
	} else if patch, err = parsePatch(body); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old := s.groups[id]
	if old == nil {
		return notFound("no group %q", id)
	}
	g := &group{id: id, created: old.created, modified: s.clock()}
	if r.Method == http.MethodPut {
		g.doc, g.members = doc, map[string]struct{}{}
		for _, uid := range ids {
			if s.users[uid] == nil {
				return badRequest("invalidValue", "member %q is no user of this server", uid)
			}
			g.members[uid] = struct{}{}
		}
	} else {
		t := &target{
			schema:     groupSchema,
			doc:        deepCopy(old.doc).(map[string]any),
			members:    maps.Clone(old.members),
			userExists: func(uid string) bool { return s.users[uid] != nil },
		}
		if err := t.apply(patch); err != nil {
			return err
		}
		canonicalize(t.doc, groupSchema)
		dropServerAttrs(t.doc, groupSchema)
		if err := checkGroupDoc(t.doc); err != nil {
			return err
		}
		g.doc, g.members = t.doc, t.members
		if len(g.members) > maxMemberList {
			return badRequest("invalidValue", "%d members (at most %d)", len(g.members), maxMemberList)
		}
	}
	status := http.StatusOK
	if r.Method == http.MethodPatch {
		// RFC 7644 section 3.5.2 allows 204; both providers accept it, and
		// a group of thousands is not sent back for every member added.
		status = http.StatusNoContent
	}
	return s.storeGroup(w, r, old, g, status)
}

// storeGroup makes g (replacing old, nil for a new group) take effect:
// devices of members who joined or left (all members when the name
// changed) take their new groups, then the store, then the state.
func (s *Server) storeGroup(w http.ResponseWriter, r *http.Request, old, g *group, status int) error {
	// Entra ID needs displayName unique; a group's name is what the
	// devices' groups, and so the policies, hold. A change that keeps the
	// name (a member added or removed: nearly every PATCH) cannot break
	// uniqueness, and skips the walk over every group.
	if old == nil || !strings.EqualFold(old.displayName(), g.displayName()) {
		for gid, other := range s.groups {
			if gid != g.id && strings.EqualFold(other.displayName(), g.displayName()) {
				return &Error{Status: http.StatusConflict, Type: "uniqueness", Detail: "displayName " + g.displayName() + " is taken by group " + gid}
			}
		}
	}
	var added, removed, affected []string
	oldMembers := map[string]struct{}{}
	if old != nil {
		oldMembers = old.members
	}
	for uid := range g.members {
		if _, ok := oldMembers[uid]; !ok {
			added = append(added, uid)
		}
	}
	for uid := range oldMembers {
		if _, ok := g.members[uid]; !ok {
			removed = append(removed, uid)
		}
	}
	affected = slices.Concat(added, removed)
	if old != nil && old.displayName() != g.displayName() {
		affected = append(affected, slices.Collect(maps.Keys(g.members))...)
	}
	if err := s.applyEffects(r.Context(), s.groupEffects(affected, g.id, g)); err != nil {
		return err
	}
	if err := s.db.apply(r.Context(), write{putGroup: g, addMembers: added, delMembers: removed}); err != nil {
		return err
	}
	s.mu.Lock()
	s.groups[g.id] = g
	for _, uid := range added {
		s.addGroupOf(uid, g.id)
	}
	for _, uid := range removed {
		s.delGroupOf(uid, g.id)
	}
	var out map[string]any
	if status != http.StatusNoContent {
		out = s.groupJSON(g, base(r), parseProjection(r.URL.Query().Get("attributes"), r.URL.Query().Get("excludedAttributes")))
	}
	s.mu.Unlock()
	s.metrics.writes.WithLabelValues("Group", r.Method).Inc()
	if len(added)+len(removed) > 0 || old == nil {
		s.log.Info("scim: group changed", "group", g.id, "displayName", g.displayName(), "added", len(added), "removed", len(removed), "members", len(g.members))
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return nil
	}
	if status == http.StatusCreated {
		w.Header().Set("Location", base(r)+"/Groups/"+g.id)
	}
	s.reply(w, status, out)
	return nil
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old := s.groups[id]
	if old == nil {
		return notFound("no group %q", id)
	}
	if err := s.applyEffects(r.Context(), s.groupEffects(slices.Collect(maps.Keys(old.members)), id, nil)); err != nil {
		return err
	}
	if err := s.db.apply(r.Context(), write{delGroup: id}); err != nil {
		return err
	}
	s.mu.Lock()
	for uid := range old.members {
		s.delGroupOf(uid, id)
	}
	delete(s.groups, id)
	s.mu.Unlock()
	s.metrics.writes.WithLabelValues("Group", r.Method).Inc()
	s.log.Info("scim: group deleted", "group", id, "displayName", old.displayName(), "members", len(old.members))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
