// Package testkit holds the few helpers every package's tests share:
// polling for a condition with a deadline, a log buffer safe to read
// while something writes to it, and failing (not skipping) when a tool
// the tests need is not installed. It imports nothing of edgegw, so any
// package's tests may use it, leaves included, without an import cycle.
package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Eventually calls f until it returns nil, and fails tb with what and f's
// last error once timeout has passed: tests wait for a condition with a
// deadline instead of sleeping and hoping. It polls every 5 ms at first,
// backing off to every 50 ms, so a condition that holds soon is seen
// soon and a slow one does not spin.
func Eventually(tb testing.TB, timeout time.Duration, what string, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still failing after %s: %v", what, timeout, err)
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers and readers: a
// process's or a logger's output that a test reads while it runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// NeedTool fails tb unless the program tool is on PATH, naming the Debian
// package that installs it. Tests that need a real peer (wg, charon,
// tshark, …) fail rather than skip when it is missing: a skipped test
// reads as a passing one, and .ci/deps (make deps) installs every package
// the tests need. In -short mode, where only unit tests are meant to
// run, it skips instead. It returns tool's path.
func NeedTool(tb testing.TB, tool, debianPackage string) string {
	tb.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		unavailable(tb, fmt.Sprintf("%s not installed: apt-get install %s (make deps installs it)", tool, debianPackage))
		return ""
	}
	return path
}

// NeedRoot fails tb unless the test runs as root, which network
// namespaces, TUN devices and nftables need; in -short mode it skips.
func NeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		unavailable(tb, "needs root (network namespaces, TUN, nftables): run the tests as root, or with -short for the unit tests only")
	}
}

// Unavailable fails tb with why, something the test needs and the machine
// lacks; in -short mode it skips with why instead.
func Unavailable(tb testing.TB, why string) {
	tb.Helper()
	unavailable(tb, why)
}

func unavailable(tb testing.TB, why string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: " + why)
		return
	}
	tb.Fatal(why)
}
