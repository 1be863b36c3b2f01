package gateway

import "context"

// actor owns the one goroutine that runs a subsystem's Run: start starts
// it, stop cancels it and waits for it to return.
type actor struct {
	cancel context.CancelFunc
	done   chan error // Run's result, kept for every reader
}

func (a *actor) start(ctx context.Context, run func(context.Context) error) {
	rctx, cancel := context.WithCancel(ctx)
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- run(rctx) }()
}

// stop cancels Run and returns its error.
func (a *actor) stop() error {
	a.cancel()
	err := <-a.done
	a.done <- err
	return err
}

// exited reports whether Run has returned on its own, and its error.
func (a *actor) exited() (bool, error) {
	select {
	case err := <-a.done:
		a.done <- err
		return true, err
	default:
		return false, nil
	}
}
