// Package replay is the one-use set behind login nonces, one-use ID
// tokens and enrollment tickets: a key, once recorded, is refused until it
// expires.
//
// It is built to stay cheap when unauthenticated clients push at it: the
// set is bounded (past Max entries it refuses new keys with ErrFull rather
// than grow or forget), and expired entries leave in expiry order from a
// min-heap beside the map, so every operation is O(log n) and nothing ever
// scans the whole set. Callers record a key only after the credential it
// names has verified, so a flood of garbage never reaches it at all.
package replay

import (
	"container/heap"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

// DefaultMax is the default bound on live entries.
const DefaultMax = 100000

// Errors from Add.
var (
	// ErrReplayed: the key is already recorded and has not expired.
	ErrReplayed = errors.New("already used")
	// ErrFull: the set holds Max unexpired entries; the key was not
	// recorded. Failing closed keeps a replay from slipping through a set
	// that forgot early.
	ErrFull = errors.New("replay set full: too many one-use values are live; try again once older ones expire")
)

// Key is what the set stores: a SHA-256 of the caller's key material, so
// entries have one size whatever the input.
type Key [32]byte

// KeyOf hashes parts into a Key; parts are length-prefixed, so no two
// different lists of parts give the same key.
func KeyOf(parts ...string) Key {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		l := uint64(len(p))
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(p))
	}
	var k Key
	h.Sum(k[:0])
	return k
}

// Set is a bounded one-use set. The zero value is not usable; call New.
// Its methods are safe for concurrent use.
type Set struct {
	max int

	mu   sync.Mutex
	m    map[Key]time.Time // key -> expiry
	q    expiryHeap
	full uint64 // Adds refused with ErrFull
}

// New returns a set bounded to max live entries (DefaultMax when max <= 0).
func New(max int) *Set {
	if max <= 0 {
		max = DefaultMax
	}
	return &Set{max: max, m: map[Key]time.Time{}}
}

type entry struct {
	k   Key
	exp time.Time
}

// expiryHeap is a min-heap by expiry.
type expiryHeap []entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].exp.Before(h[j].exp) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// expireLocked removes every entry whose expiry is not after now, oldest
// first. Heap entries whose key was removed or re-recorded with another
// expiry are stale and dropped on the way.
func (s *Set) expireLocked(now time.Time) {
	for len(s.q) > 0 && !s.q[0].exp.After(now) {
		e := heap.Pop(&s.q).(entry)
		if t, ok := s.m[e.k]; ok && t.Equal(e.exp) {
			delete(s.m, e.k)
		}
	}
	// Stale heap entries (from Remove) can outnumber live ones; rebuild
	// when they do, which amortises to O(1) per Remove.
	if len(s.q) > 2*len(s.m)+64 {
		s.q = s.q[:0]
		for k, t := range s.m {
			s.q = append(s.q, entry{k, t})
		}
		heap.Init(&s.q)
	}
}

// Add records k until exp. It returns ErrReplayed when k is recorded and
// unexpired, ErrFull when the set is at its bound, else nil.
func (s *Set) Add(k Key, now, exp time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	if t, ok := s.m[k]; ok && t.After(now) {
		return ErrReplayed
	}
	if !exp.After(now) {
		return nil // already expired: nothing to remember
	}
	if len(s.m) >= s.max {
		s.full++
		return ErrFull
	}
	s.m[k] = exp
	heap.Push(&s.q, entry{k, exp})
	return nil
}

// Seen reports whether k is recorded and unexpired, without recording it.
func (s *Set) Seen(k Key, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[k]
	return ok && t.After(now)
}

// Remove forgets k, for a use that did not complete, so it may be tried
// again.
func (s *Set) Remove(k Key) {
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// Len is the number of recorded entries, expired ones not yet removed
// included.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Full is how many Adds were refused because the set was at its bound.
func (s *Set) Full() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.full
}
