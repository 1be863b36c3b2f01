package scim

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestStoreCheckpointsInBackground: the store's write-ahead log is
// copied into the database by the store's own checkpointer after writes,
// not by the request whose commit crosses SQLite's default threshold
// (that one stays as a backstop, raised), and close stops it.
func TestStoreCheckpointsInBackground(t *testing.T) {
	st, err := openStore(testCtx(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			st.close()
		}
	})
	var pages int
	if err := st.db.QueryRowContext(testCtx(t), `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != backstopPages {
		t.Errorf("wal_autocheckpoint %d, want %d", pages, backstopPages)
	}
	if n := st.checkpoints.Load(); n != 0 {
		t.Errorf("%d checkpoints before any write", n)
	}
	now := time.Now()
	for i := range 20 {
		u := &user{id: fmt.Sprint("u", i), doc: map[string]any{"userName": fmt.Sprintf("user%d@corp.example", i)}, created: now, modified: now}
		if err := st.apply(testCtx(t), write{putUser: u}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "a background checkpoint", func() error {
		if st.checkpoints.Load() == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	// Everything in the log was copied: a checkpoint now finds nothing
	// left (log frames == checkpointed frames).
	var busy, log, done int
	if err := st.db.QueryRowContext(testCtx(t), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &log, &done); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || log != done {
		t.Errorf("after the background checkpoint: busy %d, %d frames in the log, %d checkpointed", busy, log, done)
	}
	closed = true
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.done:
	default:
		t.Error("the checkpointer still runs after close")
	}
}
