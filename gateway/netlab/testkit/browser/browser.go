// Package browser starts Debian's headless Chromium for tests, the one
// setup every browser test shares (Access login, device enrollment, the
// console, the admin API's browser checks): no sandbox, GPU, sync or
// background traffic; the test's host names mapped to its own addresses;
// the test's own certificates accepted; a profile in the test's temporary
// directory.
package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// Options shape the browser.
type Options struct {
	// Hosts maps host names to the addresses they resolve to (Chromium's
	// host-resolver-rules), so a test reaches its listeners by the names
	// their certificates and Host checks expect.
	Hosts map[string]string
	// Netns runs Chromium inside this network namespace (ip netns exec),
	// as a host of a test topology; empty: the test's own.
	Netns string
	// Width and Height set the window size; zero: Chromium's default.
	Width, Height int
}

// Allocator starts Chromium for the test and returns the allocator
// context tabs are opened on (Tab); the browser stops when the test ends.
// It skips in -short mode and fails, naming the Debian package, when
// chromium is not installed.
func Allocator(t testing.TB, o Options) context.Context {
	t.Helper()
	actx, _ := Start(t, o)
	return actx
}

// Start is Allocator for a browser the caller may stop before the test
// ends (a fresh browser per session, say): stop ends it; the test's end
// does too.
func Start(t testing.TB, o Options) (actx context.Context, stop context.CancelFunc) {
	t.Helper()
	if testing.Short() {
		t.Skip("headless Chromium: skipped in -short mode")
	}
	bin := testkit.NeedTool(t, "chromium", "chromium")
	if o.Netns != "" {
		wrapper := filepath.Join(t.TempDir(), "chromium-netns")
		script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", o.Netns, bin)
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		bin = wrapper
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Test listeners present test certificates (httptest's, the
		// gateway's self-signed one, a test CA's).
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	if len(o.Hosts) > 0 {
		var rules []string
		for name, addr := range o.Hosts {
			rules = append(rules, "MAP "+name+" "+addr)
		}
		sort.Strings(rules)
		opts = append(opts, chromedp.Flag("host-resolver-rules", strings.Join(rules, ", ")))
	}
	if o.Width > 0 && o.Height > 0 {
		opts = append(opts, chromedp.WindowSize(o.Width, o.Height))
	}
	actx, cancel := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), opts...)
	t.Cleanup(cancel)
	return actx, cancel
}

// Tab opens a tab on a browser from Allocator, closed when the test ends
// or after timeout, whichever is first.
func Tab(t testing.TB, actx context.Context, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancelT)
	return ctx
}

// New starts Chromium and opens one tab on it (Allocator, then Tab).
func New(t testing.TB, o Options, timeout time.Duration) context.Context {
	t.Helper()
	return Tab(t, Allocator(t, o), timeout)
}

// PageErrors collects, until ctx ends, the JavaScript exceptions and
// console errors of ctx's page that keep accepts (nil: every one), each as
// "message at URL". The function it returns waits for ctx's end (cancel
// ctx first) and returns what was collected; browser tests fail on them.
func PageErrors(ctx context.Context, keep func(chromedp.ConsoleMessage) bool) (collected func() []string) {
	var problems []string
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() { // ends with ctx
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if (m.IsException() || m.Type == chromedp.ConsoleError) && (keep == nil || keep(m)) {
				problems = append(problems, m.String()+" at "+m.URL)
			}
		}
	}()
	return func() []string {
		<-done
		return problems
	}
}
