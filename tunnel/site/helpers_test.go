//go:build linux

package site

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel/gre"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func cfg(name, local, remote, addr string) gre.Config {
	return gre.Config{Name: name, Local: netip.MustParseAddr(local), Remote: netip.MustParseAddr(remote), Address: netip.MustParsePrefix(addr)}
}

func ping(ns *netlab.NS, to string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := ns.Exec(ctx, "ping", "-c", "1", "-W", "1", to)
	return err
}

func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
