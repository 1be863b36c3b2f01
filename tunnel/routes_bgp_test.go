package tunnel

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
)

func TestLearned(t *testing.T) {
	r := func(p, via string) Route {
		return Route{Prefix: netip.MustParsePrefix(p), Via: via, Priority: 100, Weight: 1}
	}
	static := []Route{r("10.20.0.0/16", "gre1")}
	var l Learned
	if got := l.Merge(static); !slices.Equal(got, static) {
		t.Fatalf("empty merge: %v", got)
	}
	if l.Replace("bgp:a", nil) {
		t.Error("removing an absent source changed something")
	}
	if !l.Replace("bgp:b", []Route{r("10.30.0.0/24", "gre2")}) || !l.Replace("bgp:a", []Route{r("10.20.1.0/24", "gre1")}) {
		t.Fatal("new sources changed nothing")
	}
	if l.Replace("bgp:a", []Route{r("10.20.1.0/24", "gre1")}) {
		t.Error("the same routes again changed something")
	}
	got := l.Merge(static)
	want := []Route{r("10.20.0.0/16", "gre1"), r("10.20.1.0/24", "gre1"), r("10.30.0.0/24", "gre2")}
	if !slices.Equal(got, want) {
		t.Errorf("merge: %v, want configured first, then sources in name order %v", got, want)
	}
	if len(static) != 1 || cap(static) != 1 {
		t.Errorf("merge modified the configured routes: %v", static)
	}
	if s := l.Sources(); !maps.Equal(s, map[string]int{"bgp:a": 1, "bgp:b": 1}) {
		t.Errorf("sources: %v", s)
	}
	if !l.Replace("bgp:a", nil) || !maps.Equal(l.Sources(), map[string]int{"bgp:b": 1}) {
		t.Errorf("withdrawing a source: %v", l.Sources())
	}
	// Learned routes are planned like configured ones: a down tunnel's
	// route is penalised, and the prefix gets the unreachable fallback.
	plan := Plan(l.Merge(nil), map[string]State{"gre2": Down})
	if len(plan) != 2 || plan[0].Metric != 100+DownPenalty || !plan[1].Unreachable {
		t.Errorf("plan: %v", plan)
	}
}
