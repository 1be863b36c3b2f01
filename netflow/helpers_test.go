package netflow

import (
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// testLogger logs to stderr when NETFLOW_TEST_LOG is set.
func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("NETFLOW_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// recordMap is the record as a consumer of its ndjson line sees it
// (timestamps as unixnano).
func recordMap(t testing.TB, r logpush.Record) map[string]any {
	t.Helper()
	line := logpush.AppendNDJSON(nil, r, logpush.TimestampUnixNano)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("record line %q: %v", line, err)
	}
	return m
}
