package health

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
)

func TestScoreRubric(t *testing.T) {
	const msec = time.Millisecond
	for _, tc := range []struct {
		name string
		m    Measurement
		want Scores
	}{
		{"clean idle LAN-like path", Measurement{Latency: msec, Samples: 100},
			Scores{Streaming: Good, Gaming: Great, VideoCalls: Great, StreamingPoints: 50, GamingPoints: 50, VideoCallsPoints: 60}},
		{"5% loss (boundary belongs to the band above)", Measurement{Latency: msec, Loss: 0.05},
			Scores{Streaming: Good, Gaming: Great, VideoCalls: Great, StreamingPoints: 40, GamingPoints: 40, VideoCallsPoints: 50}},
		{"just under 1% loss", Measurement{Latency: msec, Loss: 0.0099},
			Scores{Streaming: Good, Gaming: Great, VideoCalls: Great, StreamingPoints: 50, GamingPoints: 50, VideoCallsPoints: 60}},
		{"1% loss", Measurement{Latency: msec, Loss: 0.01},
			Scores{Streaming: Good, Gaming: Great, VideoCalls: Great, StreamingPoints: 45, GamingPoints: 45, VideoCallsPoints: 55}},
		{"satellite: 600 ms, 30 ms jitter, 2% loss", Measurement{Latency: 600 * msec, Jitter: 30 * msec, Loss: 0.02},
			Scores{Streaming: Bad, Gaming: Poor, VideoCalls: Poor, StreamingPoints: 5, GamingPoints: 5, VideoCallsPoints: 5}},
		{"bufferbloat: 15 ms idle, 180 ms loaded, 60 Mbit/s",
			Measurement{Latency: 15 * msec, LoadedLatency: 180 * msec, LoadedSamples: 50, Throughput: 60e6},
			Scores{Streaming: Average, Gaming: Poor, VideoCalls: Average, StreamingPoints: 30, GamingPoints: 10, VideoCallsPoints: 20}},
		{"unloaded: no loaded samples counts as no increase", Measurement{Latency: 15 * msec, LoadedLatency: 0, LoadedSamples: 0},
			Scores{Streaming: Good, Gaming: Great, VideoCalls: Great, StreamingPoints: 40, GamingPoints: 40, VideoCallsPoints: 50}},
		{"half lost: floored at 0", Measurement{Latency: 700 * msec, Jitter: 600 * msec, Loss: 0.5},
			Scores{Streaming: Bad, Gaming: Bad, VideoCalls: Bad}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Score(tc.m); got != tc.want {
				t.Errorf("Score(%+v)\n got %+v\nwant %+v", tc.m, got, tc.want)
			}
		})
	}
}

func TestQualityWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var q quality
	// 100 probes 10 ms apart; every 20th is lost, the others take
	// alternately 10 and 14 ms.
	for i := range 100 {
		at := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		seq := uint16(i + 1)
		q.sent(seq, at)
		if i%20 == 19 {
			continue
		}
		rtt := 10 * time.Millisecond
		if i%2 == 1 {
			rtt = 14 * time.Millisecond
		}
		if !q.answer(seq, at.Add(rtt)) {
			t.Fatalf("answer %d refused", seq)
		}
	}
	if q.answer(1, t0.Add(20*time.Millisecond)) {
		t.Error("a second answer to probe 1 was taken")
	}
	if q.answer(500, t0) {
		t.Error("an answer to a probe never sent was taken")
	}
	end := t0.Add(990 * time.Millisecond)

	// Right after the last probe, the unanswered ones are undecided.
	m := q.measure(end.Add(20*time.Millisecond), QualityWindow)
	if m.Samples != 95 || m.Loss != 0 {
		t.Errorf("before the loss timeout: %+v, want 95 samples and no loss", m)
	}
	m = q.measure(end.Add(LossTimeout), QualityWindow)
	if m.Samples != 100 || m.Loss != 0.05 {
		t.Errorf("after the loss timeout: %d samples, loss %v; want 100 and 0.05", m.Samples, m.Loss)
	}
	if m.Latency != 10*time.Millisecond {
		t.Errorf("latency %v, want the median 10ms", m.Latency)
	}
	// Consecutive answered probes differ by 4 ms, except around a loss
	// where i=18 (10 ms) is followed by i=20 (10 ms).
	if m.Jitter < 3500*time.Microsecond || m.Jitter > 4*time.Millisecond {
		t.Errorf("jitter %v, want just under 4ms", m.Jitter)
	}
	if m.LoadedSamples != 0 || m.LoadedLatency != 0 {
		t.Errorf("loaded %d/%v without load", m.LoadedSamples, m.LoadedLatency)
	}
	// A shorter window sees only the last probes.
	if m := q.measure(end.Add(LossTimeout), LossTimeout+95*time.Millisecond); m.Samples != 10 || m.Loss != 0.1 {
		t.Errorf("short window: %d samples, loss %v; want 10 and 0.1", m.Samples, m.Loss)
	}
	// A late answer never turns a loss into a success.
	var late quality
	late.sent(1, t0)
	if late.answer(1, t0.Add(LossTimeout)) {
		t.Error("an answer after the loss timeout was taken")
	}
}

func TestQualityLoad(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var q quality
	var bytes uint64
	seq := uint16(0)
	// 1 s idle, then 1 s at 8 Mbit/s, with a probe every 10 ms: idle
	// probes take 5 ms, loaded ones 45 ms.
	for i := range 200 {
		at := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		if i >= 100 {
			bytes += 10_000 // 10 kB per 10 ms = 8 Mbit/s
		}
		q.sampleLoad(bytes, at)
		seq++
		q.sent(seq, at)
		q.mu.Lock()
		loaded := q.ring[int(seq)%ringSize].loaded
		q.mu.Unlock()
		rtt := 5 * time.Millisecond
		if loaded {
			rtt = 45 * time.Millisecond
		}
		q.answer(seq, at.Add(rtt))
	}
	m := q.measure(t0.Add(3*time.Second), QualityWindow)
	if m.Latency != 5*time.Millisecond || m.LoadedLatency != 45*time.Millisecond {
		t.Errorf("latency %v loaded %v, want 5ms and 45ms", m.Latency, m.LoadedLatency)
	}
	// The first loaded slot is seen one slot late.
	if m.LoadedSamples < 80 || m.LoadedSamples > 100 {
		t.Errorf("%d loaded samples, want 80-100", m.LoadedSamples)
	}
	if m.Throughput < 7.5e6 || m.Throughput > 8.5e6 {
		t.Errorf("throughput p90 %v, want 8 Mbit/s", m.Throughput)
	}
	if s := Score(m); s.GamingPoints != 20+10+5 {
		t.Errorf("gaming points %d, want 35 (latency 20, loss 10, 40 ms increase 5)", s.GamingPoints)
	}
}

// TestCheckerQuality runs a checker's quality probes over a fake path:
// scores appear, loss shows when the path goes away, and the metrics
// pass promlint.
func TestCheckerQuality(t *testing.T) {
	path := &loopPath{up: true}
	c := New("t1", tunnel.HealthCheck{Type: "reply", Rate: "high"}, mustPrefix("10.200.1.0/31"), path,
		Options{QualityInterval: 5 * time.Millisecond, Load: func() uint64 { return 0 }})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testkit.Eventually(t, 10*time.Second, "clean path scored without loss", func() error {
		if q := c.Quality(); q.Scores == nil || q.Loss != 0 {
			return fmt.Errorf("%+v", q)
		}
		return nil
	})
	if q := c.Status().Quality; q.Scores.Gaming < Good || q.ProbeInterval != 5*time.Millisecond {
		t.Errorf("clean loopback path: %+v", q)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	if n := testutil.CollectAndCount(c, "edgegw_tunnel_quality_grade"); n != 3 {
		t.Errorf("%d grade series, want 3", n)
	}

	path.setUp(false)
	testkit.Eventually(t, 10*time.Second, "loss seen after the path went away", func() error {
		if m := c.Recent(SteeringWindow); m.Loss <= 0.5 {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	c.SetQualityInterval(0)
	if got := c.Quality().ProbeInterval; got != DefaultQualityInterval {
		t.Errorf("interval %v after reset, want %v", got, DefaultQualityInterval)
	}
}

// delayPath answers probes like a Linux peer after a delay it can change:
// a path whose latency is impaired.
type delayPath struct {
	mu      sync.Mutex
	handler func([]byte) bool
	delay   time.Duration
}

func (p *delayPath) SetProbeHandler(f func([]byte) bool) { p.mu.Lock(); p.handler = f; p.mu.Unlock() }

func (p *delayPath) setDelay(d time.Duration) { p.mu.Lock(); p.delay = d; p.mu.Unlock() }

func (p *delayPath) Inject(pkt []byte) error {
	p.mu.Lock()
	h, d := p.handler, p.delay
	p.mu.Unlock()
	if h == nil {
		return nil
	}
	back := append([]byte(nil), pkt...) // reply-type probes come back as they are
	time.AfterFunc(d, func() { h(back) })
	return nil
}

// TestCheckerQualityLatency delays a path's answers: the measured latency
// follows the delay, and the grades drop as the rubric says.
func TestCheckerQualityLatency(t *testing.T) {
	path := &delayPath{}
	c := New("t1", tunnel.HealthCheck{Type: "reply", Rate: "high"}, mustPrefix("10.200.1.0/31"), path,
		Options{QualityInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	for _, tc := range []struct {
		delay     time.Duration
		maxGaming Grade
	}{
		{0, Great},
		{120 * time.Millisecond, Average}, // latency -10: 10 (loss) + 20 (no load) - 10 = 20
		{0, Great},
	} {
		path.setDelay(tc.delay)
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("latency follows a %v delay", tc.delay), func() error {
			m := c.Recent(SteeringWindow)
			// Only the window after the change counts: wait until its
			// median is within 60 ms of the delay (scheduling adds some).
			if m.Samples < MinQualitySamples || m.Latency < tc.delay || m.Latency > tc.delay+60*time.Millisecond {
				return fmt.Errorf("%+v", m)
			}
			return nil
		})
		if tc.delay > 0 {
			testkit.Eventually(t, 30*time.Second, "the quality window's grade drops", func() error {
				if q := c.Quality(); q.Scores == nil || q.Scores.Gaming > tc.maxGaming {
					return fmt.Errorf("%+v", q)
				}
				return nil
			})
		}
	}
}

// TestQualityIgnoresSetup: probes lost before the path first answered
// (a tunnel being set up) are not counted as loss.
func TestQualityIgnoresSetup(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var q quality
	for i := range 50 {
		q.sent(uint16(i+1), t0.Add(time.Duration(i)*10*time.Millisecond))
	}
	if m := q.measure(t0.Add(3*time.Second), QualityWindow); m.Samples != 0 {
		t.Errorf("a path that never answered: %+v, want no samples", m)
	}
	for i := 50; i < 100; i++ {
		at := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		q.sent(uint16(i+1), at)
		q.answer(uint16(i+1), at.Add(time.Millisecond))
	}
	if m := q.measure(t0.Add(3*time.Second), QualityWindow); m.Samples != 50 || m.Loss != 0 {
		t.Errorf("after setup: %+v, want 50 samples without loss", m)
	}
}
