package wireguard

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Looking up the sender of a handshake initiation from a key the device
// does not hold costs one X25519 (≈ 0.1 ms) and a registry lookup, and
// anyone who knows the gateway's public key can make initiations whose
// mac1 is valid. The budget keeps that work bounded and fair:
//
//   - each source (an IPv4 address, or an IPv6 /64) gets sourceRate
//     lookups a second with bursts of sourceBurst, so one sender, however
//     fast, takes a tiny share;
//   - all sources together get globalRate a second, the CPU bound;
//   - once more than loadThreshold lookups a second are wanted, the
//     device is under load for underLoadFor after the last such second,
//     and an initiation gets a lookup only if it carries a valid mac2:
//     WireGuard's cookie (the whitepaper, 5.4.7), which the sender can only
//     have had if it receives at its source address. Spoofed sources, the
//     only way to have a fresh budget per packet, then get a cookie reply
//     and no lookup; a real device answers the cookie and gets its lookup
//     on its next attempt (wireguard-go retries after 5 seconds).
const (
	sourceRate    = 10 // lookups per second and source
	sourceBurst   = 20
	globalRate    = 1000 // lookups per second, all sources: a tenth of a core
	globalBurst   = 1000
	loadThreshold = 250 // lookups wanted per second that put the device under load
	// underLoadFor is how long load lasts after the last second that
	// reached the threshold: long enough that a flood that varies (or an
	// attacker who pulses, to get the threshold's worth of lookups each
	// time load ends) does not get in and out of it every second.
	underLoadFor = 5 * time.Second
	// Sources are remembered in two generations of a table: a source not
	// seen for one to two periods is forgotten, which loses nothing once
	// the period is longer than a bucket takes to refill (sourceBurst /
	// sourceRate = 2 s): its bucket would be full again anyway. A table
	// that reaches maxSources starts the next generation early, so memory
	// stays bounded (2 × maxSources entries, about 200 KB) without ever
	// scanning the table.
	sourcePeriod = 10 * time.Second
	maxSources   = 4096
)

// budgetVerdict is what the budget says of one initiation.
type budgetVerdict int

const (
	lookUp        budgetVerdict = iota // within budget: look the sender up
	needCookie                         // under load and no valid mac2: answer with a cookie reply
	limitedSource                      // the source used its budget
	limitedGlobal                      // all sources together used theirs
)

// tokenBucket holds up to burst tokens, refilled at rate per second.
type tokenBucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

func (b *tokenBucket) take(now int64, rate, burst float64) bool {
	if b.last == 0 {
		b.tokens = burst
	} else if dt := now - b.last; dt > 0 {
		b.tokens = min(burst, b.tokens+float64(dt)*rate/1e9)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// lookupBudget decides which initiations get a lookup. Safe for
// concurrent use; one mutex, held for a few map operations.
type lookupBudget struct {
	now       func() time.Time
	loadUntil atomic.Int64 // unix nanoseconds: under load before this

	mu      sync.Mutex
	cur     map[netip.Addr]tokenBucket
	prev    map[netip.Addr]tokenBucket
	rotated int64 // when cur began
	global  tokenBucket
	window  int64 // the second demand counts (unix seconds)
	demand  int   // lookups wanted in that second
}

func newLookupBudget(now func() time.Time) *lookupBudget {
	if now == nil {
		now = time.Now
	}
	return &lookupBudget{now: now, cur: map[netip.Addr]tokenBucket{}, prev: map[netip.Addr]tokenBucket{}}
}

// underLoad reports whether initiations must carry a valid mac2 now.
func (b *lookupBudget) underLoad() bool {
	return b.now().UnixNano() < b.loadUntil.Load()
}

// sourceOf is the unit a budget is kept for: the address, or for IPv6 its
// /64, which one subscriber usually holds whole.
func sourceOf(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// admit counts one initiation with a valid mac1 from src. underLoad is
// what underLoad returned for it, and proven whether it carries a valid
// mac2 (only looked at under load).
func (b *lookupBudget) admit(src netip.Addr, underLoad, proven bool) budgetVerdict {
	now := b.now().UnixNano()
	b.mu.Lock()
	defer b.mu.Unlock()
	if underLoad && !proven {
		// Wanted all the same: a flood of spoofed sources keeps the
		// device under load while it lasts.
		b.want(now)
		return needCookie
	}
	key := sourceOf(src)
	if now-b.rotated >= int64(sourcePeriod) || len(b.cur) >= maxSources {
		b.prev, b.cur, b.rotated = b.cur, make(map[netip.Addr]tokenBucket, len(b.cur)), now
	}
	tb, ok := b.cur[key]
	if !ok {
		tb = b.prev[key] // zero, a full bucket, if forgotten
	}
	allowed := tb.take(now, sourceRate, sourceBurst)
	b.cur[key] = tb
	if !allowed {
		return limitedSource
	}
	b.want(now)
	if !b.global.take(now, globalRate, globalBurst) {
		return limitedGlobal
	}
	return lookUp
}

// want counts one wanted lookup; b.mu is held.
func (b *lookupBudget) want(now int64) {
	sec := now / int64(time.Second)
	if sec != b.window {
		b.window, b.demand = sec, 0
	}
	b.demand++
	if b.demand >= loadThreshold {
		b.loadUntil.Store(now + int64(underLoadFor))
	}
}

// sources is how many sources the budget remembers (for tests).
func (b *lookupBudget) sources() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.cur) + len(b.prev)
}
