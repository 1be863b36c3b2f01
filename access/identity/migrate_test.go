package identity

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawDB opens env's database directly, the way an older edgegw or an
// operator would see it.
func rawDB(t testing.TB, env storeEnv) *sql.DB {
	t.Helper()
	db, _, _, err := openStore(env.store, env.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// loadFixture runs a testdata SQL file; statements are separated by lines
// holding only ";".
func loadFixture(t testing.TB, db *sql.DB, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(string(b), "\n;\n") {
		if _, err := db.ExecContext(ctx(t), stmt); err != nil {
			t.Fatalf("%s: %v\n%s", file, err, stmt)
		}
	}
}

func versions(t testing.TB, db *sql.DB) []int {
	t.Helper()
	rows, err := db.QueryContext(ctx(t), `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		rows.Scan(&v)
		out = append(out, v)
	}
	return out
}

func allVersions() []int {
	var out []int
	for _, m := range migrations {
		out = append(out, m.version)
	}
	return out
}

func TestMigrationsAreSequential(t *testing.T) {
	prev := 0
	for i, m := range migrations {
		if m.version <= prev || m.version != i+1 || m.name == "" || len(m.stmts) == 0 {
			t.Errorf("migration %d: version %d name %q with %d statements", i, m.version, m.name, len(m.stmts))
		}
		prev = m.version
	}
}

func TestMigrateFromEmpty(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		r := open(t, env, Options{})
		if got := versions(t, r.db); !slices.Equal(got, allVersions()) {
			t.Errorf("versions %v, want %v", got, allVersions())
		}
		r.Close()
		// Opening a current schema changes nothing.
		r = open(t, env, Options{})
		if got := versions(t, r.db); !slices.Equal(got, allVersions()) {
			t.Errorf("versions after reopening %v, want %v", got, allVersions())
		}
		if _, err := r.Enroll(ctx(t), enrollment(t, "a")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMigrateFromV1(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		loadFixture(t, rawDB(t, env), "testdata/schema_v1.sql")
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		if got := versions(t, r.db); !slices.Equal(got, allVersions()) {
			t.Errorf("versions %v, want %v", got, allVersions())
		}
		alice, err := r.Get(c, "dev_a1ce0000000000000000000000")
		if err != nil {
			t.Fatal(err)
		}
		var key [32]byte
		for i := range key {
			key[i] = 1
		}
		assertDevice(t, "alice from v1", alice, Device{
			ID: "dev_a1ce0000000000000000000000", Name: "alice-laptop", Email: "alice@corp.example",
			Subject: "https://sso.corp.example#alice", Groups: []string{"eng", "staff"}, PublicKey: key,
			Address: netip.MustParseAddr("100.96.0.2"), Created: time.UnixMicro(1764000000000000).UTC(),
			LastSeen: time.UnixMicro(1764000300000000).UTC(),
		})
		bob, err := r.Get(c, "dev_b0b00000000000000000000000")
		if err != nil || !bob.Revoked || !bob.RevokedAt.IsZero() {
			t.Errorf("bob from v1: revoked=%v at %v, %v; want revoked at an unknown time", bob.Revoked, bob.RevokedAt, err)
		}
		s := r.Snapshot()
		if s.Len() != 2 {
			t.Errorf("snapshot of the v1 data has %d devices, want alice and carol", s.Len())
		}
		if d, ok := s.ByAddr(netip.MustParseAddr("100.96.0.3")); !ok || d.Name != "carol-desktop" {
			t.Errorf("100.96.0.3 = %v %v, want carol's device (bob's was revoked)", d.Name, ok)
		}
		// New devices avoid the addresses v1 handed out.
		d, err := r.Enroll(c, enrollment(t, "dave"))
		if err != nil {
			t.Fatal(err)
		}
		if d.Address != netip.MustParseAddr("100.96.0.4") {
			t.Errorf("new device got %s, want 100.96.0.4", d.Address)
		}
		// And the database itself now refuses a second active holder.
		_, err = r.db.ExecContext(c, `UPDATE devices SET address = '100.96.0.2' WHERE id = 'dev_ca701000000000000000000000'`)
		if !isUniqueViolation(err) {
			t.Errorf("two active devices on one address: %v, want a unique violation", err)
		}
	})
}

// TestMigrateV1Conflict: a v1 database where two active devices share an
// address cannot take the unique index. The migration must fail whole,
// leaving the v1 schema as it was, and say why.
func TestMigrateV1Conflict(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		db := rawDB(t, env)
		loadFixture(t, db, "testdata/schema_v1.sql")
		if _, err := db.ExecContext(ctx(t), `UPDATE devices SET address = '100.96.0.2' WHERE id = 'dev_ca701000000000000000000000'`); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx(t), Options{Store: env.store, StateDir: env.stateDir, Pool: testPool})
		if err == nil || !strings.Contains(err.Error(), "schema migration 2") {
			t.Fatalf("Open: %v, want a failed schema migration 2", err)
		}
		if got := versions(t, db); !slices.Equal(got, []int{1}) {
			t.Errorf("versions after the failed migration %v, want [1]", got)
		}
		// Nothing of version 2 was left behind.
		if _, err := db.ExecContext(ctx(t), `SELECT revoked_us FROM devices`); err == nil {
			t.Error("revoked_us exists after the failed migration")
		}
		if _, err := db.ExecContext(ctx(t), `SELECT generation FROM registry_generation`); err == nil {
			t.Error("registry_generation exists after the failed migration")
		}
	})
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		r := open(t, env, Options{})
		if _, err := r.db.ExecContext(ctx(t), `INSERT INTO schema_migrations (version, name, applied_us) VALUES (99, 'future', 0)`); err != nil {
			t.Fatal(err)
		}
		r.Close()
		_, err := Open(ctx(t), Options{Store: env.store, StateDir: env.stateDir, Pool: testPool})
		if err == nil || !strings.Contains(err.Error(), "newer than this edgegw") {
			t.Errorf("Open on schema 99: %v, want a refusal", err)
		}
	})
}

// TestConcurrentOpen starts several appliances at once against one empty
// database: one migrates, the others wait for it and find the schema
// current.
func TestConcurrentOpen(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				r, err := Open(c, Options{Store: env.store, StateDir: env.stateDir, Pool: testPool})
				if err == nil {
					r.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if got := versions(t, rawDB(t, env)); !slices.Equal(got, allVersions()) {
			t.Errorf("versions %v, want %v", got, allVersions())
		}
	})
}
