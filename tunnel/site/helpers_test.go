//go:build linux

package site

import (
	"log/slog"
	"net/netip"
	"os"
	"testing"

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
