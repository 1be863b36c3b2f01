package dns

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// The console's DNS page shows the most asked and the most blocked names,
// and per user the same over a recent window. Counting every name exactly
// would grow with the names clients make up, so each table is a
// space-saving summary (Metwally et al.): a fixed number of counters; a
// name not tracked takes over the smallest counter, inheriting its count
// as its possible overestimate. Any name asked more than 1/capacity of
// the queries is in the table, and its count is at most Error too high.
//
// Memory is fixed: topDomains counters for all queries and for blocked
// ones, topUsers users each with topUserDomains counters, in two
// windows. Steady traffic (names already tracked) allocates nothing, so
// the cache-hit path stays as it was.
//
// A UDP reader does not count into the summaries query by query: that
// took the summaries' lock and, when clients ask more names than the
// tables hold (dnsperf's 1,000 names against 512 counters), a map delete,
// insert and heap walk per table for every cached answer. It adds each
// answer to a topLocal of its own instead, one map increment per query,
// and merges those counts (one weighted add per distinct name and user)
// when it holds topLocalKeys of them or topLocalAge after the first;
// Top merges every reader's pending counts before it reads, so what the
// console shows is never behind. Weighted adds keep the space-saving
// bounds (an item's error is still at most the smallest count it took
// over), and pending counts go to the window of their first query.
const (
	topDomains     = 512
	topUsers       = 1024
	topUserDomains = 16
	// TopWindow is how long a window of counts lasts: the tables report
	// the current window and the one before it, so between one and two
	// windows of queries.
	TopWindow = 5 * time.Minute

	// topLocalKeys bounds a reader's pending (name, user, blocked)
	// counts; topLocalAge is the longest a reader keeps them while it
	// answers queries.
	topLocalKeys = 4096
	topLocalAge  = time.Second
)

// spaceSaving is a space-saving summary of at most cap keys: counters
// in slots (a key keeps its slot while it is tracked, so callers can hang
// data of their own on it), a min-heap of slots by count, and each key's
// slot. The heap moves slot numbers, never touching the map.
type spaceSaving[K comparable] struct {
	cap   int
	slot  map[K]int
	items []ssItem[K] // by slot
	heap  []int       // slots, smallest count first
}

type ssItem[K comparable] struct {
	key   K
	count uint64
	err   uint64 // the count it inherited: the most it may be too high
	at    int    // its index in heap
}

func newSpaceSaving[K comparable](capacity int) *spaceSaving[K] {
	return &spaceSaving[K]{cap: capacity, slot: make(map[K]int, capacity),
		items: make([]ssItem[K], 0, capacity), heap: make([]int, 0, capacity)}
}

// add counts n for k. It returns k's slot, and fresh when the slot was
// just given to k (the caller resets what it keeps there).
func (s *spaceSaving[K]) add(k K, n uint64) (slot int, fresh bool) {
	if i, ok := s.slot[k]; ok {
		s.items[i].count += n
		s.down(s.items[i].at)
		return i, false
	}
	if len(s.items) < s.cap {
		i := len(s.items)
		s.items = append(s.items, ssItem[K]{key: k, count: n, at: len(s.heap)})
		s.heap = append(s.heap, i)
		s.slot[k] = i
		s.up(len(s.heap) - 1)
		return i, true
	}
	// Full: k takes over the smallest counter, at the root.
	i := s.heap[0]
	it := &s.items[i]
	delete(s.slot, it.key)
	it.key, it.err = k, it.count
	it.count += n
	s.slot[k] = i
	s.down(0)
	return i, true
}

func (s *spaceSaving[K]) less(a, b int) bool {
	return s.items[s.heap[a]].count < s.items[s.heap[b]].count
}

func (s *spaceSaving[K]) swap(a, b int) {
	h := s.heap
	h[a], h[b] = h[b], h[a]
	s.items[h[a]].at, s.items[h[b]].at = a, b
}

// down restores the heap below i after its count grew.
func (s *spaceSaving[K]) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(s.heap) {
			return
		}
		m := l
		if r := l + 1; r < len(s.heap) && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			return
		}
		s.swap(i, m)
		i = m
	}
}

// up restores the heap above a new counter (it rises past larger ones).
func (s *spaceSaving[K]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			return
		}
		s.swap(i, p)
		i = p
	}
}

func (s *spaceSaving[K]) reset() {
	clear(s.slot)
	s.items = s.items[:0]
	s.heap = s.heap[:0]
}

// topWindow is one window's tables.
type topWindow struct {
	start   time.Time
	queries uint64
	blocked uint64
	domains *spaceSaving[string]
	blocks  *spaceSaving[string]
	users   *spaceSaving[string]
	// perUser[slot] belongs to the user holding that slot of users.
	perUser []userCounts
}

type userCounts struct {
	blocked uint64
	domains *spaceSaving[string]
}

func newTopWindow() *topWindow {
	w := &topWindow{domains: newSpaceSaving[string](topDomains), blocks: newSpaceSaving[string](topDomains),
		users: newSpaceSaving[string](topUsers), perUser: make([]userCounts, topUsers)}
	return w
}

func (w *topWindow) reset(now time.Time) {
	w.start, w.queries, w.blocked = now, 0, 0
	w.domains.reset()
	w.blocks.reset()
	w.users.reset()
}

// topCounts keeps the windows. One mutex, taken per answered query on
// the TCP, DoT, DoH and upstream-waiting paths, and per merge of a UDP
// reader's topLocal. Lock order: a topLocal's mu before mu.
type topCounts struct {
	mu        sync.Mutex
	cur, prev *topWindow

	// locals are the readers' pending counts, drained by snapshot.
	localMu sync.Mutex
	locals  []*topLocal
}

func newTopCounts() *topCounts {
	return &topCounts{cur: newTopWindow(), prev: newTopWindow()}
}

// add counts one answered query for name (the question's name, as the
// query log has it) by user ("" without an identity).
func (t *topCounts) add(now time.Time, name, user string, blocked bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(now, topKey{name: name, user: user, blocked: blocked}, 1)
}

// addLocked counts n queries of k; t.mu is held.
func (t *topCounts) addLocked(now time.Time, k topKey, n uint64) {
	name, user, blocked := k.name, k.user, k.blocked
	w := t.cur
	if now.Sub(w.start) >= TopWindow {
		if now.Sub(w.start) >= 2*TopWindow {
			t.prev.reset(now) // the previous window is too old to show
		}
		t.cur, t.prev = t.prev, t.cur
		t.cur.reset(now)
		w = t.cur
	}
	w.queries += n
	w.domains.add(name, n)
	if blocked {
		w.blocked += n
		w.blocks.add(name, n)
	}
	slot, fresh := w.users.add(user, n)
	u := &w.perUser[slot]
	if u.domains == nil {
		u.domains = newSpaceSaving[string](topUserDomains) // once per slot, ever
	}
	if fresh {
		u.blocked = 0
		u.domains.reset()
	}
	if blocked {
		u.blocked += n
	}
	u.domains.add(name, n)
}

// topKey is what a topLocal counts by.
type topKey struct {
	name, user string
	blocked    bool
}

// topLocal is one UDP reader's counts not yet merged into its topCounts.
// The reader holds mu while it answers a batch of queries (one lock a
// batch, not a query); snapshot takes it to drain the counts.
type topLocal struct {
	t      *topCounts
	mu     sync.Mutex
	counts map[topKey]uint64
	first  time.Time // of the oldest pending count; zero when none
}

// newLocal returns a topLocal that merges into t; snapshot drains it
// until it is dropped.
func (t *topCounts) newLocal() *topLocal {
	l := &topLocal{t: t, counts: make(map[topKey]uint64, 64)}
	t.localMu.Lock()
	t.locals = append(t.locals, l)
	t.localMu.Unlock()
	return l
}

// drop merges l's pending counts and stops snapshot from reading it (its
// reader has stopped).
func (t *topCounts) drop(l *topLocal) {
	l.mu.Lock()
	l.flushLocked()
	l.mu.Unlock()
	t.localMu.Lock()
	t.locals = slices.DeleteFunc(t.locals, func(x *topLocal) bool { return x == l })
	t.localMu.Unlock()
}

// add counts one answered query; l.mu is held. Past topLocalKeys
// distinct keys it merges them first.
func (l *topLocal) add(now time.Time, name, user string, blocked bool) {
	k := topKey{name: name, user: user, blocked: blocked}
	if c, ok := l.counts[k]; ok {
		l.counts[k] = c + 1
		return
	}
	if len(l.counts) >= topLocalKeys {
		l.flushLocked()
	}
	if len(l.counts) == 0 {
		l.first = now
	}
	l.counts[k] = 1
}

// due reports whether the oldest pending count is topLocalAge old; l.mu
// is held.
func (l *topLocal) due(now time.Time) bool {
	return len(l.counts) > 0 && now.Sub(l.first) >= topLocalAge
}

// flushLocked merges the pending counts into l.t; l.mu is held.
func (l *topLocal) flushLocked() {
	if len(l.counts) == 0 {
		return
	}
	t := l.t
	t.mu.Lock()
	for k, n := range l.counts {
		t.addLocked(l.first, k, n)
	}
	t.mu.Unlock()
	clear(l.counts)
	l.first = time.Time{}
}

// drain merges every reader's pending counts.
func (t *topCounts) drain() {
	t.localMu.Lock()
	locals := slices.Clone(t.locals)
	t.localMu.Unlock()
	for _, l := range locals {
		l.mu.Lock()
		l.flushLocked()
		l.mu.Unlock()
	}
}

// TopEntry is one name (or user) and its count over the window. Error is
// how much the count may be too high (a space-saving counter's inherited
// count); 0 for a count that is exact.
type TopEntry struct {
	Name  string `json:"name"`
	Count uint64 `json:"count"`
	Error uint64 `json:"error,omitempty"`
}

// TopUser is one user's queries over the window.
type TopUser struct {
	// User is the identity's e-mail; "" for queries without an identity.
	User    string     `json:"user"`
	Queries uint64     `json:"queries"`
	Blocked uint64     `json:"blocked"`
	Domains []TopEntry `json:"domains"`
}

// Top is the console's view of the resolver's recent queries.
type Top struct {
	// Since is the start of the oldest window counted.
	Since   time.Time  `json:"since"`
	Queries uint64     `json:"queries"`
	Blocked uint64     `json:"blocked"`
	Domains []TopEntry `json:"domains"`
	Blocks  []TopEntry `json:"blocked_domains"`
	Users   []TopUser  `json:"users"`
}

// snapshot merges the two windows: the n largest of each table, and for
// user (when not "") only that user, with up to n of its names.
func (t *topCounts) snapshot(now time.Time, n int, user string, only bool) Top {
	t.drain()
	t.mu.Lock()
	defer t.mu.Unlock()
	var ws []*topWindow
	for _, w := range []*topWindow{t.prev, t.cur} {
		if !w.start.IsZero() && now.Sub(w.start) < 2*TopWindow {
			ws = append(ws, w)
		}
	}
	top := Top{Domains: []TopEntry{}, Blocks: []TopEntry{}, Users: []TopUser{}}
	for _, w := range ws {
		if top.Since.IsZero() || w.start.Before(top.Since) {
			top.Since = w.start
		}
		top.Queries += w.queries
		top.Blocked += w.blocked
	}
	merge := func(get func(*topWindow) *spaceSaving[string]) []TopEntry {
		m := map[string]TopEntry{}
		for _, w := range ws {
			s := get(w)
			if s == nil {
				continue
			}
			for _, it := range s.items {
				e := m[it.key]
				e.Name, e.Count, e.Error = it.key, e.Count+it.count, e.Error+it.err
				m[it.key] = e
			}
		}
		return largest(m, n)
	}
	top.Domains = merge(func(w *topWindow) *spaceSaving[string] { return w.domains })
	top.Blocks = merge(func(w *topWindow) *spaceSaving[string] { return w.blocks })
	users := map[string]*TopUser{}
	for _, w := range ws {
		for slot, it := range w.users.items {
			if only && it.key != user {
				continue
			}
			u := users[it.key]
			if u == nil {
				u = &TopUser{User: it.key}
				users[it.key] = u
			}
			u.Queries += it.count
			u.Blocked += w.perUser[slot].blocked
		}
	}
	ul := make([]TopUser, 0, len(users))
	for _, u := range users {
		ul = append(ul, *u)
	}
	slices.SortFunc(ul, func(a, b TopUser) int {
		return cmp.Or(cmp.Compare(b.Queries, a.Queries), cmp.Compare(a.User, b.User))
	})
	if len(ul) > n {
		ul = ul[:n]
	}
	for i := range ul {
		name := ul[i].User
		ul[i].Domains = merge(func(w *topWindow) *spaceSaving[string] {
			if slot, ok := w.users.slot[name]; ok {
				return w.perUser[slot].domains
			}
			return nil
		})
	}
	top.Users = ul
	return top
}

func largest(m map[string]TopEntry, n int) []TopEntry {
	l := make([]TopEntry, 0, len(m))
	for _, e := range m {
		l = append(l, e)
	}
	slices.SortFunc(l, func(a, b TopEntry) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Name, b.Name))
	})
	if len(l) > n {
		l = l[:n]
	}
	return l
}

// Top returns the most asked and most blocked names and the users with
// the most queries (each with its own top names) over the last one to
// two TopWindows, n of each (at most 100). A non-empty user keeps only
// that user ("-" is the queries without an identity).
func (s *Server) Top(n int, user string) Top {
	n = min(max(n, 1), 100)
	only := user != ""
	if user == "-" {
		user = ""
	}
	return s.top.snapshot(s.now(), n, user, only)
}
