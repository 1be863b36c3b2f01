package dns

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the resolver's Prometheus metrics, registered on the
// owner's registerer (none when it is nil).
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	queries          *prometheus.CounterVec
	duration         prometheus.Histogram
	malformed        prometheus.Counter
	policyMatches    *prometheus.CounterVec
	cacheLookups     *prometheus.CounterVec
	cacheHit         prometheus.Counter
	cacheMiss        prometheus.Counter
	cacheStale       prometheus.Counter
	prefetches       prometheus.Counter
	overloaded       prometheus.Counter
	unidentified     *prometheus.CounterVec
	upstreamReqs     *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	upstreamUp       *prometheus.GaugeVec
	listEntries      *prometheus.GaugeVec
	listFailures     *prometheus.CounterVec
	egressChanges    prometheus.Counter

	mu        sync.Mutex
	upstreams []string
	// hot holds the queries counter of each (proto, rcode), looked up
	// once: readers of every socket count each answer, so no lock.
	hot [4][mdns.RcodeBadCookie + 1]atomic.Pointer[prometheus.Counter]
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{reg: reg}
	m.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgegw_dns_queries_total", Help: "DNS queries answered, by transport and response code.",
	}, []string{"protocol", "rcode"})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "edgegw_dns_query_duration_seconds", Help: "Time from receiving a DNS query to answering it.",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
	})
	m.malformed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgegw_dns_dropped_queries_total", Help: "DNS messages dropped without an answer (responses sent to the server).",
	})
	m.policyMatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgegw_dns_policy_matches_total", Help: "DNS queries matched by each policy.",
	}, []string{"policy"})
	m.cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgegw_dns_cache_lookups_total", Help: "DNS cache lookups by result: hit, miss, stale (served when upstreams failed).",
	}, []string{"result"})
	m.cacheHit = m.cacheLookups.WithLabelValues("hit")
	m.cacheMiss = m.cacheLookups.WithLabelValues("miss")
	m.cacheStale = m.cacheLookups.WithLabelValues("stale")
	m.prefetches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgegw_dns_cache_prefetches_total", Help: "Popular DNS answers refreshed before they expired.",
	})
	m.overloaded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgegw_dns_overloaded_queries_total",
		Help: "DNS queries answered without upstream work (stale or SERVFAIL) because max_inflight queries were already waiting.",
	})
	m.unidentified = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgegw_dns_unidentified_queries_total",
		Help: "DNS queries from a known identity's address that did not come through the interface that owns it: answered without the identity.",
	}, []string{"protocol"})
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgegw_dns_inflight_queries", Help: "DNS queries waiting for upstream work (at most gateway.dns.max_inflight).",
	}, func() float64 { return float64(s.inflight.Load()) })
	m.upstreamReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgegw_dns_upstream_requests_total", Help: "Queries sent to each upstream, by result: ok, servfail, error.",
	}, []string{"upstream", "result"})
	m.upstreamDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "edgegw_dns_upstream_request_duration_seconds", Help: "Upstream round-trip time.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"upstream"})
	m.upstreamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edgegw_dns_upstream_up", Help: "Whether each upstream is considered healthy (1) or in backoff (0).",
	}, []string{"upstream"})
	m.listEntries = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edgegw_dns_list_entries", Help: "Domains in each list's current copy.",
	}, []string{"list"})
	m.listFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgegw_dns_list_load_failures_total", Help: "Failed reads of each domain list (the last good copy stays).",
	}, []string{"list"})
	m.egressChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgegw_dns_egress_address_changes_total",
		Help: "Changes of the default egress address read from gateway's egress interface (netlink address events).",
	})
	cacheEntries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgegw_dns_cache_entries", Help: "Answers in the DNS cache.",
	}, func() float64 { n, _ := s.cache.len(); return float64(n) })
	cacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgegw_dns_cache_size_bytes", Help: "Approximate memory held by the DNS cache.",
	}, func() float64 { _, b := s.cache.len(); return float64(b) })
	m.collectors = []prometheus.Collector{m.queries, m.duration, m.malformed, m.policyMatches,
		m.cacheLookups, m.prefetches, m.overloaded, m.unidentified, inflight, m.upstreamReqs, m.upstreamDuration, m.upstreamUp,
		m.listEntries, m.listFailures, m.egressChanges, cacheEntries, cacheBytes}
	if reg != nil {
		for _, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				s.log.Warn("register metric", "err", err)
			}
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// batchCounts are a UDP reader's counts of the batch it is answering,
// added to the shared counters once a batch (before its answers are
// sent, so a client that has its answer sees it counted): two readers
// incrementing the same counters for every cached answer made their
// cache lines move between the cores.
//
// The batch's answers are sent together once all are made, so each
// one's duration is the batch's, from the read that received it to the
// write that sends it: observed once the batch is made, one clock read a
// batch instead of one an answer.
type batchCounts struct {
	hits     uint64
	rcodes   [mdns.RcodeBadCookie + 1]uint64 // answered over UDP
	answered int                             // durations to observe
}

// flush adds b to the shared counters, with d as the duration of each
// answer, and zeroes it.
func (m *metrics) flush(b *batchCounts, d time.Duration) {
	for range b.answered {
		m.duration.Observe(d.Seconds())
	}
	if b.hits > 0 {
		m.cacheHit.Add(float64(b.hits))
	}
	for rc, n := range b.rcodes {
		if n > 0 {
			m.counter(0, rc).Add(float64(n))
		}
	}
	*b = batchCounts{}
}

// counter returns the queries counter of transport p (0 udp, 1 tcp, 2
// https, 3 tls) and rcode, which is within hot's bounds.
func (m *metrics) counter(p, rcode int) prometheus.Counter {
	slot := &m.hot[p][rcode]
	c := slot.Load()
	if c == nil {
		// Racing readers store the same counter.
		name := mdns.RcodeToString[rcode]
		if name == "" {
			name = "OTHER"
		}
		cc := m.queries.WithLabelValues([...]string{"udp", "tcp", "https", "tls"}[p], name)
		c = &cc
		slot.Store(c)
	}
	return *c
}

func (m *metrics) observe(q *query, out *mdns.Msg, d time.Duration) {
	if q.counts == nil {
		m.duration.Observe(d.Seconds())
	}
	if q.counts != nil && out.Rcode >= 0 && out.Rcode < len(q.counts.rcodes) {
		q.counts.rcodes[out.Rcode]++
		return
	}
	p := 0
	switch q.proto {
	case "tcp":
		p = 1
	case "https":
		p = 2
	case "tls":
		p = 3
	}
	name := func() string {
		if n := mdns.RcodeToString[out.Rcode]; n != "" {
			return n
		}
		return "OTHER"
	}
	if out.Rcode < 0 || out.Rcode >= len(m.hot[p]) {
		m.queries.WithLabelValues(q.proto, name()).Inc()
		return
	}
	m.counter(p, out.Rcode).Inc()
}

func (m *metrics) upstreamResult(spec, result string) {
	m.upstreamReqs.WithLabelValues(spec, result).Inc()
}

// setUpstreams drops the series of upstreams no longer configured.
func (m *metrics) setUpstreams(ups []*upstream) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := make([]string, len(ups))
	for i, u := range ups {
		now[i] = u.spec
		if u.fails.Load() < failThreshold {
			m.upstreamUp.WithLabelValues(u.spec).Set(1)
		}
	}
	for _, old := range m.upstreams {
		keep := false
		for _, n := range now {
			keep = keep || n == old
		}
		if !keep {
			m.upstreamUp.DeleteLabelValues(old)
			m.upstreamDuration.DeleteLabelValues(old)
			m.upstreamReqs.DeletePartialMatch(prometheus.Labels{"upstream": old})
		}
	}
	m.upstreams = now
}

// forget drops the series of lists and policies that old had and c has not.
func (m *metrics) forget(old, c *Config) {
	if old == nil {
		return
	}
	for name := range old.Lists {
		if _, ok := c.Lists[name]; !ok {
			m.listEntries.DeleteLabelValues(name)
			m.listFailures.DeleteLabelValues(name)
		}
	}
	for _, p := range old.Policies {
		if !slices.ContainsFunc(c.Policies, func(q Policy) bool { return q.ID == p.ID }) {
			m.policyMatches.DeleteLabelValues(p.ID)
		}
	}
}
