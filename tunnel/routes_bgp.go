package tunnel

import (
	"maps"
	"slices"
	"sync"
)

// Learned holds the routes that routing protocols learned (BGP), by
// source, for the owner of a [RouteManager] to plan with its configured
// routes. Learned routes are planned exactly like configured ones: a
// route's metric is its priority plus its tunnel's health penalty, so a
// degraded tunnel's learned routes lose to a healthy one's, and every
// learned prefix gets the unreachable fallback. The zero value is empty
// and ready; its methods are safe for concurrent use.
type Learned struct {
	mu sync.Mutex
	by map[string][]Route
}

// Replace sets the routes source (a BGP neighbor's name) has now; none
// removes the source. It reports whether anything changed.
func (l *Learned) Replace(source string, routes []Route) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Equal(l.by[source], routes) {
		return false
	}
	if len(routes) == 0 {
		delete(l.by, source)
		return true
	}
	if l.by == nil {
		l.by = map[string][]Route{}
	}
	l.by[source] = slices.Clone(routes)
	return true
}

// Merge returns configured followed by every learned route, sources in
// name order. configured is not modified.
func (l *Learned) Merge(configured []Route) []Route {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.by) == 0 {
		return configured
	}
	out := slices.Clip(configured)
	for _, src := range slices.Sorted(maps.Keys(l.by)) {
		out = append(out, l.by[src]...)
	}
	return out
}

// Sources returns how many routes each source has.
func (l *Learned) Sources() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.by))
	for s, r := range l.by {
		out[s] = len(r)
	}
	return out
}

// BySource returns a copy of the learned routes, by source.
func (l *Learned) BySource() map[string][]Route {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]Route, len(l.by))
	for s, r := range l.by {
		out[s] = slices.Clone(r)
	}
	return out
}
