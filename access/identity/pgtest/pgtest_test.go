package pgtest

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

func query(t *testing.T, url, q string) (string, error) {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v string
	err = db.QueryRowContext(ctx, q).Scan(&v)
	return v, err
}

// TestShared is the shared server: version 15 from Debian's package, one
// database per test, and Down/Up cutting and restoring a database.
func TestShared(t *testing.T) {
	s := Shared(t)
	if Shared(t) != s {
		t.Fatal("Shared started a second server")
	}
	name, url := s.NewDB(t)
	v, err := query(t, url, "SHOW server_version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "15") {
		t.Errorf("server version %q, want 15.x", v)
	}
	if got, err := query(t, url, "SELECT current_database()"); err != nil || got != name {
		t.Errorf("current_database() = %q, %v; want %q", got, err, name)
	}
	if _, other := s.NewDB(t); other == url {
		t.Errorf("two databases share the URL %s", url)
	}
	s.Down(t, name)
	if _, err := query(t, url, "SELECT 1::text"); err == nil {
		t.Error("a database that is down answered")
	}
	s.Up(t, name)
	if got, err := query(t, url, "SELECT 1::text"); err != nil || got != "1" {
		t.Errorf("after Up: %q, %v", got, err)
	}
}

// TestStart is a private server: it answers while the test runs and is
// gone, files and all, once Stop returns (a second Stop is harmless).
func TestStart(t *testing.T) {
	s := Start(t)
	_, url := s.NewDB(t)
	if _, err := query(t, url, "SELECT 1::text"); err != nil {
		t.Fatal(err)
	}
	if s == Shared(t) {
		t.Fatal("Start returned the shared server")
	}
	s.Stop()
	s.Stop()
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", s.Dir(), err)
	}
}
