package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is what differs between the two stores. The schema and the
// queries are the same text for both: $n placeholders (SQLite accepts them
// as positional parameters), BIGINT microseconds for times, TEXT for keys,
// addresses and group lists, and a partial unique index both understand.
type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// sqliteFile is the registry's file name inside the state dir.
const sqliteFile = "identity.db"

// connectTimeout bounds how long a PostgreSQL connection attempt may take
// when the URL does not set connect_timeout: a database that is down must
// turn into ErrUnavailable quickly, not hang an enrollment.
const connectTimeout = 5 * time.Second

// openStore opens the database the store setting names and returns a
// description of it for logs and errors (never containing a password).
func openStore(store, stateDir string) (*sql.DB, dialect, string, error) {
	switch {
	case store == "" || store == "sqlite":
		if stateDir == "" {
			return nil, 0, "", fmt.Errorf("%w: the sqlite store needs a state directory", ErrInvalid)
		}
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return nil, 0, "", fmt.Errorf("create state directory: %w", err)
		}
		path := filepath.Join(stateDir, sqliteFile)
		// _txlock=immediate takes the write lock at BEGIN, so two writers
		// queue on busy_timeout instead of failing with SQLITE_BUSY when a
		// read transaction tries to upgrade. WAL lets snapshot loads run
		// beside a writer.
		dsn := "file:" + path + "?_txlock=immediate" +
			"&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
			fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", backstopPages)
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return nil, 0, "", fmt.Errorf("open %s: %w", path, err)
		}
		return db, dialectSQLite, "sqlite " + path, nil
	case strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://"):
		cfg, err := pgx.ParseConfig(store)
		if err != nil {
			// pgx's message may quote the URL; say only which setting failed.
			return nil, 0, "", fmt.Errorf("%w: identity.store is not a valid postgres URL", ErrInvalid)
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = connectTimeout
		}
		db := stdlib.OpenDB(*cfg)
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(2)
		db.SetConnMaxIdleTime(5 * time.Minute)
		return db, dialectPostgres, "postgres " + redact(store), nil
	default:
		return nil, 0, "", fmt.Errorf("%w: identity.store %q is neither sqlite nor a postgres:// URL", ErrInvalid, redact(store))
	}
}

// redact drops the password from a URL for logs.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// isUniqueViolation reports whether err is a unique-index violation: two
// appliances (or two goroutines) took the same address or key at once.
// The transaction is retried; the loser sees the winner's row.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// unavailable wraps a database failure: ErrUnavailable for callers that
// branch, the cause for the admin. A cancelled caller is not an outage.
func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// checkpointEvery is how often a SQLite registry's checkpointer copies
// the write-ahead log into the database file. backstopPages is the log
// size (4 KiB pages) at which a commit checkpoints by itself all the
// same: SQLite's default is 1,000 pages, which writes of a few pages each
// (SCIM group changes, enrollments) reach every few hundred commits, and
// that commit's caller then waited for the copy and two fsyncs (tens of
// ms on a busy disk, more on an appliance's flash).
const (
	checkpointEvery = time.Second
	backstopPages   = 4000
)

// checkpointer runs SQLite's passive checkpoints in the background, so a
// write does not. The Registry owns it: Open starts it, Close stops it.
type checkpointer struct {
	stop        context.CancelFunc
	done        chan struct{}
	checkpoints atomic.Uint64 // for tests
}

// startCheckpointer starts the checkpointer of a SQLite store; PostgreSQL
// needs none (nil).
func startCheckpointer(ctx context.Context, db *sql.DB, d dialect) *checkpointer {
	if d != dialectSQLite {
		return nil
	}
	// Open's ctx without its end: the Registry outlives Open.
	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c := &checkpointer{stop: stop, done: make(chan struct{})}
	go c.run(ctx, db, checkpointEvery)
	return c
}

// run checkpoints every interval until ctx ends. A passive checkpoint
// waits for no reader or writer, and does nothing (no write, no fsync)
// when the log holds nothing new; what it cannot copy now it copies next
// time. Its errors are no caller's: the next run, or the backstop,
// retries.
func (c *checkpointer) run(ctx context.Context, db *sql.DB, interval time.Duration) {
	defer close(c.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err == nil {
			c.checkpoints.Add(1)
		}
	}
}

// close stops the checkpointer and waits for it; nil is a no-op.
func (c *checkpointer) close() {
	if c == nil {
		return
	}
	c.stop()
	<-c.done
}
