// Package pgtest runs a real PostgreSQL 15, from Debian's postgresql-15
// package, for tests: the device registry's own tests and the gateway's
// end-to-end tests of appliances sharing one database.
//
// A server listens only on a unix socket in a fresh temporary directory (no
// TCP port, so test binaries running side by side cannot collide) and trusts
// every local connection as the "postgres" role. Each test takes its own
// database with [Server.NewDB]. Network namespaces do not separate
// filesystem sockets, so a process started in a netlab namespace reaches
// the server through the same URL.
//
// [Start] gives a test a private server that stops when the test ends;
// [Shared] gives every test of a binary one server, which the binary's
// TestMain stops with [StopShared]. Both skip the test when the binaries
// are not installed.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// Bin is where Debian's postgresql-15 package installs the server.
const Bin = "/usr/lib/postgresql/15/bin"

// Server is one running PostgreSQL.
type Server struct {
	dir     string // socket directory, and the data directory's parent
	data    string
	run     func(name string, args ...string) *exec.Cmd
	seq     atomic.Int64
	once    sync.Once
	stopped atomic.Bool
}

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

// Start starts a private server for t and stops it when t ends. It skips t
// when the PostgreSQL binaries are missing, or when it runs as root and no
// "postgres" user exists to run the server as (initdb refuses root).
func Start(t testing.TB) *Server {
	t.Helper()
	skipUnlessInstalled(t)
	s, err := start()
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Shared returns the test binary's shared server, starting it on first use.
// It skips t like [Start]. The binary's TestMain must call [StopShared]
// after m.Run, or the server outlives the tests.
func Shared(t testing.TB) *Server {
	t.Helper()
	skipUnlessInstalled(t)
	sharedOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		t.Fatalf("start PostgreSQL: %v", sharedErr)
	}
	return shared
}

// StopShared stops the shared server if one was started; it is safe to call
// when none was.
func StopShared() {
	if shared != nil {
		shared.Stop()
	}
}

func skipUnlessInstalled(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(Bin, "initdb")); err != nil {
		testkit.Unavailable(t, fmt.Sprintf("PostgreSQL 15 binaries not installed (%v): apt-get install postgresql (make deps installs it)", err))
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			testkit.Unavailable(t, fmt.Sprintf("running as root and no postgres user to run PostgreSQL as (Debian's postgresql package creates it): %v", err))
		}
	}
}

func start() (*Server, error) {
	dir, err := os.MkdirTemp("", "edgegw-pg-")
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	s := &Server{dir: dir, data: filepath.Join(dir, "data")}
	s.run = func(name string, args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(Bin, name), args...)
	}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("look up the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("hand %s to postgres: %w", dir, err)
		}
		s.run = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(Bin, name)}, args...)...)
		}
	}
	if out, err := s.run("initdb", "-D", s.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// Durability is worth nothing in a throw-away server; speed is.
	opts := "-k " + dir + " -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off" +
		" -c shared_buffers=16MB -c max_connections=200"
	if out, err := s.run("pg_ctl", "-D", s.data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	return s, nil
}

// Stop stops the server and removes its files. It is idempotent.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.stopped.Store(true)
		s.run("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop").Run()
		os.RemoveAll(s.dir)
	})
}

// Dir is the directory holding the server's unix socket.
func (s *Server) Dir() string { return s.dir }

// URL is the postgres:// URL of database db on this server. The host part
// is a placeholder that the host parameter overrides with the socket
// directory; it is there because configurations (identity.store) demand a
// host.
func (s *Server) URL(db string) string {
	return "postgres://postgres@localhost/" + db + "?host=" + s.dir + "&sslmode=disable"
}

// Exec runs one statement on the postgres maintenance database, failing t
// if it fails.
func (s *Server) Exec(t testing.TB, q string) {
	t.Helper()
	db, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// NewDB creates an empty database for t, dropped (with its connections cut)
// when t ends unless the server stopped first, and returns its name and
// URL.
func (s *Server) NewDB(t testing.TB) (name, url string) {
	t.Helper()
	name = fmt.Sprintf("t%d_%d", os.Getpid(), s.seq.Add(1))
	s.Exec(t, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		if s.stopped.Load() {
			return
		}
		s.Exec(t, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return name, s.URL(name)
}

// Down makes database name unreachable, the way a crashed or partitioned
// database looks to a client: existing connections are cut and new ones
// refused. Up undoes it.
func (s *Server) Down(t testing.TB, name string) {
	t.Helper()
	s.Exec(t, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS false")
	s.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"'")
}

// Up lets clients connect to database name again after [Server.Down].
func (s *Server) Up(t testing.TB, name string) {
	t.Helper()
	s.Exec(t, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true")
}
