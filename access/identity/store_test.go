package identity

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestSQLiteCheckpointsInBackground: a SQLite registry copies its
// write-ahead log into the database in the background (the commit-time
// checkpoint stays as a raised backstop), and Close stops that.
func TestSQLiteCheckpointsInBackground(t *testing.T) {
	r := open(t, storeEnv{kind: "sqlite", store: "sqlite", stateDir: t.TempDir()}, Options{})
	var pages int
	if err := r.db.QueryRowContext(ctx(t), `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != backstopPages {
		t.Errorf("wal_autocheckpoint %d, want %d", pages, backstopPages)
	}
	if _, err := r.Enroll(ctx(t), enrollment(t, "alice")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a background checkpoint", func() error {
		if r.ckpt.checkpoints.Load() == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	var busy, log, done int
	if err := r.db.QueryRowContext(ctx(t), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &log, &done); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || log != done {
		t.Errorf("after the background checkpoint: busy %d, %d frames in the log, %d checkpointed", busy, log, done)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.ckpt.done:
	default:
		t.Error("the checkpointer still runs after Close")
	}
}
