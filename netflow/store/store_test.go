package store

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

var t0 = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func flow(min int, exp, src, dst string, sport, dport uint16, proto uint8, pk, by uint64) Flow {
	f := Flow{Time: t0.Add(time.Duration(min)*time.Minute + 10*time.Second), Source: "netflow",
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport,
		Protocol: proto, Packets: pk, Bytes: by}
	if exp != "" {
		f.Exporter = netip.MustParseAddr(exp)
	} else {
		f.Source, f.Verdict, f.Tunnel = "nflog", "drop", "gre1"
	}
	return f
}

// fixture is ten minutes of flows from two routers and the gateway.
func fixture(t *testing.T) (*Store, *clock) {
	c := &clock{t0.Add(10 * time.Minute)}
	s, err := New(Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	for m := range 10 {
		s.Add(flow(m, "192.0.2.1", "10.0.1.5", "198.51.100.7", 40000, 443, 6, 10, 15000))
		s.Add(flow(m, "192.0.2.1", "10.0.1.6", "198.51.100.7", 40001, 443, 6, 20, 1000))
		s.Add(flow(m, "192.0.2.2", "10.0.2.5", "198.51.100.8", 5353, 53, 17, 5, 500))
		s.Add(flow(m, "", "100.96.0.2", "10.0.1.5", 1234, 22, 6, 100, 6000))
	}
	return s, c
}

func TestQuery(t *testing.T) {
	s, _ := fixture(t)
	all := Query{From: t0, To: t0.Add(10 * time.Minute)}
	for _, tc := range []struct {
		name string
		q    func(q *Query)
		want []Group // Key and counts only
	}{
		{"everything in one group", func(q *Query) {}, []Group{{Key: map[Dimension]string{}, Packets: 1350, Bytes: 225000}}},
		{"by exporter", func(q *Query) { q.GroupBy = []Dimension{DimExporter} }, []Group{
			{Key: map[Dimension]string{DimExporter: "192.0.2.1"}, Packets: 300, Bytes: 160000},
			{Key: map[Dimension]string{DimExporter: ""}, Packets: 1000, Bytes: 60000},
			{Key: map[Dimension]string{DimExporter: "192.0.2.2"}, Packets: 50, Bytes: 5000},
		}},
		{"by exporter, packets", func(q *Query) { q.GroupBy = []Dimension{DimExporter}; q.OrderBy = Packets; q.Top = 1 }, []Group{
			{Key: map[Dimension]string{DimExporter: ""}, Packets: 1000, Bytes: 60000},
		}},
		{"src /24 top 2", func(q *Query) { q.GroupBy = []Dimension{DimSrc}; q.PrefixLen4 = 24; q.Top = 2 }, []Group{
			{Key: map[Dimension]string{DimSrc: "10.0.1.0"}, Packets: 300, Bytes: 160000},
			{Key: map[Dimension]string{DimSrc: "100.96.0.0"}, Packets: 1000, Bytes: 60000},
		}},
		{"dst port, protocol filter", func(q *Query) { q.GroupBy = []Dimension{DimDstPort}; q.Filter.Protocol = []uint8{6} }, []Group{
			{Key: map[Dimension]string{DimDstPort: "443"}, Packets: 300, Bytes: 160000},
			{Key: map[Dimension]string{DimDstPort: "22"}, Packets: 1000, Bytes: 60000},
		}},
		{"dst filter", func(q *Query) { q.Filter.Dst = []netip.Prefix{netip.MustParsePrefix("198.51.100.8/32")} }, []Group{
			{Key: map[Dimension]string{}, Packets: 50, Bytes: 5000},
		}},
		{"verdict and tunnel", func(q *Query) { q.GroupBy = []Dimension{DimVerdict, DimTunnel}; q.Filter.Source = []string{"nflog"} }, []Group{
			{Key: map[Dimension]string{DimVerdict: "drop", DimTunnel: "gre1"}, Packets: 1000, Bytes: 60000},
		}},
		{"src and src port", func(q *Query) {
			q.GroupBy = []Dimension{DimSrc, DimSrcPort}
			q.Filter.Exporter = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/30")}
			q.Filter.SrcPort = []uint16{40001, 5353}
		}, []Group{
			{Key: map[Dimension]string{DimSrc: "10.0.1.6", DimSrcPort: "40001"}, Packets: 200, Bytes: 10000},
			{Key: map[Dimension]string{DimSrc: "10.0.2.5", DimSrcPort: "5353"}, Packets: 50, Bytes: 5000},
		}},
		{"last two minutes", func(q *Query) { q.From = t0.Add(8 * time.Minute) }, []Group{{Key: map[Dimension]string{}, Packets: 270, Bytes: 45000}}},
		{"no match", func(q *Query) { q.Filter.Tunnel = []string{"nope"} }, []Group{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := all
			tc.q(&q)
			res, err := s.Query(q)
			if err != nil {
				t.Fatal(err)
			}
			got := []Group{}
			for _, g := range res.Groups {
				got = append(got, Group{Key: g.Key, Packets: g.Packets, Bytes: g.Bytes})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSeries(t *testing.T) {
	s, _ := fixture(t)
	res, err := s.Query(Query{From: t0, To: t0.Add(10 * time.Minute), Step: 5 * time.Minute, GroupBy: []Dimension{DimProtocol}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Groups) != 2 {
		t.Fatalf("groups %+v", res.Groups)
	}
	g := res.Groups[0] // TCP: 1300 packets, 220000 bytes over 600 s
	if g.Key[DimProtocol] != "6" || len(g.Series) != 2 {
		t.Fatalf("group %+v", g)
	}
	for i, p := range g.Series {
		if !p.Time.Equal(t0.Add(time.Duration(i) * 5 * time.Minute)) {
			t.Errorf("point %d at %v", i, p.Time)
		}
		// Each 5-minute step holds 650 packets, 110000 bytes.
		if p.PacketsPerSecond != 650.0/300 || p.BitsPerSecond != 110000*8.0/300 {
			t.Errorf("point %d: %+v", i, p)
		}
	}
	if g.BitsPerSecond != 220000*8.0/600 {
		t.Errorf("average %v bits/s", g.BitsPerSecond)
	}
}

func TestRetentionAndSize(t *testing.T) {
	c := &clock{t0}
	s, err := New(Options{Now: c.now, Retention: 5 * time.Minute, MaxBytes: 10 * entryBytes})
	if err != nil {
		t.Fatal(err)
	}
	// Too old on arrival.
	s.Add(flow(-6, "192.0.2.1", "10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 100))
	if st := s.Stats(); st.TooOld != 1 || st.Rows != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Three minutes of four rows each: the oldest minute goes for the
	// third.
	for m := range 3 {
		c.t = t0.Add(time.Duration(m) * time.Minute)
		for i := range 4 {
			s.Add(flow(m, "192.0.2.1", "10.0.0.1", "10.0.0.2", uint16(i), 2, 17, 1, 100))
		}
	}
	if st := s.Stats(); st.Rows != 8 || st.Minutes != 2 || st.Evicted != 1 || st.Bytes != 8*entryBytes {
		t.Fatalf("after eviction: %+v", st)
	}
	// One minute over the whole budget: new rows roll up coarse, then
	// are dropped when even that row does not fit.
	c.t = t0.Add(3 * time.Minute)
	for i := range 12 {
		s.Add(flow(3, "192.0.2.1", "10.0.0."+string(rune('1'+i%9)), "10.0.0.2", uint16(i), 2, 17, 1, 100))
	}
	// Another /24 has no coarse row yet, and no room for one.
	s.Add(flow(3, "192.0.2.1", "10.9.0.1", "10.0.0.2", 1, 2, 17, 1, 100))
	st := s.Stats()
	if st.Rows != 11 || st.Coarsened == 0 || st.Full == 0 {
		t.Fatalf("a full minute: %+v", st)
	}
	// Retention: at 8:30 minute 3 is older than five minutes.
	c.t = t0.Add(8*time.Minute + 30*time.Second)
	s.Add(flow(8, "192.0.2.1", "10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 100))
	if st := s.Stats(); st.Minutes != 1 || st.Rows != 1 {
		t.Fatalf("after retention: %+v", st)
	}
	// A flow from the future counts now.
	s.Add(flow(60, "192.0.2.1", "10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 100))
	res, _ := s.Query(Query{From: t0.Add(8 * time.Minute), To: t0.Add(9 * time.Minute)})
	if len(res.Groups) != 1 || res.Groups[0].Packets != 2 {
		t.Fatalf("minute 8: %+v", res.Groups)
	}
}

func TestFromRecord(t *testing.T) {
	at := logpush.Time(t0)
	nflog := logpush.Record{
		{Name: "Datetime", Value: at}, {Name: "Source", Value: logpush.String("nflog")},
		{Name: "IPSourceAddress", Value: logpush.String("100.96.0.2")}, {Name: "IPDestinationAddress", Value: logpush.String("10.0.0.9")},
		{Name: "IPProtocol", Value: logpush.Uint(6)}, {Name: "IPTotalLength", Value: logpush.Uint(60)},
		{Name: "SourcePort", Value: logpush.Uint(4000)}, {Name: "DestinationPort", Value: logpush.Uint(22)},
		{Name: "TCPFlags", Value: logpush.Uint(2)}, {Name: "Verdict", Value: logpush.String("drop")},
		{Name: "SampleInterval", Value: logpush.Uint(100)}, {Name: "TunnelName", Value: logpush.String("wg0")},
	}
	ingested := logpush.Record{
		{Name: "Datetime", Value: at}, {Name: "Source", Value: logpush.String("ipfix")},
		{Name: "SamplerAddress", Value: logpush.String("192.0.2.1")},
		{Name: "IPSourceAddress", Value: logpush.String("2001:db8::1")}, {Name: "IPDestinationAddress", Value: logpush.String("2001:db8::2")},
		{Name: "IPProtocol", Value: logpush.Uint(17)}, {Name: "Packets", Value: logpush.Uint(40)}, {Name: "Bytes", Value: logpush.Uint(5120)},
		{Name: "SampleInterval", Value: logpush.Uint(4)}, {Name: "FlowStartTime", Value: logpush.Time(t0.Add(-time.Minute))},
	}
	for _, tc := range []struct {
		name string
		r    logpush.Record
		want Flow
		ok   bool
	}{
		{"nflog sample", nflog, Flow{Time: t0, Source: "nflog", Src: netip.MustParseAddr("100.96.0.2"), Dst: netip.MustParseAddr("10.0.0.9"),
			SrcPort: 4000, DstPort: 22, Protocol: 6, TCPFlags: 2, Verdict: "drop", Tunnel: "wg0", Packets: 100, Bytes: 6000}, true},
		{"ingested flow", ingested, Flow{Time: t0, Start: t0.Add(-time.Minute), Source: "ipfix", Exporter: netip.MustParseAddr("192.0.2.1"),
			Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Protocol: 17, Packets: 40, Bytes: 5120}, true},
		{"no destination", nflog[:3], Flow{}, false},
		{"no time", ingested[1:], Flow{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FromRecord(tc.r)
			if ok != tc.ok {
				t.Fatalf("ok %v", ok)
			}
			if ok && !reflect.DeepEqual(got, tc.want) {
				got.Time, tc.want.Time = got.Time.UTC(), tc.want.Time.UTC()
				if !got.Start.IsZero() {
					got.Start, tc.want.Start = got.Start.UTC(), tc.want.Start.UTC()
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got  %+v\nwant %+v", got, tc.want)
				}
			}
		})
	}
	s, _ := New(Options{Now: func() time.Time { return t0 }})
	s.Push("gateway_dns", nflog)
	s.Push("network_analytics_logs", nflog)
	s.Push("network_analytics_logs", nflog[:3])
	if st := s.Stats(); st.Flows != 1 || st.Invalid != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestHandler(t *testing.T) {
	s, _ := fixture(t)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		query  string
		code   int
		groups int
		err    string
	}{
		{"from=" + t0.Format(time.RFC3339) + "&group_by=dst_port,protocol&top=5", 200, 3, ""},
		{"from=" + t0.Format(time.RFC3339) + "&protocol=tcp&dst=198.51.100.0/24&group_by=src", 200, 2, ""},
		{"from=" + t0.Format(time.RFC3339) + "&src=100.96.0.2&verdict=drop&step=5m", 200, 1, ""},
		{"group_by=colour", 400, 0, `cannot group by "colour"`},
		{"from=yesterday", 400, 0, "from:"},
		{"src=10.0.0.0/33", 400, 0, "src:"},
		{"protocol=ospfish", 400, 0, "protocol"},
		{"step=90s", 400, 0, "whole number of minutes"},
		{"from=1800000000", 400, 0, "time range is empty"},
		{"top=-1", 400, 0, "top"},
	} {
		resp, err := http.Get(srv.URL + "/api/v1/flows?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Result
			Error string `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || len(body.Groups) != tc.groups || !strings.Contains(body.Error, tc.err) {
			t.Errorf("%s: %d %+v", tc.query, resp.StatusCode, body)
		}
	}
	resp, err := http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

// FuzzParseQuery: any query string either fails to parse or validate
// with an error, or runs.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"group_by=src,dst&prefix_len4=24&top=3&step=1m", "protocol=tcp,17&src=10.0.0.0/8&dst=::1",
		"from=0&to=1800000000&step=60m", "tcp_flags=0x12&order_by=packets", "%zz"} {
		f.Add(s)
	}
	s, _ := New(Options{Now: func() time.Time { return t0 }})
	s.Add(flow(0, "192.0.2.1", "10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 100))
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(v, t0.Add(time.Minute))
		if err != nil {
			return
		}
		s.Query(q)
	})
}

// TestSelectTop compares the bounded heap with a full sort.
func TestSelectTop(t *testing.T) {
	vals := []int{5, 3, 9, 9, 1, 7, 3, 8, 0, 2, 6, 4}
	desc := func(i, j int) int {
		if vals[i] != vals[j] {
			return vals[j] - vals[i]
		}
		return i - j
	}
	full := selectTop(len(vals), 0, desc)
	for n := 1; n <= len(vals)+1; n++ {
		got := selectTop(len(vals), n, desc)
		want := full[:min(n, len(full))]
		if !reflect.DeepEqual(got, want) {
			t.Errorf("top %d: %v, want %v", n, got, want)
		}
	}
}

// TestConcurrentQuery runs queries while flows are added across minutes
// (and old ones evicted), for the race detector.
func TestConcurrentQuery(t *testing.T) {
	var mu sync.Mutex
	now := t0
	clk := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, _ := New(Options{Now: clk, Retention: 5 * time.Minute, MaxBytes: 50 * entryBytes})
	done := make(chan struct{})
	go func() { // owned by this test: ends after 2000 flows
		defer close(done)
		for i := range 2000 {
			mu.Lock()
			now = t0.Add(time.Duration(i) * time.Second)
			mu.Unlock()
			s.Add(flow(i/60, "192.0.2.1", "10.0.0.1", "10.0.0.2", uint16(i%100), 2, 17, 1, 100))
		}
	}()
	for {
		select {
		case <-done:
			if st := s.Stats(); st.Flows == 0 {
				t.Errorf("stats %+v", st)
			}
			return
		default:
		}
		if _, err := s.Query(Query{From: t0, To: clk().Add(time.Minute), GroupBy: []Dimension{DimSrcPort}, Top: 3, Step: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCompaction: over its size the store rolls its oldest minutes up
// coarser before it drops any, so totals over the whole retention stay
// exact while detail goes.
func TestCompaction(t *testing.T) {
	c := &clock{t0}
	s, err := New(Options{Now: c.now, Retention: time.Hour, MaxBytes: 10 * entryBytes})
	if err != nil {
		t.Fatal(err)
	}
	// Five minutes of four flows each, from four hosts of one /24 with
	// ephemeral ports to one service: 20 rows, twice the budget.
	for m := range 5 {
		c.t = t0.Add(time.Duration(m)*time.Minute + 30*time.Second)
		for i := range 4 {
			s.Add(flow(m, "192.0.2.1", "10.0.0."+string(rune('1'+i)), "198.51.100.7", uint16(40000+i), 443, 6, 1, 100))
		}
	}
	st := s.Stats()
	if st.Evicted != 0 || st.Compacted < 3 || st.Rows > 10 || st.Minutes != 5 || st.Flows != 20 {
		t.Fatalf("stats %+v", st)
	}
	res, err := s.Query(Query{From: t0, To: t0.Add(5 * time.Minute), GroupBy: []Dimension{DimDstPort}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Groups) != 1 || res.Groups[0].Packets != 20 || res.Groups[0].Bytes != 2000 {
		t.Errorf("totals after compaction: %+v", res.Groups)
	}
	// The oldest minute is coarse: one row for the /24, ports gone but
	// the service's; the newest keeps its hosts and ports.
	old, _ := s.Query(Query{From: t0, To: t0.Add(time.Minute), GroupBy: []Dimension{DimSrc, DimSrcPort, DimDstPort}})
	if len(old.Groups) != 1 || old.Groups[0].Key[DimSrc] != "10.0.0.0" || old.Groups[0].Key[DimSrcPort] != "0" || old.Groups[0].Key[DimDstPort] != "443" {
		t.Errorf("oldest minute: %+v", old.Groups)
	}
	last, _ := s.Query(Query{From: t0.Add(4 * time.Minute), To: t0.Add(5 * time.Minute), GroupBy: []Dimension{DimSrc}})
	if len(last.Groups) != 4 {
		t.Errorf("newest minute: %+v", last.Groups)
	}
}
