//go:build linux

package netlab

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// Eventually calls f until it returns nil, and fails tb with f's last
// error once timeout has passed: tests poll for a condition with a
// deadline instead of sleeping and hoping. It is [testkit.Eventually],
// here for the tests that already import netlab.
func Eventually(tb testing.TB, timeout time.Duration, what string, f func() error) {
	tb.Helper()
	testkit.Eventually(tb, timeout, what, f)
}

// Ping sends one ICMP echo request to addr from inside the namespace and
// waits up to a second for the reply. The error carries ping's output.
func (n *NS) Ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "ping", "-c", "1", "-W", "1", addr)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", addr, n.name, err, out)
	}
	return nil
}
