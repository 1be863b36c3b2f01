package tunnel

import "fmt"

// State is a tunnel's health as its health check sees it.
type State int

// Tunnel health states, as Magic WAN names them. The zero value is
// Healthy: a tunnel without health checks, or one not yet probed, carries
// traffic at its configured priority.
const (
	Healthy State = iota
	Degraded
	Down
)

// Route penalties added to the priority of routes through a tunnel in
// that state, as Magic WAN does: the routes stay, so a prefix whose
// tunnels are all unhealthy still goes through the least-bad one.
const (
	DegradedPenalty = 500_000
	DownPenalty     = 1_000_000
)

// Penalty is what s adds to a route's priority.
func (s State) Penalty() int {
	switch s {
	case Degraded:
		return DegradedPenalty
	case Down:
		return DownPenalty
	}
	return 0
}

func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Degraded:
		return "degraded"
	case Down:
		return "down"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText makes states read as their names in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
