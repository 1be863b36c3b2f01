package store

import (
	"time"
)

// Hour summaries: a top-N over days groups by one dimension without a
// filter far more often than anything else (top destinations, ports,
// exporters). Past hours' rows summed by that dimension's value are a
// fraction of the rows (an office's thousands of rows a minute come from a
// few hundred destinations), so such a query reads 168 small summaries for
// a week rather than every minute's rows. A summary is built by the first
// query that needs it (from the frozen minutes, by the scanner that reads
// that hour) and kept while none of the hour's minutes changes: a late
// flow, a compaction or an eviction changes the hour's signature and the
// next query rebuilds it. It holds whole values (full addresses), so a
// query's prefix cut applies as it does to rows, and the answers are the
// minutes' exactly.

// hourSums turns summaries on; tests compare answers without them.
var hourSums = true

// hourKey names one hour's summary by one dimension.
type hourKey struct {
	hour int64 // Unix seconds of the hour's start
	dim  int   // index in Dimensions
}

// hourSig identifies the minutes a summary was built from: their number
// and the sum of their versions (each change bumps a minute's version).
type hourSig struct {
	minutes int
	vers    uint64
}

// hourSum is one past hour's rows summed by one dimension: keys hold only
// that dimension, whole.
type hourSum struct {
	sig  hourSig
	keys []key
	c    []counts
	// worthless: the summary had more than a quarter of the hour's rows;
	// the hour is scanned by its minutes (until it changes).
	worthless bool
}

// maxSumShare is how small a summary must be, as a share of its rows,
// to be kept: a dimension with a value per row (source addresses of a
// scan) is not worth summing.
const maxSumShare = 4

// hourWork is an hour a query reads through its summary: found valid, or
// to be built by the scanner (built is then stored by Query).
type hourWork struct {
	key     hourKey
	start   time.Time
	minutes []*minute
	sig     hourSig
	sum     *hourSum // valid summary found; nil: build one
	built   *hourSum
}

// part is one unit of a scan: a minute's rows or an hour's summary.
type part struct {
	m *minute
	h *hourWork
}

// buildSum sums an hour's frozen rows by dimension dim; nil if the
// summary would not be worth keeping (see maxSumShare), after which the
// caller scans the minutes.
func buildSum(h *hourWork, dim int) *hourSum {
	var by [nDims]bool
	by[dim] = true
	rows := 0
	for _, m := range h.minutes {
		m.mu.Lock()
		rows += m.count()
		m.mu.Unlock()
	}
	limit := rows / maxSumShare
	// The query's own group index, on whole values: the same cheap
	// per-dimension lookups a scan uses.
	gs := newGroups(Query{}, &by)
	var c []counts
	for _, m := range h.minutes {
		m.mu.Lock()
		for i := range m.frozen {
			r := &m.frozen[i]
			j := gs.find(&r.k)
			if j == len(c) {
				if j >= limit {
					m.mu.Unlock()
					return &hourSum{sig: h.sig, worthless: true}
				}
				c = append(c, counts{})
			}
			c[j].packets += r.c.packets
			c[j].bytes += r.c.bytes
		}
		m.mu.Unlock()
	}
	return &hourSum{sig: h.sig, keys: gs.keys, c: c}
}

// planHours splits minutes (in order, the store's lock held) into the
// parts of a scan: whole past hours inside [q.From, q.To) through their
// summaries by dim (each within one of the query's steps, if it has a
// series), the rest as minutes. Only a query without a filter, grouped by
// dim alone, uses summaries; dim < 0 means it does not.
func (s *Store) planHours(q *Query, dim int, minutes []*minute) []part {
	parts := make([]part, 0, len(minutes))
	usable := hourSums && dim >= 0 && q.Filter.empty()
	if !usable {
		for _, m := range minutes {
			parts = append(parts, part{m: m})
		}
		return parts
	}
	if s.sums == nil {
		s.sums = map[hourKey]*hourSum{}
	}
	for i := 0; i < len(minutes); {
		m := minutes[i]
		start := m.start.Truncate(time.Hour)
		j := i
		sig := hourSig{}
		frozen := true
		for j < len(minutes) && minutes[j].start.Truncate(time.Hour).Equal(start) {
			sig.minutes++
			sig.vers += minutes[j].ver
			frozen = frozen && len(minutes[j].rows) == 0
			j++
		}
		whole := !start.Before(q.From) && !start.Add(time.Hour).After(q.To)
		// With a series, the hour's minutes must fall in one step.
		if q.Step > 0 && start.Sub(q.From)/q.Step != start.Add(59*time.Minute).Sub(q.From)/q.Step {
			whole = false
		}
		// The store's latest minute is never part of a summary: it still
		// takes flows without a version change being noticed in time.
		if !whole || !frozen || j == len(minutes) && minutes[j-1] == s.minutes[len(s.minutes)-1] {
			for _, m := range minutes[i:j] {
				parts = append(parts, part{m: m})
			}
			i = j
			continue
		}
		k := hourKey{start.Unix(), dim}
		h := &hourWork{key: k, start: start, minutes: minutes[i:j], sig: sig}
		if sum := s.sums[k]; sum != nil && sum.sig == sig {
			if sum.worthless {
				for _, m := range minutes[i:j] {
					parts = append(parts, part{m: m})
				}
				i = j
				continue
			}
			h.sum = sum
		}
		parts = append(parts, part{h: h})
		i = j
	}
	// Summaries of hours no longer held go.
	if len(s.minutes) > 0 {
		oldest := s.minutes[0].start.Truncate(time.Hour).Unix()
		for k := range s.sums {
			if k.hour < oldest {
				s.dropSum(k)
			}
		}
	}
	return parts
}

// maxSumRows bounds all summaries together to an eighth of the rows they
// sum, so they add at most that to the store's memory (not counted in
// Options.MaxBytes).
const maxSumRows = 8

// keepSums stores the summaries the scanners built, within maxSumRows.
func (s *Store) keepSums(parts []part) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		if p.h == nil || p.h.built == nil {
			continue
		}
		s.dropSum(p.h.key)
		if n := len(p.h.built.keys); s.sumRows+n > s.rows/maxSumRows {
			continue
		}
		s.sums[p.h.key] = p.h.built
		s.sumRows += len(p.h.built.keys)
	}
}

// dropSum forgets a summary. s.mu is held.
func (s *Store) dropSum(k hourKey) {
	if old := s.sums[k]; old != nil {
		s.sumRows -= len(old.keys)
		delete(s.sums, k)
	}
}
