package dns

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Cache limits. Answers keep at most maxTTL; stale answers are kept for
// staleFor after expiry (RFC 8767 suggests one to three days) and served
// with staleTTL when every upstream fails. A name asked at least
// prefetchHits times during its TTL is refreshed in the background once
// less than a tenth of its TTL remains.
const (
	maxTTL       = 24 * time.Hour
	staleFor     = 24 * time.Hour
	staleTTL     = 30
	prefetchHits = 3
	minPrefetch  = 10 * time.Second
	cacheShards  = 64
)

// An entry's accounted size, which cache_mb bounds, is what it holds on
// the heap once answered both in its first second and later, each time
// from its wire form: the entry, its map slot and key, the message with
// its question (entryBytes); each record twice, the message's and the
// aged copy's (rrBytes); and the records' names and data, then both
// sections' wire forms (3 × the message's packed length). The
// constants are a measured bound, a little above what
// TestCacheSizeBoundsHeap finds for answers of one to four records,
// CNAME chains, long TXT and negative answers with an SOA.
const (
	entryBytes = 640
	rrBytes    = 200
)

// entrySize is the heap m's entry is accounted for.
func entrySize(m *mdns.Msg) int {
	return entryBytes + rrBytes*(len(m.Answer)+len(m.Ns)+len(m.Extra)) + 3*m.Len()
}

// cacheKey identifies a cached answer. The DO and CD bits change what an
// upstream returns, so they are part of the key.
type cacheKey struct {
	name   string // canonical
	qtype  uint16
	qclass uint16
	do, cd bool
	// egress is the client's egress address: answers depend on the
	// subnet sent for it and on the address asked from (egress.go).
	egress netip.Addr
}

// entry is one cached answer. msg is never modified after insertion.
type entry struct {
	msg      *mdns.Msg // without OPT, ID 0
	ips      []netip.Addr
	cnames   []string
	stored   time.Time
	ttl      time.Duration
	size     int
	hits     atomic.Uint32
	fetching atomic.Bool
	aged     atomic.Pointer[agedRRs] // the records with TTLs of one age
	young    atomic.Pointer[agedRRs] // msg's own records, for hits in the first second
}

// agedRRs are an entry's records with their TTLs lowered by sec seconds.
// Hits within the same second share them, so that a popular answer is
// copied once a second, not once a query. Never modified once stored.
type agedRRs struct {
	sec               uint32
	answer, ns, extra []mdns.RR
	// wire is the three sections packed (uncompressed, as an answer that
	// fits is sent), made by the first UDP answer that needs it, so
	// that hits within the second copy bytes instead of packing records.
	wire atomic.Pointer[[]byte]
}

// fresh returns e's own records (a hit within a second of storing),
// as agedRRs so that their wire form is kept.
func (e *entry) fresh() *agedRRs {
	if a := e.young.Load(); a != nil {
		return a
	}
	a := &agedRRs{answer: e.msg.Answer, ns: e.msg.Ns, extra: e.msg.Extra}
	e.young.Store(a) // a racing hit may store its own, equal one
	return a
}

// packed returns a's sections in wire form, or nil if they do not pack.
func (a *agedRRs) packed() []byte {
	if w := a.wire.Load(); w != nil {
		return *w
	}
	// A message of the sections alone: Pack neither compresses (Compress
	// is false) nor modifies the shared records.
	m := mdns.Msg{Answer: a.answer, Ns: a.ns, Extra: a.extra}
	b, err := m.Pack()
	if err != nil || len(b) < 12 {
		return nil
	}
	w := b[12:] // after the header
	a.wire.Store(&w)
	return w
}

// agedBy returns e's records aged by age, making them if needed.
func (e *entry) agedBy(age time.Duration) *agedRRs {
	sec := uint32(age / time.Second)
	if a := e.aged.Load(); a != nil && a.sec == sec {
		return a
	}
	a := &agedRRs{sec: sec, answer: ageTTLs(e.msg.Answer, age, 0), ns: ageTTLs(e.msg.Ns, age, 0), extra: ageTTLs(e.msg.Extra, age, 0)}
	e.aged.Store(a) // a racing hit may store its own, equal copy
	return a
}

func (e *entry) expires() time.Time { return e.stored.Add(e.ttl) }

// cache is a sharded, size-bounded answer cache.
type cache struct {
	seed     maphash.Seed
	maxBytes atomic.Int64 // per shard
	shards   [cacheShards]shard
}

type shard struct {
	mu    sync.Mutex
	m     map[cacheKey]*entry
	bytes int64
}

func newCache(maxBytes int64) *cache {
	c := &cache{seed: maphash.MakeSeed()}
	c.setMax(maxBytes)
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]*entry)
	}
	return c
}

func (c *cache) setMax(maxBytes int64) { c.maxBytes.Store(max(maxBytes/cacheShards, 4096)) }

func (c *cache) shard(k *cacheKey) *shard {
	h := maphash.String(c.seed, k.name) + uint64(k.qtype)
	return &c.shards[h%cacheShards]
}

// get returns the entry for k, fresh or stale, or nil.
func (c *cache) get(k cacheKey, now time.Time) (e *entry, fresh bool) {
	s := c.shard(&k)
	s.mu.Lock()
	e = s.m[k]
	s.mu.Unlock()
	if e == nil {
		return nil, false
	}
	exp := e.expires()
	if now.Before(exp) {
		return e, true
	}
	if now.Before(exp.Add(staleFor)) {
		return e, false
	}
	return nil, false
}

// put caches r, the answer to k, if it may be cached (RFC 2308 for
// negative answers). It returns the entry, or nil.
func (c *cache) put(k cacheKey, r *mdns.Msg, now time.Time) *entry {
	ttl, ok := cacheTTL(r)
	if !ok || ttl <= 0 {
		return nil
	}
	e := newEntry(r, now, ttl)
	s := c.shard(&k)
	limit := c.maxBytes.Load()
	if int64(e.size) > limit/4 {
		return e // too big for the cache; still usable by the caller
	}
	s.mu.Lock()
	if old := s.m[k]; old != nil {
		s.bytes -= int64(old.size)
	}
	s.m[k] = e
	s.bytes += int64(e.size)
	for s.bytes > limit && len(s.m) > 1 {
		s.evict(k, now)
	}
	s.mu.Unlock()
	return e
}

// evict removes one entry other than keep: of a few that map iteration
// offers (in random order), the one that expires first.
func (s *shard) evict(keep cacheKey, now time.Time) {
	var victim cacheKey
	var ve *entry
	n := 0
	for k, e := range s.m {
		if k == keep {
			continue
		}
		if ve == nil || e.expires().Before(ve.expires()) {
			victim, ve = k, e
		}
		if n++; n == 4 || now.After(e.expires().Add(staleFor)) {
			break
		}
	}
	if ve != nil {
		delete(s.m, victim)
		s.bytes -= int64(ve.size)
	}
}

// len returns the number of entries and their approximate bytes.
func (c *cache) len() (n int, bytes int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		bytes += s.bytes
		s.mu.Unlock()
	}
	return n, bytes
}

// flush empties the cache.
func (c *cache) flush() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.bytes = 0
		s.mu.Unlock()
	}
}

func newEntry(r *mdns.Msg, now time.Time, ttl time.Duration) *entry {
	m := r.Copy()
	m.Id = 0
	m.Extra = withoutOPT(m.Extra)
	e := &entry{msg: m, stored: now, ttl: ttl, size: entrySize(m)}
	e.ips, e.cnames = answerData(m)
	return e
}

// cacheTTL returns how long r may be cached: the smallest TTL of its
// answer and authority records for a positive answer; for NXDOMAIN and
// NODATA the smaller of the SOA's TTL and minimum field (RFC 2308 §5);
// negative answers without an SOA and failures are not cached.
func cacheTTL(r *mdns.Msg) (time.Duration, bool) {
	switch {
	case r.Truncated:
		return 0, false
	case r.Rcode == mdns.RcodeNameError || r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 0:
		for _, rr := range r.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, 3*time.Hour), true
			}
		}
		return 0, false
	case r.Rcode != mdns.RcodeSuccess:
		return 0, false
	}
	ttl := uint32(1<<32 - 1)
	for _, sec := range [][]mdns.RR{r.Answer, r.Ns} {
		for _, rr := range sec {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return min(time.Duration(ttl)*time.Second, maxTTL), true
}

// answerData returns the addresses and CNAME targets of r's answer.
func answerData(r *mdns.Msg) (ips []netip.Addr, cnames []string) {
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
				ips = append(ips, a)
			}
		case *mdns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA.To16()); ok {
				ips = append(ips, a)
			}
		case *mdns.CNAME:
			cnames = append(cnames, canonical(rr.Target))
		}
	}
	return ips, cnames
}

func withoutOPT(rrs []mdns.RR) []mdns.RR {
	out := rrs[:0:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != mdns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// ageTTLs returns copies of rrs with TTLs lowered by age, or set to fixed
// when fixed is non-zero.
func ageTTLs(rrs []mdns.RR, age time.Duration, fixed uint32) []mdns.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]mdns.RR, len(rrs))
	sec := uint32(age / time.Second)
	for i, rr := range rrs {
		c := mdns.Copy(rr)
		h := c.Header()
		switch {
		case fixed != 0:
			h.Ttl = fixed
		case h.Ttl > sec:
			h.Ttl -= sec
		default:
			h.Ttl = 0
		}
		out[i] = c
	}
	return out
}
