package enrolltest

import (
	"fmt"
	"slices"
	"testing"
)

// Run starts a provider outside a test, for `make demo`: the same provider
// as [Start], on a loopback port. The returned function stops it; call it
// once.
func Run(o Options) (p *OP, stop func(), err error) {
	h := &host{}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		f, ok := r.(fatal)
		if !ok {
			panic(r)
		}
		h.cleanup()
		p, stop, err = nil, nil, fmt.Errorf("enrolltest: start the provider: %s", string(f))
	}()
	p = Start(h, o)
	return p, h.cleanup, nil
}

// fatal is the panic value by which host's Fatal leaves Start.
type fatal string

// host is the part of testing.TB that Start uses (Helper, Fatal,
// Cleanup), for a caller that is not a test. The embedded interface is
// nil: Start calls nothing else.
type host struct {
	testing.TB
	cleanups []func()
}

func (*host) Helper()                      {}
func (*host) Fatal(args ...any)            { panic(fatal(fmt.Sprint(args...))) }
func (*host) Fatalf(f string, args ...any) { panic(fatal(fmt.Sprintf(f, args...))) }
func (h *host) Cleanup(f func())           { h.cleanups = append(h.cleanups, f) }

// cleanup runs the registered functions, last first, as testing does.
func (h *host) cleanup() {
	for _, f := range slices.Backward(h.cleanups) {
		f()
	}
	h.cleanups = nil
}
