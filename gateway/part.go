package gateway

import (
	"context"
)

// part is one subsystem as the composition root sees it. Each part's
// adapter lives in its own file (part_*.go) and holds the subsystem's
// handle; the root only commits plans to parts in order and stops them, so
// new behaviour goes into a subsystem, never into the root.
type part interface {
	// name is the configuration section the part serves, for logs.
	name() string
	// commit moves the part from prev to next, compiled by Prepare. prev
	// is nil at start; a part whose section is absent in next stops. It
	// applies only what changed, and on error leaves the part as it was
	// where it can. The root puts back the parts already moved by
	// committing prev to them.
	commit(ctx context.Context, prev, next *Plan) error
	// close stops the part and everything it started; it is idempotent.
	close()
	// ready is nil when the part is up or not configured.
	ready() error
	// status adds the part's view to s.
	status(s *Status)
}
