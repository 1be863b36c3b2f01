package identity

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Filter selects and pages devices for Page.
type Filter struct {
	// Query matches a substring, case-insensitive, of the id, name,
	// email, address or groups (as stored: the JSON list) of a device;
	// "" matches every device.
	Query string
	// Status is "" (any), "active", "expired" or "revoked", at time Now.
	Status string
	Now    time.Time
	// Offset skips that many matches (oldest first); Limit caps the page
	// (0: no cap).
	Offset, Limit int
}

// Page reads one page of the devices that match f, oldest first, and how
// many match in all.
//
// The filter runs over the registry's list index (listIndex): every
// device's searchable fields in list order, in memory, brought up to date
// from the rows changed since the generation it holds. Only the page's
// own rows are then read from the database, by id. An ordinary index
// cannot serve a substring search (PostgreSQL's pg_trgm is an extension a
// shared database may not allow; SQLite's trigram FTS5 was measured
// slower than a scan for device names, whose trigrams nearly all devices
// share), and a scan of 10,000 rows that evaluates five LIKEs each took 40 ms on
// an idle machine (pure-Go SQLite) and several times that under load,
// twice per request (the count and the page). The index filters the same
// 10,000 devices in about a millisecond.
func (r *Registry) Page(ctx context.Context, f Filter) ([]Device, int, error) {
	now := dbTime(f.Now).UnixMicro()
	var keep func(*listEntry) bool
	switch f.Status {
	case "":
		keep = func(*listEntry) bool { return true }
	case "revoked":
		keep = func(e *listEntry) bool { return e.revoked }
	case "active":
		keep = func(e *listEntry) bool { return !e.revoked && (!e.expires.Valid || e.expires.Int64 > now) }
	case "expired":
		keep = func(e *listEntry) bool { return !e.revoked && e.expires.Valid && e.expires.Int64 <= now }
	default:
		return nil, 0, fmt.Errorf("device status %q: expected active, expired or revoked", f.Status)
	}
	entries, err := r.list.current(ctx, r)
	if err != nil {
		return nil, 0, err
	}
	q := strings.ToLower(f.Query)
	offset := max(f.Offset, 0)
	total := 0
	var ids []string
	for _, e := range entries {
		if !keep(e) || !e.match(q) {
			continue
		}
		total++
		if total > offset && (f.Limit <= 0 || len(ids) < f.Limit) {
			ids = append(ids, e.id)
		}
	}
	devs, err := r.devicesByID(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	return devs, total, nil
}

// pageChunk bounds the ids of one query: SQLite allows 32,766 parameters
// and PostgreSQL 65,535; an unlimited page of a large fleet is read in
// several queries.
const pageChunk = 500

// devicesByID reads the devices ids names, in that order. A device that
// is gone from the database (never, today: rows are revoked, not
// deleted) is left out.
func (r *Registry) devicesByID(ctx context.Context, ids []string) ([]Device, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	byID := make(map[string]Device, len(ids))
	for chunk := range slices.Chunk(ids, pageChunk) {
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		devs, err := r.query(ctx, "page devices", `SELECT `+deviceCols+` FROM devices WHERE id IN (`+strings.Join(ph, ", ")+`)`, args...)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			byID[d.ID] = d
		}
	}
	out := make([]Device, 0, len(ids))
	for _, id := range ids {
		if d, ok := byID[id]; ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// listEntry is what a Filter reads of one device. Entries are never
// changed: a changed device gets a new one.
type listEntry struct {
	id      string
	created int64 // microseconds, the list's order (then id)
	expires sql.NullInt64
	revoked bool
	// text is the lower-case id, name, email, address and groups (the
	// stored JSON list), each searched on its own as the query's LIKE
	// on each column used to.
	text [5]string
}

// match reports whether q (lower case) is a substring of one of e's
// fields.
func (e *listEntry) match(q string) bool {
	if q == "" {
		return true
	}
	for _, t := range e.text {
		if strings.Contains(t, q) {
			return true
		}
	}
	return false
}

func compareEntries(a, b *listEntry) int {
	return cmp.Or(cmp.Compare(a.created, b.created), strings.Compare(a.id, b.id))
}

// listIndex is the in-memory index Page filters: every device, revoked
// and pending ones included, in list order. It is built on the first Page
// (an appliance whose console nobody opens does not pay for it: about
// 290 bytes a device, 2.8 MB for 10,000) and follows the database the way snapshots do: a
// poll of the generation counter, then the rows whose changed_gen is
// newer (every write bumps it; last-seen times, which are not searched,
// do not), with a full read when the generation went back (a restored
// database) and every fullReload as insurance against rows changed
// behind the registry's back.
type listIndex struct {
	mu       sync.Mutex // serializes updates; guards the fields below
	loaded   bool
	gen      int64
	lastFull time.Time
	byID     map[string]*listEntry
	// entries is in list order and never changed in place: an update
	// makes a new slice, so a Page that holds the old one filters it
	// without the lock.
	entries []*listEntry
}

// listCols is what the index reads of a device.
const listCols = `id, name, email, address, groups_json, created_us, expires_us, revoked`

// current brings the index up to date with the database and returns its
// entries in list order.
func (l *listIndex) current(ctx context.Context, r *Registry) ([]*listEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gen int64
	if err := r.db.QueryRowContext(ctx, `SELECT generation FROM registry_generation WHERE id = 1`).Scan(&gen); err != nil {
		return nil, unavailable("poll the device registry", err)
	}
	now := r.clock()
	full := !l.loaded || gen < l.gen || now.Sub(l.lastFull) >= fullReload
	if !full && gen == l.gen {
		return l.entries, nil
	}
	// The generation was read first: a write that commits during the read
	// below has a larger one, and the next call reads it (again).
	q, args := `SELECT `+listCols+` FROM devices`, []any(nil)
	if !full {
		q, args = q+` WHERE changed_gen > $1`, []any{l.gen}
	}
	changed, err := readListEntries(ctx, r.db, q, args...)
	if err != nil {
		return nil, err
	}
	if full {
		l.byID = make(map[string]*listEntry, len(changed))
		for _, e := range changed {
			l.byID[e.id] = e
		}
		slices.SortFunc(changed, compareEntries)
		l.entries, l.loaded, l.lastFull = changed, true, now
	} else {
		l.entries = l.merge(changed)
	}
	l.gen = gen
	return l.entries, nil
}

// merge returns the entries with changed replacing (or joining) them, in
// list order: the unchanged entries keep their order, the changed ones
// (sorted) are merged in, in time linear in the index. l.mu is held.
func (l *listIndex) merge(changed []*listEntry) []*listEntry {
	gone := make(map[*listEntry]bool, len(changed))
	for _, e := range changed {
		if old := l.byID[e.id]; old != nil {
			gone[old] = true
		}
		l.byID[e.id] = e
	}
	slices.SortFunc(changed, compareEntries)
	out := make([]*listEntry, 0, len(l.entries)+len(changed)-len(gone))
	i := 0
	for _, e := range l.entries {
		if gone[e] {
			continue
		}
		for i < len(changed) && compareEntries(changed[i], e) < 0 {
			out = append(out, changed[i])
			i++
		}
		out = append(out, e)
	}
	return append(out, changed[i:]...)
}

func readListEntries(ctx context.Context, db *sql.DB, q string, args ...any) ([]*listEntry, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, unavailable("index devices", err)
	}
	defer rows.Close()
	var out []*listEntry
	for rows.Next() {
		var (
			e                                 listEntry
			name, email, addr, groups, idText string
		)
		if err := rows.Scan(&idText, &name, &email, &addr, &groups, &e.created, &e.expires, &e.revoked); err != nil {
			return nil, unavailable("index devices", err)
		}
		e.id = idText
		e.text = [5]string{strings.ToLower(idText), strings.ToLower(name), strings.ToLower(email), strings.ToLower(addr), strings.ToLower(groups)}
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("index devices", err)
	}
	return out, nil
}
