package admin

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func values(d SeriesData) []any {
	var out []any
	for _, p := range d.Points {
		if !p.OK {
			out = append(out, nil)
		} else {
			out = append(out, float64(p.V))
		}
	}
	return out
}

// TestSeriesResolutions: a window is answered at the finest resolution
// that reaches back so far; a step averages its samples; a step with no
// sample is a gap; a slot reused by a later step is not read as the old.
func TestSeriesResolutions(t *testing.T) {
	st := newSeriesStore()
	t0 := time.Unix(1_800_000_000, 0) // a multiple of 600 s
	// Two samples in the first 10 s step, none in the second, one in the
	// third.
	st.add("a", t0, 1)
	st.add("a", t0.Add(5*time.Second), 3)
	st.add("a", t0.Add(20*time.Second), 10)
	st.add("a", t0, 0)       // back in time: the current step restarts
	st.add("b", t0, math0()) // NaN is no value
	now := t0.Add(25 * time.Second)

	for _, tc := range []struct {
		window time.Duration
		step   int64
		want   string
	}{
		{30 * time.Second, 10, "[0 <nil> 10]"},
		{2 * time.Hour, 60, ""},
		{3 * 24 * time.Hour, 600, ""},
	} {
		got := st.query([]string{"a"}, tc.window, now)
		if len(got) != 1 || got[0].Step != tc.step {
			t.Fatalf("window %v: %+v", tc.window, got)
		}
		if tc.want != "" {
			if s := fmt.Sprint(values(got[0])); s != tc.want {
				t.Errorf("window %v: points %s, want %s", tc.window, s, tc.want)
			}
		}
	}
	// The minute of t0 holds the average of all its samples (the 10 s
	// step restarted when time went back; the minute did not).
	got := st.query([]string{"a"}, 2*time.Hour, now)[0]
	last := got.Points[len(got.Points)-1]
	if last.T != t0.Unix() || !last.OK || last.V != 3.5 {
		t.Errorf("the minute: %v", values(got)[len(got.Points)-1])
	}
	if b := st.query([]string{"b"}, time.Hour, now); len(b) != 0 {
		t.Errorf("a NaN made a series: %+v", b)
	}
	// An hour later the 10 s ring has wrapped: the old samples are gone
	// from the hour's view, kept in the day's.
	later := now.Add(time.Hour)
	st.add("a", later, 7)
	h := st.query([]string{"a"}, time.Hour, later)[0]
	n := 0
	for _, p := range h.Points {
		if p.OK {
			n++
		}
	}
	if n != 1 || h.Points[len(h.Points)-1].V != 7 {
		t.Errorf("after an hour: %d points, %v", n, values(h)[len(h.Points)-3:])
	}
	d := st.query([]string{"a"}, 24*time.Hour, later)[0]
	kept := false
	for _, p := range d.Points {
		kept = kept || p.T == t0.Unix() && p.OK && p.V == 3.5
	}
	if !kept {
		t.Errorf("the day lost the first minute")
	}
}

func math0() float64 { z := 0.0; return z / z }

// TestSeriesJSON: a series is written as its start, step and values
// (null for a gap), as the console's script reads it.
func TestSeriesJSON(t *testing.T) {
	b, err := json.Marshal(SeriesAnswer{Window: 20, Series: []SeriesData{{Name: "a\"b", Step: 10,
		Points: []SeriesPoint{{T: 10, V: 1.5, OK: true}, {T: 20}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"window":20,"dropped":0,"series":[{"name":"a\"b","step":10,"start":10,"values":[1.5,null]}]}`; string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

// TestSeriesBound: past maxSeries a new series is not kept, and counted.
func TestSeriesBound(t *testing.T) {
	st := newSeriesStore()
	now := time.Unix(1_800_000_000, 0)
	for i := range maxSeries + 5 {
		st.add(fmt.Sprint("s", i), now, 1)
	}
	if len(st.m) != maxSeries || st.dropped != 5 {
		t.Errorf("%d series, %d dropped", len(st.m), st.dropped)
	}
}

// TestSampler: the sampler reads a registry's counters as rates (bits/s
// for bytes), a tunnel's loss from its probe counters, its RTT from the
// latency gauge, and skips a counter that went back (a reset).
func TestSampler(t *testing.T) {
	reg := prometheus.NewRegistry()
	rx := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_wireguard_peer_receive_bytes_total"}, []string{"interface", "peer"})
	tx := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_gre_sent_bytes_total", ConstLabels: prometheus.Labels{"tunnel": "b1"}}, nil)
	probes := prometheus.NewCounter(prometheus.CounterOpts{Name: "edgegw_tunnel_health_probes_total", ConstLabels: prometheus.Labels{"tunnel": "b1"}})
	failed := prometheus.NewCounter(prometheus.CounterOpts{Name: "edgegw_tunnel_health_probe_failures_total", ConstLabels: prometheus.Labels{"tunnel": "b1"}})
	rtt := prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgegw_tunnel_latency_seconds", ConstLabels: prometheus.Labels{"tunnel": "b1"}})
	dns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_dns_queries_total"}, []string{"protocol", "rcode"})
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_dns_cache_lookups_total"}, []string{"result"})
	rule := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_firewall_rule_packets_total"}, []string{"rule"})
	reg.MustRegister(rx, tx, probes, failed, rtt, dns, cache, rule)
	st := newSeriesStore()
	sm := &sampler{reg: reg, store: st}
	t0 := time.Unix(1_800_000_000, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rtt.Set(0.0125)
	// The counters exist before the first sample (a rate needs two).
	rx.WithLabelValues("wg0", "a")
	rx.WithLabelValues("wg0", "b")
	tx.WithLabelValues()
	dns.WithLabelValues("udp", "NOERROR")
	cache.WithLabelValues("hit")
	cache.WithLabelValues("miss")
	rule.WithLabelValues("ssh")
	must(sm.sample(t0))
	rx.WithLabelValues("wg0", "a").Add(1000)
	rx.WithLabelValues("wg0", "b").Add(250)
	tx.WithLabelValues().Add(500)
	probes.Add(10)
	failed.Add(1)
	dns.WithLabelValues("udp", "NOERROR").Add(30)
	cache.WithLabelValues("hit").Add(3)
	cache.WithLabelValues("miss").Add(1)
	rule.WithLabelValues("ssh").Add(20)
	must(sm.sample(t0.Add(10 * time.Second)))
	want := map[string]float64{
		seriesThroughputIn: 1250 * 8 / 10, seriesThroughputOut: 500 * 8 / 10, seriesTunnelLoss + "b1": 10,
		seriesTunnelRTT + "b1": 12.5, seriesDNSQueries: 3, seriesDNSHits: 75, seriesRulePackets + "ssh": 2,
	}
	got := st.query([]string{""}, time.Minute, t0.Add(10*time.Second))
	if len(got) != len(want) {
		t.Errorf("%d series, want %d: %+v", len(got), len(want), got)
	}
	for _, d := range got {
		p := d.Points[len(d.Points)-1]
		if w, ok := want[d.Name]; !ok || !p.OK || fmt.Sprintf("%.3f", p.V) != fmt.Sprintf("%.3f", w) {
			t.Errorf("%s = %v, want %v", d.Name, values(d)[len(d.Points)-1], w)
		}
	}
	// A reset (the counter made again, lower): no point, not a negative
	// rate.
	reg.Unregister(rule)
	rule2 := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_firewall_rule_packets_total"}, []string{"rule"})
	reg.MustRegister(rule2)
	rule2.WithLabelValues("ssh").Add(1)
	must(sm.sample(t0.Add(20 * time.Second)))
	d := st.query([]string{seriesRulePackets}, time.Minute, t0.Add(20*time.Second))[0]
	if p := d.Points[len(d.Points)-1]; p.OK {
		t.Errorf("a reset counter made a rate: %v", p.V)
	}
}

// BenchmarkSeriesWeek fills a week of history (60,480 samples of 10 s)
// for the series a gateway with 10,000 enrolled devices keeps: the
// throughput, DNS and per-tunnel series do not grow with devices (they
// are sums), so the count is that of a large site: 64 site tunnels (RTT
// and loss) and 200 firewall rules, 332 series. It reports the heap the
// history holds (goal: ≤ 50 MB) and the cost of one sampling pass over a
// registry with 10,000 WireGuard peers' byte counters.
func BenchmarkSeriesWeek(b *testing.B) {
	names := benchSeriesNames()
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			st := newSeriesStore()
			fillWeek(st, names, time.Unix(1_800_000_000, 0))
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB/week")
			b.ReportMetric(float64(len(st.m)), "series")
			runtime.KeepAlive(st)
		}
	})
	b.Run("sample-10000-devices", func(b *testing.B) {
		reg := prometheus.NewRegistry()
		rx := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_wireguard_peer_receive_bytes_total"}, []string{"interface", "peer"})
		tx := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgegw_wireguard_peer_transmit_bytes_total"}, []string{"interface", "peer"})
		reg.MustRegister(rx, tx)
		for i := range 10000 {
			rx.WithLabelValues("wg0", fmt.Sprint("peer-", i)).Add(float64(i))
			tx.WithLabelValues("wg0", fmt.Sprint("peer-", i)).Add(float64(i))
		}
		sm := &sampler{reg: reg, store: newSeriesStore()}
		now := time.Unix(1_800_000_000, 0)
		for b.Loop() {
			now = now.Add(sampleEvery)
			if err := sm.sample(now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchSeriesNames are the series of a large site: throughput, DNS, 64
// site tunnels (RTT and loss), 200 firewall rules; 332 in all.
func benchSeriesNames() []string {
	names := []string{seriesThroughputIn, seriesThroughputOut, seriesDNSQueries, seriesDNSHits}
	for i := range 64 {
		names = append(names, fmt.Sprint(seriesTunnelRTT, "branch-", i), fmt.Sprint(seriesTunnelLoss, "branch-", i))
	}
	for i := range 200 {
		names = append(names, fmt.Sprint(seriesRulePackets, "rule-", i))
	}
	return names
}

// fillWeek adds a week of 10 s samples to every series, ending at end.
func fillWeek(st *seriesStore, names []string, end time.Time) {
	const n = 7 * 24 * 360
	t0 := end.Add(-n * sampleEvery)
	for k := range n {
		now := t0.Add(time.Duration(k+1) * sampleEvery)
		for j, name := range names {
			st.add(name, now, float64(k+j))
		}
	}
}
