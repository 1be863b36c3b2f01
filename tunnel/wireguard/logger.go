package wireguard

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/device"
)

// drops counts packets the device throws away, by reason.
type drops struct {
	malformed        atomic.Uint64 // by checkedBind
	invalidHandshake atomic.Uint64 // from wireguard-go's log
	disallowedSource atomic.Uint64 // from wireguard-go's log
	invalidInner     atomic.Uint64 // from wireguard-go's log
}

// Format strings wireguard-go logs when it drops a packet. They are matched
// as format strings, before any formatting, so counting costs a comparison.
// A handshake initiation from a key that is not a peer ends up as
// logInvalidInitiation, but so do replays, floods and forged messages, which
// is why there is no "unknown peer" reason.
const (
	logInvalidMAC1         = "Received packet with invalid mac1"
	logInvalidInitiation   = "Received invalid initiation message from %s"
	logInvalidResponse     = "Received invalid response message from %s"
	logInvalidCookie       = "Could not decrypt invalid cookie response"
	logDisallowedSourceV4  = "IPv4 packet with disallowed source address from %v"
	logDisallowedSourceV6  = "IPv6 packet with disallowed source address from %v"
	logInvalidInnerVersion = "Packet with invalid IP version from %v"
)

func (d *drops) observe(format string) {
	switch format {
	case logInvalidMAC1, logInvalidInitiation, logInvalidResponse, logInvalidCookie:
		d.invalidHandshake.Add(1)
	case logDisallowedSourceV4, logDisallowedSourceV6:
		d.disallowedSource.Add(1)
	case logInvalidInnerVersion:
		d.invalidInner.Add(1)
	}
}

// newLogger adapts wireguard-go's printf logger to slog: Verbosef at debug,
// Errorf at warn (wireguard-go's errors are about single packets or peers;
// the device keeps running).
func newLogger(log *slog.Logger, d *drops) *device.Logger {
	logf := func(level slog.Level) func(string, ...any) {
		return func(format string, args ...any) {
			d.observe(format)
			ctx := context.Background()
			if log.Enabled(ctx, level) {
				log.Log(ctx, level, fmt.Sprintf(format, args...))
			}
		}
	}
	return &device.Logger{Verbosef: logf(slog.LevelDebug), Errorf: logf(slog.LevelWarn)}
}
