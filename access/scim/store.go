package scim

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// dbFile is the store's file name inside the state dir.
const dbFile = "scim.db"

// store keeps the provisioned users and groups in SQLite, one row per
// resource and one per membership, so a PATCH that adds a member to a
// group of thousands writes one row, not the group.
type store struct {
	db *sql.DB

	// The checkpointer (see checkpoint) copies the write-ahead log into
	// the database file in the background; store owns it, close stops it.
	dirty       atomic.Bool // written since the last checkpoint
	checkpoints atomic.Uint64
	stop        context.CancelFunc
	done        chan struct{}
}

// checkpointEvery is how often the checkpointer runs when the store was
// written. backstopPages is the log size (4 KiB pages) at which a commit
// checkpoints by itself all the same: SQLite's default is 1,000 pages,
// which a provider's PATCHes (a few pages each) reach every few hundred
// requests, and that request then waited for the copy and two fsyncs
// (tens of ms on a busy disk, more on an appliance's flash).
const (
	checkpointEvery = time.Second
	backstopPages   = 4000
)

const schemaVersion = 1

var schemaSQL = []string{
	`CREATE TABLE IF NOT EXISTS users (
		id          TEXT PRIMARY KEY,
		doc         TEXT NOT NULL,
		created_us  BIGINT NOT NULL,
		modified_us BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS groups (
		id          TEXT PRIMARY KEY,
		doc         TEXT NOT NULL,
		created_us  BIGINT NOT NULL,
		modified_us BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS members (
		group_id TEXT NOT NULL,
		user_id  TEXT NOT NULL,
		PRIMARY KEY (group_id, user_id)
	)`,
	`CREATE INDEX IF NOT EXISTS members_user ON members (user_id)`,
}

func openStore(ctx context.Context, stateDir string) (*store, error) {
	if stateDir == "" {
		return nil, fmt.Errorf("scim: no state directory for %s", dbFile)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("scim: create state directory: %w", err)
	}
	path := filepath.Join(stateDir, dbFile)
	db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"+
		fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", backstopPages))
	if err != nil {
		return nil, fmt.Errorf("scim: open %s: %w", path, err)
	}
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("scim: read %s: %w", path, err)
	}
	if v > schemaVersion {
		db.Close()
		return nil, fmt.Errorf("scim: %s has schema version %d, newer than this edgegw's %d", path, v, schemaVersion)
	}
	for _, q := range schemaSQL {
		if _, err := db.ExecContext(ctx, q); err != nil {
			db.Close()
			return nil, fmt.Errorf("scim: create schema in %s: %w", path, err)
		}
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		db.Close()
		return nil, fmt.Errorf("scim: %s: %w", path, err)
	}
	// The checkpointer's context is the store's own: the Server that owns
	// the store outlives Open's ctx.
	cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	st := &store{db: db, stop: stop, done: make(chan struct{})}
	go st.checkpointer(cctx, checkpointEvery)
	return st, nil
}

// close stops the checkpointer and closes the database.
func (s *store) close() error {
	s.stop()
	<-s.done
	return s.db.Close()
}

// checkpointer runs a passive checkpoint every interval after writes, so
// requests do not (see backstopPages). A passive checkpoint waits for no
// reader or writer; what it cannot copy now it copies next time. Its
// errors are not a request's: the next run or the backstop retries.
func (s *store) checkpointer(ctx context.Context, interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.dirty.Swap(false) {
			continue
		}
		if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
			s.dirty.Store(true)
			continue
		}
		s.checkpoints.Add(1)
	}
}

// load reads every user, group and membership.
func (s *store) load(ctx context.Context) (map[string]*user, map[string]*group, error) {
	users := map[string]*user{}
	groups := map[string]*group{}
	err := s.rows(ctx, `SELECT id, doc, created_us, modified_us FROM users`, func(id string, doc map[string]any, c, m time.Time) {
		users[id] = &user{id: id, doc: doc, created: c, modified: m}
	})
	if err != nil {
		return nil, nil, err
	}
	err = s.rows(ctx, `SELECT id, doc, created_us, modified_us FROM groups`, func(id string, doc map[string]any, c, m time.Time) {
		groups[id] = &group{id: id, doc: doc, members: map[string]struct{}{}, created: c, modified: m}
	})
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT group_id, user_id FROM members`)
	if err != nil {
		return nil, nil, fmt.Errorf("scim: read members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g, u string
		if err := rows.Scan(&g, &u); err != nil {
			return nil, nil, fmt.Errorf("scim: read members: %w", err)
		}
		if gr := groups[g]; gr != nil && users[u] != nil {
			gr.members[u] = struct{}{}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("scim: read members: %w", err)
	}
	return users, groups, nil
}

func (s *store) rows(ctx context.Context, q string, fn func(string, map[string]any, time.Time, time.Time)) error {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("scim: load: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, doc string
			c, m    int64
		)
		if err := rows.Scan(&id, &doc, &c, &m); err != nil {
			return fmt.Errorf("scim: load: %w", err)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(doc), &d); err != nil || d == nil {
			return fmt.Errorf("scim: load %s: stored document is not a JSON object: %v", id, err)
		}
		fn(id, d, time.UnixMicro(c).UTC(), time.UnixMicro(m).UTC())
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scim: load: %w", err)
	}
	return nil
}

// write is one change to the store, applied in one transaction.
type write struct {
	putUser    *user
	delUser    string
	putGroup   *group
	delGroup   string
	addMembers []string // user ids added to putGroup
	delMembers []string // user ids removed from putGroup
}

func (s *store) apply(ctx context.Context, w write) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("scim: begin: %w", err)
	}
	defer tx.Rollback()
	exec := func(q string, args ...any) {
		if err == nil {
			_, err = tx.ExecContext(ctx, q, args...)
		}
	}
	upsert := func(table, id string, doc map[string]any, c, m time.Time) {
		b, jerr := json.Marshal(doc)
		if jerr != nil && err == nil {
			err = jerr
		}
		exec(`INSERT INTO `+table+` (id, doc, created_us, modified_us) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, modified_us = excluded.modified_us`,
			id, string(b), c.UnixMicro(), m.UnixMicro())
	}
	if u := w.putUser; u != nil {
		upsert("users", u.id, u.doc, u.created, u.modified)
	}
	if w.delUser != "" {
		exec(`DELETE FROM members WHERE user_id = $1`, w.delUser)
		exec(`DELETE FROM users WHERE id = $1`, w.delUser)
	}
	if g := w.putGroup; g != nil {
		upsert("groups", g.id, g.doc, g.created, g.modified)
		for _, u := range w.addMembers {
			exec(`INSERT INTO members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, g.id, u)
		}
		for _, u := range w.delMembers {
			exec(`DELETE FROM members WHERE group_id = $1 AND user_id = $2`, g.id, u)
		}
	}
	if w.delGroup != "" {
		exec(`DELETE FROM members WHERE group_id = $1`, w.delGroup)
		exec(`DELETE FROM groups WHERE id = $1`, w.delGroup)
	}
	if err != nil {
		return fmt.Errorf("scim: write: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("scim: commit: %w", err)
	}
	s.dirty.Store(true)
	return nil
}
