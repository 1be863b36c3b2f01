package health

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/tunnel"
)

// TestStateTable drives the machine with a fake clock. Each step is a
// run of probe results ('+' success, '-' failure, one per tick), then the
// state expected after the run.
func TestStateTable(t *testing.T) {
	const tick = time.Second
	for _, tc := range []struct {
		name  string
		steps []string // "results state"
	}{
		{"starts healthy", []string{"+ healthy", "++++ healthy"}},
		{"one loss stays healthy", []string{"- healthy", "+ healthy"}},
		{"two losses degrade", []string{"-+ healthy", "- degraded"}},
		{"three in a row go down", []string{"-- degraded", "- down"}},
		{"down from healthy at once", []string{"+++ healthy", "-- degraded", "- down"}},
		{"down needs three successes", []string{"--- down", "++ down", "+ degraded"}},
		{"a failure resets recovery", []string{"--- down", "++-++ down", "+ degraded"}},
		{"degraded needs 30 successes", []string{"--- down", strings.Repeat("+", 29) + " degraded", "+ healthy"}},
		{"losses in degraded stay degraded", []string{"-+- degraded", strings.Repeat("+", 20) + "-" + strings.Repeat("+", 29) + " degraded", "+ healthy"}},
		{"healthy again forgets old losses", []string{"-+- degraded", strings.Repeat("+", 30) + " healthy", "- healthy", "+- degraded"}},
		{"losses 5 minutes apart stay healthy", []string{"- healthy", strings.Repeat("+", 300) + " healthy", "- healthy"}},
		{"losses just inside 5 minutes degrade", []string{"- healthy", strings.Repeat("+", 298) + " healthy", "- degraded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			m := NewMachine(DefaultThresholds, now)
			for i, step := range tc.steps {
				results, want, _ := strings.Cut(step, " ")
				var got tunnel.State
				for _, r := range results {
					now = now.Add(tick)
					got, _ = m.Observe(r == '+', now)
				}
				if got.String() != want {
					t.Fatalf("step %d %q: state %s, want %s", i, step, got, want)
				}
			}
		})
	}
}

func TestSinceAndChange(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := NewMachine(DefaultThresholds, t0)
	for i := 1; i <= 3; i++ {
		s, changed := m.Observe(false, t0.Add(time.Duration(i)*time.Second))
		if wantChange := i >= 2; changed != wantChange {
			t.Errorf("failure %d: state %s changed=%v", i, s, changed)
		}
	}
	if s, since := m.State(); s != tunnel.Down || !since.Equal(t0.Add(3*time.Second)) {
		t.Errorf("state %s since %v", s, since)
	}
}

func TestDetectionTime(t *testing.T) {
	for rate, want := range map[string]time.Duration{"low": 13 * time.Second, "mid": 2500 * time.Millisecond, "high": time.Second} {
		if got := Rates[rate].DetectionTime(DefaultThresholds); got != want {
			t.Errorf("%s: %v, want %v", rate, got, want)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	c := New("branch", tunnel.HealthCheck{Type: "reply", Rate: "high"}, mustPrefix("10.200.1.0/31"), nil, Options{})
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}
