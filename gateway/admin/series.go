package admin

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The console's plots read a history kept in process, bounded: every
// series at three resolutions (10 s for an hour, 1 min for a day, 10 min
// for a week), each a ring of float32 averages, so a series costs the
// same whatever ran: 2,808 slots of 8 bytes (22 KB). No time-series database;
// /metrics stays for Prometheus.

// tiers are the resolutions and how far back each reaches.
var tiers = [...]struct {
	step, span time.Duration
}{
	{10 * time.Second, time.Hour},
	{time.Minute, 24 * time.Hour},
	{10 * time.Minute, 7 * 24 * time.Hour},
}

// maxSeries bounds the number of series (rules and tunnels are named by
// the configuration); a series past it is not kept, and counted.
const maxSeries = 1024

// sampleEvery is how often the sampler reads the metrics.
const sampleEvery = 10 * time.Second

// ring is one resolution of a series: slot e%len holds the average of
// the samples of step e (an epoch, Unix seconds / step).
type ring struct {
	step int64
	vals []float32
	// epochs are 32 bits: Unix seconds / 10 fits until the year 3331.
	epochs []uint32
	// The current step's running sum.
	cur  int64
	sum  float64
	nsum int
}

func (r *ring) add(t int64, v float64) {
	e := t / r.step
	if e != r.cur || r.nsum == 0 {
		r.cur, r.sum, r.nsum = e, 0, 0
	}
	r.sum += v
	r.nsum++
	i := e % int64(len(r.vals))
	r.vals[i], r.epochs[i] = float32(r.sum/float64(r.nsum)), uint32(e)
}

// series is one named series at every resolution.
type series struct {
	tiers [len(tiers)]ring
}

func newSeries() *series {
	s := &series{}
	for i, t := range tiers {
		n := int(t.span / t.step)
		s.tiers[i] = ring{step: int64(t.step / time.Second), vals: make([]float32, n), epochs: make([]uint32, n)}
	}
	return s
}

// seriesStore is the history: named series, each sampled by the
// sampler.
type seriesStore struct {
	mu      sync.Mutex
	m       map[string]*series
	dropped int
}

func newSeriesStore() *seriesStore { return &seriesStore{m: map[string]*series{}} }

// add records v for the series name at t; NaN and infinities are not
// values.
func (st *seriesStore) add(name string, t time.Time, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.m[name]
	if s == nil {
		if len(st.m) >= maxSeries {
			st.dropped++
			return
		}
		s = newSeries()
		st.m[name] = s
	}
	for i := range s.tiers {
		s.tiers[i].add(t.Unix(), v)
	}
}

// SeriesPoint is a time (Unix seconds) and a value; OK false: no sample
// in that step (written as null).
type SeriesPoint struct {
	T  int64
	V  float32
	OK bool
}

// SeriesData is one series over a window at one resolution.
type SeriesData struct {
	Name string
	// Step is the resolution, in seconds.
	Step   int64
	Points []SeriesPoint
}

// MarshalJSON writes {"name", "step", "start", "values": [v|null, …]}
// directly, point i at start + i·step: a week of a hundred series is a
// hundred thousand points, too many for reflection (or for a time
// beside each) within the API's 50 ms.
func (d SeriesData) MarshalJSON() ([]byte, error) {
	return d.appendJSON(nil)
}

func (d SeriesData) appendJSON(b []byte) ([]byte, error) {
	name, err := json.Marshal(d.Name)
	if err != nil {
		return nil, err
	}
	var start int64
	if len(d.Points) > 0 {
		start = d.Points[0].T
	}
	b = slices.Grow(b, 64+len(d.Points)*8)
	b = append(b, `{"name":`...)
	b = append(b, name...)
	b = append(b, `,"step":`...)
	b = strconv.AppendInt(b, d.Step, 10)
	b = append(b, `,"start":`...)
	b = strconv.AppendInt(b, start, 10)
	b = append(b, `,"values":[`...)
	for i, p := range d.Points {
		if i > 0 {
			b = append(b, ',')
		}
		if p.OK {
			b = strconv.AppendFloat(b, float64(p.V), 'g', 5, 32)
		} else {
			b = append(b, "null"...)
		}
	}
	return append(b, "]}"...), nil
}

// query returns the series whose names start with one of prefixes, over
// window up to now, at the finest resolution that reaches back so far.
func (st *seriesStore) query(prefixes []string, window time.Duration, now time.Time) []SeriesData {
	ti := len(tiers) - 1
	for i, t := range tiers {
		if window <= t.span {
			ti = i
			break
		}
	}
	window = min(window, tiers[len(tiers)-1].span)
	st.mu.Lock()
	defer st.mu.Unlock()
	out := []SeriesData{}
	for name, s := range st.m {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		r := &s.tiers[ti]
		last := now.Unix() / r.step
		first := (now.Add(-window).Unix() + r.step - 1) / r.step
		d := SeriesData{Name: name, Step: r.step, Points: make([]SeriesPoint, 0, last-first+1)}
		for e := first; e <= last; e++ {
			i := e % int64(len(r.vals))
			p := SeriesPoint{T: e * r.step}
			if int64(r.epochs[i]) == e {
				p.V, p.OK = r.vals[i], true
			}
			d.Points = append(d.Points, p)
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b SeriesData) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// sampler turns the registry's counters and gauges into the console's
// series: rates from counters (the change since the last sample),
// gauges as they are.
type sampler struct {
	reg   prometheus.Gatherer
	store *seriesStore
	prev  map[string]float64
	prevT time.Time
}

// Series names. A tunnel's and a rule's name follows the colon.
const (
	seriesThroughputIn  = "throughput.in_bps"
	seriesThroughputOut = "throughput.out_bps"
	seriesDNSQueries    = "dns.queries_per_second"
	seriesDNSHits       = "dns.cache_hit_percent"
	seriesTunnelRTT     = "tunnel.rtt_ms:"
	seriesTunnelLoss    = "tunnel.loss_percent:"
	seriesRulePackets   = "firewall.packets_per_second:"
)

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sample reads the registry once and adds a point to each series.
func (sm *sampler) sample(now time.Time) error {
	fams, err := sm.reg.Gather()
	if err != nil && len(fams) == 0 {
		return err
	}
	// Counter totals, keyed; then rates against the previous sample.
	totals := map[string]float64{}
	gauges := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			c := m.GetCounter().GetValue()
			switch f.GetName() {
			case "edgegw_wireguard_peer_receive_bytes_total", "edgegw_gre_received_bytes_total":
				totals["in"] += c
			case "edgegw_wireguard_peer_transmit_bytes_total", "edgegw_gre_sent_bytes_total":
				totals["out"] += c
			case "edgegw_ipsec_bytes_total":
				totals[label(m, "direction")] += c
			case "edgegw_dns_queries_total":
				totals["dns"] += c
			case "edgegw_dns_cache_lookups_total":
				totals["dns."+label(m, "result")] += c
			case "edgegw_tunnel_health_probes_total":
				totals["probes:"+label(m, "tunnel")] += c
			case "edgegw_tunnel_health_probe_failures_total":
				totals["failed:"+label(m, "tunnel")] += c
			case "edgegw_firewall_rule_packets_total":
				totals["rule:"+label(m, "rule")] += c
			case "edgegw_tunnel_latency_seconds":
				gauges[seriesTunnelRTT+label(m, "tunnel")] = m.GetGauge().GetValue() * 1000
			}
		}
	}
	for name, v := range gauges {
		sm.store.add(name, now, v)
	}
	prev, dt := sm.prev, now.Sub(sm.prevT).Seconds()
	sm.prev, sm.prevT = totals, now
	if prev == nil || dt <= 0 {
		return nil
	}
	// delta is a counter's change; false when it is new or was reset
	// (a reload that re-made it).
	delta := func(k string) (float64, bool) {
		p, ok := prev[k]
		if !ok || totals[k] < p {
			return 0, false
		}
		return totals[k] - p, true
	}
	rate := func(name, k string, scale float64) {
		if d, ok := delta(k); ok {
			sm.store.add(name, now, d/dt*scale)
		}
	}
	rate(seriesThroughputIn, "in", 8)
	rate(seriesThroughputOut, "out", 8)
	if _, ok := totals["dns"]; ok {
		rate(seriesDNSQueries, "dns", 1)
		h, ok1 := delta("dns.hit")
		mi, ok2 := delta("dns.miss")
		s, _ := delta("dns.stale")
		if ok1 && ok2 && h+mi+s > 0 {
			sm.store.add(seriesDNSHits, now, 100*h/(h+mi+s))
		}
	}
	for k := range totals {
		switch {
		case strings.HasPrefix(k, "probes:"):
			name := strings.TrimPrefix(k, "probes:")
			p, ok1 := delta(k)
			f, ok2 := delta("failed:" + name)
			if ok1 && ok2 && p > 0 {
				sm.store.add(seriesTunnelLoss+name, now, 100*min(f, p)/p)
			}
		case strings.HasPrefix(k, "rule:"):
			rate(seriesRulePackets+strings.TrimPrefix(k, "rule:"), k, 1)
		}
	}
	return nil
}

// PathSeries serves the plots' history.
const PathSeries = "/api/v1/series"

// SeriesAnswer answers GET /api/v1/series (written by listSeries).
type SeriesAnswer struct {
	// Window is how far back, in seconds.
	Window int64 `json:"window"`
	// Dropped counts samples of series past the bound (maxSeries).
	Dropped int          `json:"dropped"`
	Series  []SeriesData `json:"series"`
}

// parseWindow reads a window: a Go duration or a number of days ("7d").
func parseWindow(s string) (time.Duration, error) {
	if s == "" {
		return time.Hour, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("window %q: a duration (1h, 24h) or days (7d)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	w, err := time.ParseDuration(s)
	if err != nil || w <= 0 {
		return 0, fmt.Errorf("window %q: a duration (1h, 24h) or days (7d)", s)
	}
	return w, nil
}

// listSeries serves GET /api/v1/series?name=PREFIX,…&window=1h: the
// series whose names start with a prefix, over the window.
func (s *Server) listSeries(w http.ResponseWriter, r *http.Request) {
	win, err := parseWindow(r.URL.Query().Get("window"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	var prefixes []string
	for _, v := range r.URL.Query()["name"] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				prefixes = append(prefixes, p)
			}
		}
	}
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	win = min(win, tiers[len(tiers)-1].span)
	s.series.mu.Lock()
	dropped := s.series.dropped
	s.series.mu.Unlock()
	// Written directly and compact, unlike the other answers: plots are
	// read by the script, and a week of many series is large.
	b := fmt.Appendf(nil, `{"window":%d,"dropped":%d,"series":[`, int64(win/time.Second), dropped)
	for i, d := range s.series.query(prefixes, win, s.opts.Now()) {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = d.appendJSON(b); err != nil {
			writeError(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
	}
	b = append(b, "]}"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}
