// Package health runs Magic-WAN-style health checks through a tunnel: ICMP
// probes wrapped in the tunnel's own encapsulation, and a state machine
// (healthy, degraded, down) with hysteresis whose state penalises the
// tunnel's routes (see [tunnel.State.Penalty]).
//
// # Probes
//
// A probe is an ICMP echo sent into the tunnel with [Path.Inject]. With
// type "reply" (the default) it is an echo reply whose source is the far
// end (the target) and whose destination is this end's tunnel address: the
// peer only routes it back, so its control-plane ICMP policing never sees
// it. With type "request" it is an echo request from this end to the
// target, which the peer answers. Either way the answer is an echo reply
// from the target to this end, and it comes back through the tunnel, where
// [Path.SetProbeHandler] picks it out before the TUN device.
//
// The target defaults to the far end of the tunnel's /31 or /30. An
// edgegw GRE peer sends reply-style probes straight back in userspace; a
// plain Linux router as peer must accept packets with its own address as
// source on the tunnel interface (net.ipv4.conf.<if>.accept_local=1, and
// forwarding on). Answers return through the tunnel: checks are
// bidirectional. A unidirectional check, whose answer returns over the
// Internet, is refused by the configuration check (it would need a raw
// ICMP socket on the WAN side, and accepting answers from outside the
// tunnel is weaker against spoofing).
//
// # Rates and timing
//
// Every round sends one probe and waits for its answer; a lost probe is
// retried at once, up to twice more (Magic WAN's "up to 2 quick
// re-probes"), so three consecutive failures take at most one interval
// plus three timeouts:
//
//	rate  interval  timeout  worst-case detection (healthy → down)
//	low   10 s      1 s      13 s
//	mid   1 s       500 ms   2.5 s
//	high  250 ms    250 ms   1 s
//
// # States (thresholds modelled on Magic WAN's)
//
//   - any → down: 3 consecutive failed probes (Magic WAN: all of at least
//     3 samples failed within 1 s). Route penalty +1,000,000.
//   - healthy → degraded: 2 failed probes within 5 minutes (Magic WAN:
//     ≥ 0.1 % failed in 5 minutes and at least 2 failures; at one probe a
//     second or less, 2 failures are always ≥ 0.1 %). Penalty +500,000.
//   - down → degraded: 3 consecutive successful probes.
//   - degraded → healthy: 30 consecutive successful probes (Magic WAN:
//     failure rate under 0.1 % over the last 30 probes, i.e. none):
//     7.5 s at rate high, 30 s at mid, 5 minutes at low. The failure
//     history is cleared on becoming healthy.
//
// A tunnel starts healthy, as a new Magic WAN tunnel does.
//
// # Quality
//
// Beside the health probes a checker sends quality probes: the same ICMP
// packets with another identifier, pipelined every 100 ms (every 10 ms on
// a tunnel a quality-steered route uses). They measure median latency,
// jitter, loss and latency under load over a rolling [QualityWindow]
// (10 s), scored per experience as AIM does (see [Grade] for the rubric),
// and a short [SteeringWindow] (2 s) that quality steering compares with
// its thresholds. They never change the health state.
//
// Because the degraded penalty (500,000) exceeds any configurable
// priority (≤ 65,535), traffic already leaves a tunnel at its second
// failed probe, that is within one interval plus two timeouts (750 ms at
// rate high; measured median 0.74 s, worst 0.90 s over 10 cuts); down
// follows one timeout later. Traffic returns when the tunnel is healthy
// again: 30 consecutive good probes after the path recovers (7.5 s at
// rate high; measured 7.5-7.6 s).
package health

import (
	"time"

	"github.com/edgegw/edgegw/tunnel"
)

// Thresholds of the state machine; [DefaultThresholds] documents them.
type Thresholds struct {
	DownAfter        int           // consecutive failures: any state → down
	DegradeFailures  int           // failures within DegradeWindow: healthy → degraded
	DegradeWindow    time.Duration //
	RecoverAfter     int           // consecutive successes: down → degraded
	HealthyAfter     int           // consecutive successes: degraded → healthy
	QuickRetries     int           // immediate re-probes after a failure
	MaxFailureMemory int           // failure timestamps kept (bounds memory)
}

// DefaultThresholds are the thresholds described in the package comment.
var DefaultThresholds = Thresholds{
	DownAfter:        3,
	DegradeFailures:  2,
	DegradeWindow:    5 * time.Minute,
	RecoverAfter:     3,
	HealthyAfter:     30,
	QuickRetries:     2,
	MaxFailureMemory: 64,
}

// Rate is how often and how patiently a check probes.
type Rate struct {
	Interval time.Duration
	Timeout  time.Duration
}

// Rates maps the configuration's rate names to timings.
var Rates = map[string]Rate{
	"low":  {Interval: 10 * time.Second, Timeout: time.Second},
	"mid":  {Interval: time.Second, Timeout: 500 * time.Millisecond},
	"high": {Interval: 250 * time.Millisecond, Timeout: 250 * time.Millisecond},
}

// DetectionTime is the worst case from a path failing to the check
// reporting down: one interval until the next probe, then DownAfter
// timeouts.
func (r Rate) DetectionTime(th Thresholds) time.Duration {
	return r.Interval + time.Duration(th.DownAfter)*r.Timeout
}

// Machine is the health state machine. It is a pure function of the
// probe results and their times it is fed; it is not safe for concurrent
// use.
type Machine struct {
	th        Thresholds
	state     tunnel.State
	since     time.Time
	succ      int         // consecutive successes
	fails     int         // consecutive failures
	failTimes []time.Time // failures within the degrade window, oldest first
}

// NewMachine returns a machine in state healthy since now.
func NewMachine(th Thresholds, now time.Time) *Machine {
	return &Machine{th: th, since: now}
}

// State returns the current state and since when it holds.
func (m *Machine) State() (tunnel.State, time.Time) { return m.state, m.since }

// Observe feeds one probe result taken at now and returns the new state
// and whether it changed.
func (m *Machine) Observe(ok bool, now time.Time) (tunnel.State, bool) {
	next := m.state
	if ok {
		m.succ++
		m.fails = 0
		switch {
		case m.state == tunnel.Down && m.succ >= m.th.RecoverAfter:
			next = tunnel.Degraded
		case m.state == tunnel.Degraded && m.succ >= m.th.HealthyAfter:
			next = tunnel.Healthy
		}
	} else {
		m.succ = 0
		m.fails++
		m.failTimes = append(m.failTimes, now)
		cut := 0
		for cut < len(m.failTimes) && (now.Sub(m.failTimes[cut]) >= m.th.DegradeWindow || len(m.failTimes)-cut > m.th.MaxFailureMemory) {
			cut++
		}
		m.failTimes = append(m.failTimes[:0], m.failTimes[cut:]...)
		switch {
		case m.fails >= m.th.DownAfter:
			next = tunnel.Down
		case m.state == tunnel.Healthy && len(m.failTimes) >= m.th.DegradeFailures:
			next = tunnel.Degraded
		}
	}
	if next == m.state {
		return m.state, false
	}
	if next == tunnel.Healthy {
		m.failTimes = m.failTimes[:0]
	}
	m.state, m.since = next, now
	return next, true
}
