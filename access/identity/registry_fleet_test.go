package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Tests of appliances sharing one store: concurrency, failures and
// propagation.

// TestConcurrentEnroll is two appliances sharing one store, each enrolling
// from many goroutines at once into a pool barely larger than the demand.
func TestConcurrentEnroll(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		pool := netip.MustParsePrefix("100.96.9.0/26") // 61 addresses for devices
		o := Options{Pool: pool}
		regs := []*Registry{open(t, env, o), open(t, env, o)}
		c := ctx(t)
		const n = 50
		var wg sync.WaitGroup
		devs := make([]Device, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				devs[i], errs[i] = regs[i%2].Enroll(c, enrollment(t, fmt.Sprintf("user%d", i)))
			})
		}
		// And the same device enrolling through both appliances at once.
		same := enrollment(t, "twin")
		twins := make([]Device, 10)
		for i := range twins {
			wg.Go(func() {
				var err error
				if twins[i], err = regs[i%2].Enroll(c, same); err != nil {
					t.Errorf("twin enrollment: %v", err)
				}
			})
		}
		wg.Wait()
		seen := map[netip.Addr]string{}
		for i, d := range devs {
			if errs[i] != nil {
				t.Fatalf("enroll %d: %v", i, errs[i])
			}
			if other, dup := seen[d.Address]; dup {
				t.Errorf("address %s handed to %s and %s", d.Address, other, d.ID)
			}
			if !pool.Contains(d.Address) {
				t.Errorf("address %s outside %s", d.Address, pool)
			}
			seen[d.Address] = d.ID
		}
		for _, d := range twins[1:] {
			if d.ID != twins[0].ID || d.Address != twins[0].Address {
				t.Errorf("the same key became two devices: %s %s and %s %s", d.ID, d.Address, twins[0].ID, twins[0].Address)
			}
		}
		if other, dup := seen[twins[0].Address]; dup {
			t.Errorf("address %s handed to %s and %s", twins[0].Address, other, twins[0].ID)
		}
		if got := count(t, regs[0]); got != n+1 {
			t.Errorf("%d rows, want %d", got, n+1)
		}
		// Both appliances see all of them.
		for i, r := range regs {
			if err := r.Refresh(c); err != nil {
				t.Fatal(err)
			}
			if got := r.Snapshot().Len(); got != n+1 {
				t.Errorf("appliance %d snapshot has %d devices, want %d", i, got, n+1)
			}
		}
		t.Logf("retries after collisions: %d + %d", regs[0].retries.Load(), regs[1].retries.Load())
	})
}

// TestFailedWriteLeavesNothing breaks the database connection in the middle
// of each write transaction, after the device row was written.
func TestFailedWriteLeavesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		r := open(t, env, Options{})
		c := ctx(t)
		kept, err := r.Enroll(c, enrollment(t, "kept"))
		if err != nil {
			t.Fatal(err)
		}
		r.beforeCommit = func(ctx context.Context, tx *sql.Tx) error {
			if env.pg != nil {
				// Kill this transaction's own server process: a real
				// connection loss between the writes and the commit.
				tx.ExecContext(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
				return nil // let Commit discover the dead connection
			}
			return errors.New("disk I/O error (injected)")
		}
		if _, err := r.Enroll(c, enrollment(t, "lost")); err == nil {
			t.Fatal("enrollment succeeded across a broken connection")
		} else if env.pg != nil && !errors.Is(err, ErrUnavailable) {
			t.Errorf("enroll: %v, want ErrUnavailable", err)
		}
		if _, err := r.Revoke(c, kept.ID); err == nil {
			t.Fatal("revocation succeeded across a broken connection")
		}
		r.beforeCommit = nil
		list, err := r.List(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].ID != kept.ID || list[0].Revoked {
			t.Errorf("after failed writes: %+v; want only the first device, not revoked", list)
		}
		// The counter did not move either: other appliances see no change.
		var gen int64
		r.db.QueryRowContext(c, `SELECT generation FROM registry_generation`).Scan(&gen)
		if gen != 2 {
			t.Errorf("generation %d, want 2 (one enrollment)", gen)
		}
		if _, err := r.Enroll(c, enrollment(t, "after")); err != nil {
			t.Errorf("enroll after the failure: %v", err)
		}
	})
}

// TestDatabaseDown takes the whole database away: every call fails with
// ErrUnavailable, the snapshot stays (and still expires devices), and
// everything works again when the database comes back.
func TestDatabaseDown(t *testing.T) {
	s := postgres(t)
	name, url := s.newDB(t)
	env := storeEnv{kind: "postgres", store: url, pg: s, pgName: name}
	clk := newClock()
	r := open(t, env, Options{Now: clk.Now})
	c := ctx(t)
	d, err := r.Enroll(c, enrollment(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	e := enrollment(t, "b")
	e.Expires = clk.Now().Add(time.Minute)
	short, err := r.Enroll(c, e)
	if err != nil {
		t.Fatal(err)
	}
	r.Refresh(c)

	s.down(t, name)
	if _, err := r.Enroll(c, enrollment(t, "c")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Enroll: %v, want ErrUnavailable", err)
	}
	if _, err := r.Revoke(c, d.ID); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Revoke: %v, want ErrUnavailable", err)
	}
	if _, err := r.Get(c, d.ID); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get: %v, want ErrUnavailable", err)
	}
	if _, err := r.List(c); !errors.Is(err, ErrUnavailable) {
		t.Errorf("List: %v, want ErrUnavailable", err)
	}
	if err := r.Touch(c, d.ID, clk.Now()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Touch: %v, want ErrUnavailable", err)
	}
	clk.Advance(2 * time.Minute)
	if err := r.Refresh(c); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Refresh: %v, want ErrUnavailable", err)
	}
	snap := r.Snapshot()
	if _, ok := snap.ByID(d.ID); !ok {
		t.Error("the snapshot lost a device while the database was down")
	}
	if _, ok := snap.ByID(short.ID); ok {
		t.Error("an expired device stayed in the snapshot while the database was down")
	}
	if r.syncErrors.Load() == 0 {
		t.Error("no sync error counted")
	}
	// An appliance starting now cannot open the registry, and says why.
	if _, err := Open(c, Options{Store: url, Pool: testPool}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Open: %v, want ErrUnavailable", err)
	}

	s.up(t, name)
	if _, err := r.Enroll(c, enrollment(t, "c")); err != nil {
		t.Fatalf("Enroll after recovery: %v", err)
	}
	list, err := r.List(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Revoked {
		t.Errorf("after recovery: %d devices (want 3), first revoked=%v", len(list), list[0].Revoked)
	}
}

func TestPropagation(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		a := open(t, env, Options{})
		b := open(t, env, Options{}) // default 1 s poll
		updates := make(chan *Snapshot, 16)
		cancel := b.Subscribe(func(s *Snapshot) {
			select {
			case updates <- s:
			default:
			}
		})
		defer cancel()
		run(t, a)
		run(t, b)
		c := ctx(t)
		wait := func(what string, ok func(*Snapshot) bool) {
			t.Helper()
			start := time.Now()
			deadline := time.After(2 * time.Second)
			for {
				if ok(b.Snapshot()) {
					t.Logf("%s reached the other appliance in %v", what, time.Since(start).Round(time.Millisecond))
					return
				}
				select {
				case <-updates:
				case <-deadline:
					t.Fatalf("%s did not reach the other appliance within 2 s", what)
				}
			}
		}
		d, err := a.Enroll(c, enrollment(t, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		wait("enrollment", func(s *Snapshot) bool { _, ok := s.ByKey(d.PublicKey); return ok })
		if _, err := a.Revoke(c, d.ID); err != nil {
			t.Fatal(err)
		}
		wait("revocation", func(s *Snapshot) bool { _, ok := s.ByAddr(d.Address); return !ok })
	})
}

// TestIncrementalMatchesFull: an appliance that follows another one's
// writes by reading only the changed rows ends with the same snapshot as a
// full read of the database.
func TestIncrementalMatchesFull(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		a := open(t, env, Options{Now: clk.Now})
		b := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		var es []Enrollment
		var ids []string
		for round := range 4 {
			for i := range 6 {
				e := enrollment(t, fmt.Sprintf("r%du%d", round, i))
				if i%3 == 0 {
					e.Expires = clk.Now().Add(time.Duration(i+1) * time.Minute)
				}
				d, err := a.Enroll(c, e)
				if err != nil {
					t.Fatal(err)
				}
				es, ids = append(es, e), append(ids, d.ID)
			}
			a.Revoke(c, ids[len(ids)-2])
			re := es[len(es)-6]
			re.Groups = []string{fmt.Sprintf("round%d", round)}
			re.Expires = clk.Now().Add(time.Hour)
			if _, err := a.Enroll(c, re); err != nil {
				t.Fatal(err)
			}
			clk.Advance(3 * time.Minute)
			if err := b.Refresh(c); err != nil {
				t.Fatal(err)
			}
			full, err := b.sync(c, nil, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			got := b.Snapshot()
			if got.Generation() != full.Generation() || got.Len() != full.Len() || got.expired != full.expired || got.revoked != full.revoked {
				t.Fatalf("round %d: incremental gen %d len %d expired %d revoked %d; full gen %d len %d expired %d revoked %d", round,
					got.Generation(), got.Len(), got.expired, got.revoked, full.Generation(), full.Len(), full.expired, full.revoked)
			}
			for d := range full.All() {
				g, ok := got.ByID(d.ID)
				if !ok {
					t.Fatalf("round %d: %s missing from the incremental snapshot", round, d.ID)
				}
				assertDevice(t, "incremental", g, d)
			}
		}
	})
}
