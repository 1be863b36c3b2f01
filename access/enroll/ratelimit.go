package enroll

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the per-source limit on enrollment requests.
const (
	// DefaultRate is the sustained rate of enrollment requests one source
	// address may make: a device enrolls once, so even an office behind
	// one NAT address stays far below it.
	DefaultRate = 1.0 // per second
	// DefaultBurst is how many requests a source may make at once.
	DefaultBurst = 30
	// maxSources bounds the limiter's table; past it the source seen
	// longest ago is forgotten.
	maxSources = 16384
)

// limiter is a token bucket per source address in a bounded table. IPv6
// sources are keyed by their /64, which one host usually holds whole.
// The least recently seen source leaves first (a list beside the map), so
// no operation scans the table.
type limiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int

	mu  sync.Mutex
	m   map[netip.Addr]*list.Element
	lru list.List // of *bucket, most recent at the front
}

type bucket struct {
	src    netip.Addr
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst, max int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), max: max, m: map[netip.Addr]*list.Element{}}
}

// sourceKey is the table key for an address.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allow takes a token from src's bucket; false means the source is over
// its limit, and retry is when its next token is due.
func (l *limiter) allow(src netip.Addr, now time.Time) (ok bool, retry time.Duration) {
	k := sourceKey(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, found := l.m[k]; found {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		if el := now.Sub(b.last).Seconds(); el > 0 {
			b.tokens = min(l.burst, b.tokens+el*l.rate)
		}
		b.last = now
	} else {
		if len(l.m) >= l.max {
			old := l.lru.Back()
			l.lru.Remove(old)
			delete(l.m, old.Value.(*bucket).src)
		}
		b = &bucket{src: k, tokens: l.burst, last: now}
		l.m[k] = l.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// len is the number of sources in the table.
func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
