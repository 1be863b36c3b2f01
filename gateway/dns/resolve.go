package dns

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// queryTimeout bounds one resolution across every upstream.
const queryTimeout = 5 * time.Second

// result is the outcome of resolving one question.
type result struct {
	msg    *mdns.Msg // the answer without OPT; shared, read-only; nil on failure
	e      *entry    // the cache entry it came from or went to, if any
	cached bool
	stale  bool
	age    time.Duration
	err    error
}

// resolve answers key from the cache or the upstreams. With q.noWait set
// and no fresh answer cached, it sets q.wouldWait instead.
func (s *Server) resolve(snap *snapshot, key cacheKey, q *query) result {
	// The query's start is the freshness clock: microseconds old, and a
	// clock read less for each cached answer.
	var now time.Time
	if q != nil && !q.start.IsZero() {
		now = q.start
	} else {
		now = s.now()
	}
	e, fresh := s.cache.get(key, now)
	if e != nil && fresh {
		if q != nil && q.counts != nil {
			q.counts.hits++
		} else {
			s.m.cacheHit.Inc()
		}
		s.maybePrefetch(snap, key, e, now)
		return result{msg: e.msg, e: e, cached: true, age: now.Sub(e.stored)}
	}
	if q != nil && !q.held {
		// Upstream work is bounded: past max_inflight a query gets what
		// the cache still has, or SERVFAIL at once, instead of a socket
		// and a goroutine that wait for an authority that may never answer.
		if !s.acquire(snap) {
			s.m.cacheMiss.Inc()
			s.m.overloaded.Inc()
			s.warnOverloaded(now, snap)
			if e != nil {
				s.m.cacheStale.Inc()
				return result{msg: e.msg, e: e, cached: true, stale: true, age: now.Sub(e.stored)}
			}
			return result{err: errOverloaded}
		}
		q.held = true
		if q.noWait {
			// The slot goes with the query to the goroutine that waits.
			q.wouldWait = true
			return result{}
		}
	}
	s.m.cacheMiss.Inc()
	r, err := s.flight.do(key, func() (*mdns.Msg, error) { return s.forward(snap, key) })
	if err != nil || r.Rcode == mdns.RcodeServerFailure {
		if e != nil {
			s.m.cacheStale.Inc()
			return result{msg: e.msg, e: e, cached: true, stale: true, age: now.Sub(e.stored)}
		}
		if err != nil {
			return result{err: err}
		}
	}
	ne := s.cache.put(key, r, s.now())
	if ne != nil {
		return result{msg: ne.msg, e: ne}
	}
	m := *r
	m.Extra = withoutOPT(r.Extra)
	return result{msg: &m}
}

// errOverloaded means max_inflight queries were already waiting for
// upstreams.
var errOverloaded = errors.New("too many queries waiting for upstreams")

// acquire takes one of snap's max_inflight slots for upstream work, if one
// is free; [Server.release] gives it back.
func (s *Server) acquire(snap *snapshot) bool {
	if s.inflight.Add(1) > int64(snap.cfg.MaxInflight) {
		s.inflight.Add(-1)
		return false
	}
	return true
}

func (s *Server) release() { s.inflight.Add(-1) }

// overloadLogEvery spaces the log lines that say max_inflight was reached.
const overloadLogEvery = time.Minute

// warnOverloaded logs, at most once every overloadLogEvery, that queries
// are being answered past max_inflight: a flood of names nobody answers,
// or upstreams too slow for the load.
func (s *Server) warnOverloaded(now time.Time, snap *snapshot) {
	last := s.overloadLogged.Load()
	if now.UnixNano()-last < int64(overloadLogEvery) || !s.overloadLogged.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	s.log.Warn("queries waiting for upstreams reached max_inflight: answering the others from the cache or with SERVFAIL "+
		"(edgegw_dns_overloaded_queries_total counts them)", "max_inflight", snap.cfg.MaxInflight)
}

// maybePrefetch refreshes a popular entry in the background shortly before
// it expires.
func (s *Server) maybePrefetch(snap *snapshot, key cacheKey, e *entry, now time.Time) {
	hits := e.hits.Add(1)
	if hits < prefetchHits || e.ttl < minPrefetch || e.expires().Sub(now) > e.ttl/10 {
		return
	}
	if !e.fetching.CompareAndSwap(false, true) {
		return
	}
	select {
	case s.prefetchSem <- struct{}{}:
	default:
		e.fetching.Store(false)
		return
	}
	s.mu.Lock()
	running := s.runCtx != nil && s.runCtx.Err() == nil
	if running {
		s.bg.Add(1)
	}
	s.mu.Unlock()
	if !running {
		<-s.prefetchSem
		e.fetching.Store(false)
		return
	}
	go func() {
		defer s.bg.Done()
		defer func() { <-s.prefetchSem }()
		s.m.prefetches.Inc()
		r, err := s.flight.do(key, func() (*mdns.Msg, error) { return s.forward(snap, key) })
		if err != nil || r.Rcode == mdns.RcodeServerFailure {
			e.fetching.Store(false)
			return
		}
		if ne := s.cache.put(key, r, s.now()); ne == nil {
			e.fetching.Store(false)
		}
	}()
}

// upstreamQuery is what is sent upstream for key: a fresh message with RD,
// the client's CD and DO bits, edgegw's EDNS size and the client subnet
// the upstream's ecs mode gives for the key's egress (egress.go). Nothing
// else of the client's message (its ECS or other options) is forwarded.
func upstreamQuery(mode ecsMode, key cacheKey) *mdns.Msg {
	q := &mdns.Msg{
		MsgHdr:   mdns.MsgHdr{Id: mdns.Id(), RecursionDesired: true, CheckingDisabled: key.cd},
		Question: []mdns.Question{{Name: mdns.Fqdn(key.name), Qtype: key.qtype, Qclass: key.qclass}},
	}
	opt := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
	opt.SetUDPSize(ednsSize)
	if key.do {
		opt.SetDo()
	}
	if ecs := mode.subnetOption(key.egress); ecs != nil {
		opt.Option = append(opt.Option, ecs)
	}
	q.Extra = []mdns.RR{opt}
	return q
}

// forward asks the upstreams in order, healthy ones first, until one
// answers with something other than SERVFAIL or REFUSED.
func (s *Server) forward(snap *snapshot, key cacheKey) (*mdns.Msg, error) {
	pctx := s.rctx.Load()
	if pctx == nil {
		return nil, ErrNotRunning
	}
	ctx, cancel := context.WithTimeout(*pctx, queryTimeout)
	defer cancel()
	if key.egress.IsValid() {
		ctx = WithEgress(ctx, key.egress)
	}
	now := s.now()
	order := make([]int, 0, len(snap.ups))
	for i, u := range snap.ups {
		if u.healthy(now) {
			order = append(order, i)
		}
	}
	for i, u := range snap.ups {
		if !u.healthy(now) {
			order = append(order, i)
		}
	}
	var last *mdns.Msg
	var errs []error
	for _, i := range order {
		if ctx.Err() != nil {
			break
		}
		u := snap.ups[i]
		q := upstreamQuery(snap.ecs[i], key)
		start := time.Now()
		r, err := u.exchange(ctx, q)
		s.m.upstreamDuration.WithLabelValues(u.spec).Observe(time.Since(start).Seconds())
		if err == nil && (len(r.Question) != 1 || r.Question[0].Qtype != key.qtype || canonical(r.Question[0].Name) != key.name) {
			err = errors.New("answer does not match the question")
		}
		if err != nil {
			s.m.upstreamResult(u.spec, "error")
			errs = append(errs, fmt.Errorf("%s: %w", u.spec, err))
			if u.markFailed(s.now(), err) {
				s.m.upstreamUp.WithLabelValues(u.spec).Set(0)
				s.log.Warn("upstream down", "upstream", u.spec, "err", err)
			}
			continue
		}
		if u.fails.Load() >= failThreshold {
			s.log.Info("upstream up again", "upstream", u.spec)
		}
		u.markOK()
		s.m.upstreamUp.WithLabelValues(u.spec).Set(1)
		if r.Rcode == mdns.RcodeServerFailure || r.Rcode == mdns.RcodeRefused {
			s.m.upstreamResult(u.spec, "servfail")
			last = r
			continue
		}
		s.m.upstreamResult(u.spec, "ok")
		return r, nil
	}
	if last != nil {
		return last, nil
	}
	if len(errs) == 0 {
		errs = append(errs, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %w", errUpstream, errors.Join(errs...))
}

// flight collapses concurrent identical upstream queries into one.
type flight struct {
	mu sync.Mutex
	m  map[cacheKey]*call
}

type call struct {
	done chan struct{}
	r    *mdns.Msg
	err  error
}

func (f *flight) do(key cacheKey, fn func() (*mdns.Msg, error)) (*mdns.Msg, error) {
	f.mu.Lock()
	if c, ok := f.m[key]; ok {
		f.mu.Unlock()
		<-c.done
		return c.r, c.err
	}
	if f.m == nil {
		f.m = make(map[cacheKey]*call)
	}
	c := &call{done: make(chan struct{})}
	f.m[key] = c
	f.mu.Unlock()
	c.r, c.err = fn()
	f.mu.Lock()
	delete(f.m, key)
	f.mu.Unlock()
	close(c.done)
	return c.r, c.err
}
