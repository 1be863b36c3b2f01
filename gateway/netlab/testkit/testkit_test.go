package testkit

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB that records Fatalf instead of stopping the
// test, so the helpers' failures can be checked.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func (r *recorder) Fatal(args ...any) { r.failed = fmt.Sprint(args...) }

func (r *recorder) Skip(args ...any) { r.failed = "skip: " + fmt.Sprint(args...) }

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, 5*time.Second, "third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("%d calls, want 3", calls)
	}

	r := &recorder{TB: t}
	start := time.Now()
	Eventually(r, 50*time.Millisecond, "never", func() error { return errors.New("still broken") })
	if !strings.Contains(r.failed, "never: still failing after 50ms: still broken") {
		t.Errorf("failure message %q", r.failed)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Error("gave up before the timeout")
	}
}

func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := len(b.String()); n != 400 {
		t.Errorf("%d bytes, want 400", n)
	}
}

func TestNeedTool(t *testing.T) {
	if p := NeedTool(t, "go", "golang-go"); p == "" {
		t.Error("no path for go")
	}
	r := &recorder{TB: t}
	NeedTool(r, "edgegw-no-such-tool", "edgegw-no-such-package")
	want := "edgegw-no-such-tool not installed: apt-get install edgegw-no-such-package (make deps installs it)"
	if testing.Short() {
		want = "skip: -short: " + want
	}
	if r.failed != want {
		t.Errorf("got %q, want %q", r.failed, want)
	}
}
