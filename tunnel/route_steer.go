package tunnel

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// SteeredAwayPenalty is added to the metric of every route of a
// quality-steered prefix except the one through the tunnel the [Steerer]
// chose. It is below [DegradedPenalty], so a tunnel steered away from for
// its quality still wins over a degraded or down one when the chosen
// tunnel's interface goes away, and far above [MaxPriority], so the
// chosen tunnel always carries the prefix.
const SteeredAwayPenalty = 250_000

// Every metric a steered route can get stays under the unreachable route.
const _ = uint(UnreachableMetric - (MaxPriority + DownPenalty + SteeredAwayPenalty) - 1)

// PathQuality is what quality steering knows of a tunnel, from its
// quality probes (see tunnel/health).
type PathQuality struct {
	// Measured: the short window holds enough decided probes for Loss
	// and Latency to mean something. An unmeasured tunnel is never
	// called impaired, and ranks as if it had 0 points.
	Measured bool
	// Loss and Latency (the median round trip) over the short window
	// (health.SteeringWindow) are compared with the thresholds.
	Loss    float64
	Latency time.Duration
	// Points rank the eligible tunnels (the video-calls points over the
	// longer quality window): higher is better. They count only when
	// Scored (the window holds enough probes); two tunnels of which one
	// is not scored yet are compared by priority alone.
	Points int
	Scored bool
}

// SteerOptions are quality steering's thresholds and hysteresis.
type SteerOptions struct {
	// MaxLoss: a tunnel losing this fraction of its probes or more over
	// the short window is left. Zero means 0.01 (1 %).
	MaxLoss float64
	// MaxLatency: a tunnel whose median round trip over the short window
	// reaches this is left. Zero means 250 ms.
	MaxLatency time.Duration
	// Hold is the hysteresis: a tunnel that was impaired or unhealthy is
	// not chosen again until it has been clean and healthy for this
	// long. Zero means 30 s.
	Hold time.Duration
	// Margin is how many points a tunnel must score above the current
	// one to take its prefix while the current one is fine; within the
	// margin the lower priority is preferred. Zero means 10 (one band
	// of the rubric).
	Margin int
}

// DefaultSteerOptions are the defaults described on [SteerOptions].
var DefaultSteerOptions = SteerOptions{MaxLoss: 0.01, MaxLatency: 250 * time.Millisecond, Hold: 30 * time.Second, Margin: 10}

func (o SteerOptions) withDefaults() SteerOptions {
	d := DefaultSteerOptions
	o.MaxLoss = cmp.Or(o.MaxLoss, d.MaxLoss)
	o.MaxLatency = cmp.Or(o.MaxLatency, d.MaxLatency)
	o.Hold = cmp.Or(o.Hold, d.Hold)
	o.Margin = cmp.Or(o.Margin, d.Margin)
	return o
}

// Steering is a steerer's choice for each quality-steered prefix: the
// tunnel that carries it. A prefix missing from it (no eligible tunnel)
// is routed by priority and health alone.
type Steering map[netip.Prefix]Choice

// Choice is the tunnel chosen for a prefix, since when, and why.
type Choice struct {
	Via    string    `json:"via"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// Steerer chooses a tunnel for every quality-steered prefix from the
// tunnels' health and quality, with hysteresis:
//
//   - A tunnel is impaired while its loss or median latency over the short
//     window reaches a threshold, and unhealthy while its health check
//     says degraded or down. Either makes it ineligible, and it stays
//     ineligible until it has been clean and healthy for Hold.
//   - A prefix whose tunnel becomes ineligible moves at once to the best
//     eligible tunnel: the most points, then the lowest priority, then
//     the name.
//   - A prefix whose tunnel is still eligible moves only to a tunnel that
//     scores Margin points more, or, within the margin, has a lower
//     priority (so a recovered primary gets its traffic back after Hold,
//     not before).
//   - A prefix with no eligible tunnel stays on its healthy tunnel, or
//     moves to the healthy one that loses least (by at least MaxLoss
//     less); with no healthy tunnel it is left to priority routing, whose
//     health penalties pick the least-bad path.
//
// Steering acts on routes, so it moves every packet of the prefix, new
// and existing flows alike: edgegw does not pin established flows to
// their old tunnel with conntrack marks, because a site-to-site tunnel
// carries inner addresses unchanged (no NAT), so TCP connections survive
// the move, and a flow kept on a lossy tunnel would suffer the loss that
// steering exists to avoid.
//
// A Steerer is a pure function of what it is fed and the times given; it
// is not safe for concurrent use.
type Steerer struct {
	opts     SteerOptions
	badUntil map[string]time.Time // tunnel → ineligible before
	why      map[string]string    // tunnel → why it was last ineligible
	chosen   Steering
}

// NewSteerer returns a steerer with opts (zero fields take defaults).
func NewSteerer(opts SteerOptions) *Steerer {
	return &Steerer{opts: opts.withDefaults(), badUntil: map[string]time.Time{}, why: map[string]string{}, chosen: Steering{}}
}

// Options returns the steerer's options with defaults applied.
func (s *Steerer) Options() SteerOptions { return s.opts }

// Choose updates the choice for every quality-steered prefix of routes
// at now and returns it (a copy). A tunnel missing from states is
// healthy; one missing from quality is unmeasured.
func (s *Steerer) Choose(routes []Route, states map[string]State, quality map[string]PathQuality, now time.Time) Steering {
	// Which tunnels are bad now, and since when they are eligible.
	vias := map[string]bool{}
	for _, r := range routes {
		if r.QualitySteered() {
			vias[r.Via] = true
		}
	}
	for via := range vias {
		if why := s.impaired(states[via], quality[via]); why != "" {
			s.badUntil[via] = now.Add(s.opts.Hold)
			s.why[via] = why
		}
	}
	for via := range s.badUntil {
		if !vias[via] {
			delete(s.badUntil, via)
			delete(s.why, via)
		}
	}

	byPrefix := map[netip.Prefix][]cand{}
	for _, r := range routes {
		if !r.QualitySteered() {
			continue
		}
		p := r.Prefix.Masked()
		if i := slices.IndexFunc(byPrefix[p], func(c cand) bool { return c.via == r.Via }); i >= 0 {
			byPrefix[p][i].priority = min(byPrefix[p][i].priority, r.Priority)
			continue
		}
		q := quality[r.Via]
		byPrefix[p] = append(byPrefix[p], cand{via: r.Via, priority: r.Priority, points: q.Points, scored: q.Scored})
	}
	next := Steering{}
	for p, cs := range byPrefix {
		eligible := slices.DeleteFunc(slices.Clone(cs), func(c cand) bool { return now.Before(s.badUntil[c.via]) })
		if len(eligible) == 0 {
			if c, ok := s.leastBad(p, cs, states, quality, now); ok {
				next[p] = c
			}
			continue
		}
		// The best: the most points among scored tunnels (unscored ones
		// rank as 0), then the lowest priority, then the name.
		slices.SortFunc(eligible, func(a, b cand) int {
			return cmp.Or(cmp.Compare(b.rank(), a.rank()), cmp.Compare(a.priority, b.priority), strings.Compare(a.via, b.via))
		})
		best := eligible[0]
		prev, had := s.chosen[p]
		cur := -1
		if had {
			cur = slices.IndexFunc(eligible, func(c cand) bool { return c.via == prev.Via })
		}
		switch {
		case cur < 0 && had:
			reason := "was ineligible"
			if w := s.why[prev.Via]; w != "" {
				reason = prev.Via + " " + w
			}
			next[p] = Choice{Via: best.via, Since: now, Reason: reason}
		case cur < 0:
			next[p] = Choice{Via: best.via, Since: now, Reason: "best eligible tunnel"}
		default:
			next[p] = prev
			// The best-ranked tunnel that beats the current one, if any.
			for _, c := range eligible {
				if c.via != prev.Via && s.better(c, eligible[cur]) {
					next[p] = Choice{Via: c.via, Since: now, Reason: fmt.Sprintf("scores %d points against %s's %d, priority %d against %d",
						c.points, prev.Via, eligible[cur].points, c.priority, eligible[cur].priority)}
					break
				}
			}
		}
	}
	s.chosen = next
	return maps.Clone(next)
}

// leastBad chooses for prefix p when no tunnel is eligible: among the
// healthy ones, the one losing least over the short window, keeping the
// current choice unless another loses at least MaxLoss less, so that a
// prefix whose tunnels all show some loss does not churn between them or
// fall back to a lossy primary. With no healthy tunnel there is no
// choice: priority routing's health penalties pick the least-bad path.
func (s *Steerer) leastBad(p netip.Prefix, cs []cand, states map[string]State, quality map[string]PathQuality, now time.Time) (Choice, bool) {
	healthy := slices.DeleteFunc(slices.Clone(cs), func(c cand) bool { return states[c.via] != Healthy })
	if len(healthy) == 0 {
		return Choice{}, false
	}
	slices.SortFunc(healthy, func(a, b cand) int {
		return cmp.Or(cmp.Compare(quality[a.via].Loss, quality[b.via].Loss), cmp.Compare(a.priority, b.priority), strings.Compare(a.via, b.via))
	})
	best := healthy[0]
	prev, had := s.chosen[p]
	if had {
		if i := slices.IndexFunc(healthy, func(c cand) bool { return c.via == prev.Via }); i >= 0 {
			if quality[prev.Via].Loss-quality[best.via].Loss < s.opts.MaxLoss {
				return prev, true
			}
		}
	}
	if had && prev.Via == best.via {
		return prev, true
	}
	return Choice{Via: best.via, Since: now, Reason: fmt.Sprintf("no tunnel is clean; %s loses least (%.1f%%)", best.via, 100*quality[best.via].Loss)}, true
}

// cand is a tunnel that may carry a quality-steered prefix.
type cand struct {
	via      string
	priority int // the lowest of its routes for the prefix
	points   int
	scored   bool
}

func (c cand) rank() int {
	if !c.scored {
		return 0
	}
	return c.points
}

// better reports whether a should take a prefix from b, which is still
// eligible.
func (s *Steerer) better(a, b cand) bool {
	if !a.scored || !b.scored {
		return a.priority < b.priority
	}
	if a.points >= b.points+s.opts.Margin {
		return true
	}
	return a.points > b.points-s.opts.Margin && a.priority < b.priority
}

// impaired says why a tunnel in state st with quality q is not fit to be
// chosen, or "" when it is.
func (s *Steerer) impaired(st State, q PathQuality) string {
	switch {
	case st != Healthy:
		return "is " + st.String()
	case !q.Measured:
		return ""
	case q.Loss >= s.opts.MaxLoss:
		return fmt.Sprintf("lost %.1f%% of its probes (threshold %.1f%%)", 100*q.Loss, 100*s.opts.MaxLoss)
	case q.Latency >= s.opts.MaxLatency:
		return fmt.Sprintf("median round trip %v (threshold %v)", q.Latency.Round(time.Millisecond), s.opts.MaxLatency)
	}
	return ""
}

// PlanSteered is [Plan] with quality steering: for every prefix in
// steer, routes through tunnels other than the chosen one get
// [SteeredAwayPenalty] on top of their priority and health penalty.
func PlanSteered(routes []Route, states map[string]State, steer Steering) []KernelRoute {
	return plan(routes, states, steer)
}
