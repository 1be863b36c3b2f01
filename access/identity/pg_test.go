package identity

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
)

// A real PostgreSQL 15 from Debian's package, started once per test binary
// on a unix socket in a temporary directory (no TCP port, so parallel test
// runs on one machine cannot collide) and stopped by TestMain. Each test
// gets its own database in it.

const pgBin = "/usr/lib/postgresql/15/bin"

type pgServer struct {
	dir  string // socket directory and data directory parent
	data string
	run  func(name string, args ...string) *exec.Cmd
}

var (
	pgOnce   sync.Once
	pgShared *pgServer
	pgErr    error
	pgSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pgShared != nil {
		pgShared.stop()
	}
	os.Exit(code)
}

// postgres returns the shared server, starting it on first use; it skips
// the test when the binaries are missing.
func postgres(t testing.TB) *pgServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		t.Skipf("PostgreSQL 15 binaries not installed (%v): apt-get install postgresql-15", err)
	}
	pgOnce.Do(func() { pgShared, pgErr = startPostgres() })
	if pgErr != nil {
		t.Fatalf("start PostgreSQL: %v", pgErr)
	}
	return pgShared
}

func startPostgres() (*pgServer, error) {
	dir, err := os.MkdirTemp("", "edgegw-identity-pg-")
	if err != nil {
		return nil, err
	}
	s := &pgServer{dir: dir, data: filepath.Join(dir, "data")}
	s.run = func(name string, args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(pgBin, name), args...)
	}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root and no postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.run = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgBin, name)}, args...)...)
		}
	}
	if out, err := s.run("initdb", "-D", s.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	opts := "-k " + dir + " -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off" +
		" -c shared_buffers=16MB -c max_connections=200"
	if out, err := s.run("pg_ctl", "-D", s.data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return s, nil
}

func (s *pgServer) stop() {
	s.run("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop").Run()
	os.RemoveAll(s.dir)
}

// url is the store URL for database db on this server.
func (s *pgServer) url(db string) string {
	return "postgres://postgres@localhost/" + db + "?host=" + s.dir + "&sslmode=disable"
}

// admin runs one statement on the postgres database.
func (s *pgServer) admin(t testing.TB, q string) {
	t.Helper()
	db, err := sql.Open("pgx", s.url("postgres"))
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

// newDB creates an empty database for one test and returns its URL.
func (s *pgServer) newDB(t testing.TB) (name, url string) {
	t.Helper()
	name = fmt.Sprintf("t%d_%d", os.Getpid(), pgSeq.Add(1))
	s.admin(t, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		s.admin(t, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return name, s.url(name)
}

// down makes database name unreachable, the way a crashed or partitioned
// database looks to a client: existing connections are cut and new ones
// refused. up undoes it.
func (s *pgServer) down(t testing.TB, name string) {
	s.admin(t, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS false")
	s.admin(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"'")
}

func (s *pgServer) up(t testing.TB, name string) {
	s.admin(t, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true")
}

func TestPostgresHarness(t *testing.T) {
	s := postgres(t)
	_, url := s.newDB(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if len(v) < 2 || v[:2] != "15" {
		t.Errorf("server version %q, want 15.x", v)
	}
}
