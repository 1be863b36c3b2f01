package identity

import (
	"os"
	"testing"

	"github.com/edgegw/edgegw/access/identity/pgtest"
)

// The registry tests run against a real PostgreSQL 15 from Debian's
// package: one server per test binary (pgtest.Shared), stopped by TestMain,
// and one database per test.

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// pgServer is the shared server under the names the registry tests use.
type pgServer struct{ *pgtest.Server }

// postgres returns the shared server, starting it on first use; it skips
// the test when the binaries are missing.
func postgres(t testing.TB) *pgServer {
	t.Helper()
	return &pgServer{pgtest.Shared(t)}
}

// newDB creates an empty database for one test and returns its URL.
func (s *pgServer) newDB(t testing.TB) (name, url string) {
	t.Helper()
	return s.NewDB(t)
}

// down makes database name unreachable; up undoes it.
func (s *pgServer) down(t testing.TB, name string) { t.Helper(); s.Down(t, name) }
func (s *pgServer) up(t testing.TB, name string)   { t.Helper(); s.Up(t, name) }
