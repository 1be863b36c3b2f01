// Package alert raises volumetric alerts on flows, in the manner of
// Cloudflare Magic Network Monitoring's rules: a rule names prefixes, a
// threshold in bits/s or packets/s and a duration; when the traffic to a
// prefix (or to all of them together) stays at or above the threshold in
// every second of the duration, the rule fires, and it resolves when the
// average over the duration falls back below it.
// Events go to webhooks (JSON, retried) and into a bounded history.
//
// Durations start at 10 seconds, finer than MNM's one minute, so a branch
// office sees a flood within seconds; flows from exporters are spread over
// their start and end times so a long flow reported at once is not taken
// for a burst.
package alert

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// MinDuration is the shortest rule duration.
const MinDuration = 10 * time.Second

// MaxDuration bounds a rule's window (one counter a second is kept).
const MaxDuration = time.Hour

// Rule is one volumetric alert rule.
type Rule struct {
	Name     string
	Prefixes []netip.Prefix // traffic to these destinations counts
	// BitsPerSecond and PacketsPerSecond are thresholds; 0: not used.
	// Either one exceeded fires the rule.
	BitsPerSecond    uint64
	PacketsPerSecond uint64
	// Duration is how long the rate must stay at the threshold, and the
	// window its average is taken over to resolve: from MinDuration to
	// MaxDuration, in whole seconds.
	Duration time.Duration
	// Sum applies the threshold to the traffic of all Prefixes together;
	// otherwise each prefix is watched on its own.
	Sum bool
}

// Validate checks a rule.
func (r *Rule) Validate() error {
	var errs []error
	if strings.TrimSpace(r.Name) == "" {
		errs = append(errs, errors.New("no name"))
	}
	if len(r.Prefixes) == 0 {
		errs = append(errs, errors.New("no prefixes"))
	}
	for _, p := range r.Prefixes {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("invalid prefix %v", p))
		}
	}
	if r.BitsPerSecond == 0 && r.PacketsPerSecond == 0 {
		errs = append(errs, errors.New("no threshold: set bits per second, packets per second or both"))
	}
	if r.Duration < MinDuration || r.Duration > MaxDuration || r.Duration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("duration %v: whole seconds from %v to %v", r.Duration, MinDuration, MaxDuration))
	}
	if len(errs) > 0 {
		return fmt.Errorf("alert rule %q: %w", r.Name, errors.Join(errs...))
	}
	return nil
}

// State is an alert's state in an Event.
type State string

// States.
const (
	Firing   State = "firing"
	Resolved State = "resolved"
)

// Event is a rule firing or resolving for a prefix (or, for a Sum rule,
// for its prefixes together).
type Event struct {
	// ID is the same for an alert's firing and its resolve.
	ID     string    `json:"id"`
	Rule   string    `json:"rule"`
	Prefix string    `json:"prefix"` // the prefix; a Sum rule's prefixes, comma-separated
	State  State     `json:"state"`
	Time   time.Time `json:"time"`
	// The window's average rates when the event was raised.
	BitsPerSecond    float64 `json:"bits_per_second"`
	PacketsPerSecond float64 `json:"packets_per_second"`
	// The rule's thresholds and duration.
	ThresholdBitsPerSecond    uint64  `json:"threshold_bits_per_second,omitempty"`
	ThresholdPacketsPerSecond uint64  `json:"threshold_packets_per_second,omitempty"`
	DurationSeconds           float64 `json:"duration_seconds"`
}
