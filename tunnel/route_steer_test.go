package tunnel

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func qrt(prefix, via string, prio int) Route {
	r := rt(prefix, via, prio, 1)
	r.Steering = SteerQuality
	return r
}

// TestSteererScenarios feeds a steerer a timeline of health and quality
// and checks the tunnel chosen for 10.20.0.0/16 after each step.
func TestSteererScenarios(t *testing.T) {
	clean := PathQuality{Measured: true, Scored: true, Points: 60}
	lossy := PathQuality{Measured: true, Scored: true, Loss: 0.05, Points: 50}
	slow := PathQuality{Measured: true, Scored: true, Latency: 300 * time.Millisecond, Points: 20}
	okish := PathQuality{Measured: true, Scored: true, Points: 55} // within the margin of clean
	great := PathQuality{Measured: true, Scored: true, Points: 75} // a margin above clean
	type step struct {
		at     time.Duration // since the start
		states map[string]State
		q      map[string]PathQuality
		want   string // "" for no choice (priority routing)
	}
	hold := 5 * time.Second
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"clean paths: the lower priority wins", []step{
			{0, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"},
		}},
		{"loss moves at once; back only after hold", []step{
			{0, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"},
			{1 * time.Second, nil, map[string]PathQuality{"a": lossy, "b": clean}, "b"},
			{2 * time.Second, nil, map[string]PathQuality{"a": clean, "b": clean}, "b"},
			{5900 * time.Millisecond, nil, map[string]PathQuality{"a": clean, "b": clean}, "b"}, // 4.9 s after the loss, hold 5 s
			{6 * time.Second, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"},
		}},
		{"loss again during the hold restarts it", []step{
			{0, nil, map[string]PathQuality{"a": lossy, "b": clean}, "b"},
			{4 * time.Second, nil, map[string]PathQuality{"a": lossy, "b": clean}, "b"},
			{8 * time.Second, nil, map[string]PathQuality{"a": clean, "b": clean}, "b"},
			{9500 * time.Millisecond, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"},
		}},
		{"latency over the threshold moves too", []step{
			{0, nil, map[string]PathQuality{"a": slow, "b": clean}, "b"},
		}},
		{"an unhealthy tunnel is left even with good probes", []step{
			{0, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"},
			{time.Second, map[string]State{"a": Degraded}, map[string]PathQuality{"a": clean, "b": clean}, "b"},
		}},
		{"better points within the margin do not move a fine prefix", []step{
			{0, nil, map[string]PathQuality{"a": okish, "b": okish}, "a"},
			{time.Second, nil, map[string]PathQuality{"a": okish, "b": clean}, "a"},
			{2 * time.Second, nil, map[string]PathQuality{"a": okish, "b": great}, "b"},
		}},
		{"a lower priority within the margin wins over a higher score", []step{
			{0, nil, map[string]PathQuality{"a": {}, "b": clean, "c": clean}, "b"},
			{time.Second, nil, map[string]PathQuality{"a": okish, "b": clean, "c": {Measured: true, Scored: true, Points: 62}}, "a"},
		}},
		{"nothing eligible: the healthy tunnel losing least", []step{
			{0, nil, map[string]PathQuality{"a": lossy, "b": slow}, "b"},
			{time.Second, nil, map[string]PathQuality{"a": lossy, "b": clean}, "b"}, // b held since 0 s
			{5 * time.Second, nil, map[string]PathQuality{"a": lossy, "b": clean}, "b"},
		}},
		{"nothing eligible: stay unless another loses MaxLoss less", []step{
			{0, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"},
			{time.Second, nil, map[string]PathQuality{"a": {Measured: true, Loss: 0.02}, "b": {Measured: true, Loss: 0.015}}, "a"},
			{2 * time.Second, nil, map[string]PathQuality{"a": {Measured: true, Loss: 0.04}, "b": {Measured: true, Loss: 0.015}}, "b"},
			{3 * time.Second, nil, map[string]PathQuality{"a": {Measured: true, Loss: 0.01}, "b": {Measured: true, Loss: 0.015}}, "b"},
		}},
		{"nothing healthy: priority routing decides", []step{
			{0, map[string]State{"a": Down, "b": Degraded}, map[string]PathQuality{"a": clean, "b": clean}, ""},
		}},
		{"unmeasured tunnels rank last but are eligible", []step{
			{0, nil, map[string]PathQuality{"b": clean}, "b"},
			{time.Second, nil, map[string]PathQuality{"a": clean, "b": clean}, "a"}, // same points, lower priority
		}},
		{"a tunnel not scored yet does not lose to points", []step{
			{0, nil, map[string]PathQuality{"a": {}, "b": {}}, "a"},
			{time.Second, nil, map[string]PathQuality{"a": {Measured: true}, "b": great}, "a"},
			{2 * time.Second, nil, map[string]PathQuality{"a": clean, "b": great}, "b"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSteerer(SteerOptions{Hold: hold})
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			p := netip.MustParsePrefix("10.20.0.0/16")
			routes := []Route{qrt("10.20.0.0/16", "a", 100), qrt("10.20.0.0/16", "b", 200), rt("10.30.0.0/16", "a", 100, 1)}
			if strings.HasPrefix(tc.name, "a lower priority") {
				routes = append(routes, qrt("10.20.0.0/16", "c", 300))
			}
			for i, st := range tc.steps {
				got := s.Choose(routes, st.states, st.q, t0.Add(st.at))
				if got[p].Via != st.want {
					t.Fatalf("step %d (%v): chose %q (%+v), want %q", i, st.at, got[p].Via, got[p], st.want)
				}
				if _, ok := got[netip.MustParsePrefix("10.30.0.0/16")]; ok {
					t.Fatalf("step %d: a priority-steered prefix was steered", i)
				}
			}
		})
	}
}

func TestSteererReason(t *testing.T) {
	s := NewSteerer(SteerOptions{})
	routes := []Route{qrt("10.20.0.0/16", "a", 100), qrt("10.20.0.0/16", "b", 200)}
	t0 := time.Now()
	s.Choose(routes, nil, nil, t0)
	got := s.Choose(routes, nil, map[string]PathQuality{"a": {Measured: true, Loss: 0.04}}, t0.Add(time.Second))
	c := got[netip.MustParsePrefix("10.20.0.0/16")]
	if c.Via != "b" || c.Reason != "a lost 4.0% of its probes (threshold 1.0%)" || !c.Since.Equal(t0.Add(time.Second)) {
		t.Errorf("%+v", c)
	}
}

func TestPlanSteered(t *testing.T) {
	routes := []Route{qrt("10.20.0.0/16", "a", 100), qrt("10.20.0.0/16", "b", 200), rt("10.30.0.0/16", "a", 100, 1)}
	steer := Steering{netip.MustParsePrefix("10.20.0.0/16"): {Via: "b"}}
	var lines []string
	for _, r := range PlanSteered(routes, map[string]State{"a": Healthy}, steer) {
		lines = append(lines, r.String())
	}
	want := "10.20.0.0/16 metric 200 dev b|10.20.0.0/16 metric 250100 dev a|unreachable 10.20.0.0/16 metric 2000000000|" +
		"10.30.0.0/16 metric 100 dev a|unreachable 10.30.0.0/16 metric 2000000000"
	if s := strings.Join(lines, "|"); s != want {
		t.Errorf("got  %s\nwant %s", s, want)
	}
	// Without a choice it is Plan.
	if a, b := PlanSteered(routes, nil, nil), Plan(routes, nil); len(a) != len(b) || a[0].String() != b[0].String() {
		t.Errorf("PlanSteered(nil) %v != Plan %v", a, b)
	}
}

func TestRouteSteeringConfig(t *testing.T) {
	r := rt("10.1.0.0/16", "a", 100, 1)
	r.SetDefaults()
	if r.Steering != SteerPriority || r.QualitySteered() {
		t.Errorf("default steering %q", r.Steering)
	}
	r.Steering = "fastest"
	var errs []string
	r.Validate(func(f, m string) { errs = append(errs, f+": "+m) })
	if len(errs) != 1 || errs[0] != `steering: "fastest": expected priority (the default) or quality` {
		t.Errorf("%q", errs)
	}
	errs = nil
	CheckRoutes(func(f, m string) { errs = append(errs, f+": "+m) },
		[]Route{qrt("10.1.0.0/16", "a", 100), rt("10.1.0.0/16", "b", 200, 1), rt("10.2.0.0/16", "b", 200, 1)}, []string{"a", "b"})
	if len(errs) != 1 || !strings.HasPrefix(errs[0], "[1].steering: route 10.1.0.0/16 via b: steering priority, but routes[0] for the same prefix says quality") {
		t.Errorf("%q", errs)
	}
}
