package identity

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// storeEnv is one empty store that the registries of a test share, the way
// the appliances of a fleet share one PostgreSQL.
type storeEnv struct {
	kind     string
	store    string
	stateDir string
	pg       *pgServer // nil for sqlite
	pgName   string
}

// storeKinds are the store factories every registry test runs against.
var storeKinds = []struct {
	name  string
	fresh func(t *testing.T) storeEnv
}{
	{"sqlite", func(t *testing.T) storeEnv {
		return storeEnv{kind: "sqlite", store: "sqlite", stateDir: t.TempDir()}
	}},
	{"postgres", func(t *testing.T) storeEnv {
		s := postgres(t)
		name, url := s.newDB(t)
		return storeEnv{kind: "postgres", store: url, pg: s, pgName: name}
	}},
}

// eachStore runs fn once per store kind with a fresh store.
func eachStore(t *testing.T, fn func(t *testing.T, env storeEnv)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { fn(t, k.fresh(t)) })
	}
}

// fakeClock is a settable clock shared by the registries of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	testPool    = netip.MustParsePrefix("100.96.0.0/12")
	testGateway = netip.MustParseAddr("100.96.0.1")
)

// open opens a registry on env; the options' zero fields get test values.
func open(t testing.TB, env storeEnv, o Options) *Registry {
	t.Helper()
	o.Store, o.StateDir = env.store, env.stateDir
	if !o.Pool.IsValid() {
		o.Pool = testPool
	}
	if o.Reserved == nil {
		o.Reserved = []netip.Addr{testGateway}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Open(ctx, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// run runs r.Run until the test ends.
func run(t testing.TB, r *Registry) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func randKey(t testing.TB) [32]byte {
	var k [32]byte
	rand.Read(k[:])
	return k
}

func enrollment(t testing.TB, who string) Enrollment {
	return Enrollment{
		Name: who + "-laptop", Email: who + "@corp.example", Subject: "https://sso.corp.example#" + who,
		Groups: []string{"staff"}, PublicKey: randKey(t),
	}
}

func ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// count reads how many device rows the store holds, bypassing the
// registry.
func count(t testing.TB, r *Registry) int {
	t.Helper()
	var n int
	if err := r.db.QueryRowContext(ctx(t), `SELECT COUNT(*) FROM devices`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEnrollLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		e := enrollment(t, "alice")
		e.Groups = []string{"staff", "eng", "staff"}
		e.Expires = clk.Now().Add(720 * time.Hour)
		d, err := r.Enroll(c, e)
		if err != nil {
			t.Fatal(err)
		}
		if !ValidDeviceID(d.ID) {
			t.Errorf("id %q is not a device id", d.ID)
		}
		want := Device{
			ID: d.ID, Name: "alice-laptop", Email: "alice@corp.example", Subject: e.Subject,
			Groups: []string{"eng", "staff"}, PublicKey: e.PublicKey, Address: netip.MustParseAddr("100.96.0.2"),
			Created: clk.Now(), Expires: e.Expires,
		}
		assertDevice(t, "enrolled", d, want)
		got, err := r.Get(c, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertDevice(t, "Get", got, want)
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if s, ok := r.Snapshot().ByKey(e.PublicKey); !ok || s.ID != d.ID {
			t.Errorf("snapshot ByKey = %v, %v; want the device", s.ID, ok)
		}

		// Re-enrolling the same key as the same user keeps id and address
		// and takes the new groups, name and expiry.
		clk.Advance(time.Hour)
		e2 := e
		e2.Name, e2.Groups, e2.Expires = "alice-new", []string{"admins"}, clk.Now().Add(1000*time.Hour)
		d2, err := r.Enroll(c, e2)
		if err != nil {
			t.Fatal(err)
		}
		want.Name, want.Groups, want.Expires = "alice-new", []string{"admins"}, e2.Expires
		assertDevice(t, "re-enrolled", d2, want)

		// A second device of the same user is a second device.
		other, err := r.Enroll(c, enrollment(t, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		if other.ID == d.ID || other.Address == d.Address {
			t.Errorf("second device %s %s shares id or address with %s %s", other.ID, other.Address, d.ID, d.Address)
		}

		// Touch moves last-seen forward only.
		seen := clk.Now().Add(time.Minute)
		if err := r.Touch(c, d.ID, seen); err != nil {
			t.Fatal(err)
		}
		if err := r.Touch(c, d.ID, seen.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, _ := r.Get(c, d.ID); !got.LastSeen.Equal(seen) {
			t.Errorf("LastSeen = %v, want %v", got.LastSeen, seen)
		}

		// Revoke, twice; then the key cannot come back.
		clk.Advance(time.Minute)
		rv, err := r.Revoke(c, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !rv.Revoked || !rv.RevokedAt.Equal(clk.Now()) {
			t.Errorf("revoked device: Revoked=%v RevokedAt=%v", rv.Revoked, rv.RevokedAt)
		}
		clk.Advance(time.Minute)
		if rv2, err := r.Revoke(c, d.ID); err != nil || !rv2.RevokedAt.Equal(rv.RevokedAt) {
			t.Errorf("second revoke = %v, %v; want the device unchanged", rv2.RevokedAt, err)
		}
		if _, err := r.Enroll(c, e2); !errors.Is(err, ErrRevoked) {
			t.Errorf("enroll a revoked key: %v, want ErrRevoked", err)
		}
		if err := r.Touch(c, d.ID, clk.Now()); !errors.Is(err, ErrRevoked) {
			t.Errorf("touch a revoked device: %v, want ErrRevoked", err)
		}
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if _, ok := r.Snapshot().ByID(d.ID); ok {
			t.Error("revoked device still in the snapshot")
		}
		if _, ok := r.Snapshot().ByID(other.ID); !ok {
			t.Error("other device missing from the snapshot")
		}

		list, err := r.List(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].ID != d.ID || !list[0].Revoked || list[1].ID != other.ID {
			t.Errorf("List = %v", list)
		}

		for name, err := range map[string]error{
			"get":    func() error { _, err := r.Get(c, "dev_00000000000000000000000000"); return err }(),
			"revoke": func() error { _, err := r.Revoke(c, "dev_00000000000000000000000000"); return err }(),
			"touch":  r.Touch(c, "dev_00000000000000000000000000", clk.Now()),
		} {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s of an unknown id: %v, want ErrNotFound", name, err)
			}
		}
	})
}

func assertDevice(t *testing.T, what string, got, want Device) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Email != want.Email || got.Subject != want.Subject ||
		!slices.Equal(got.Groups, want.Groups) || got.PublicKey != want.PublicKey || got.Address != want.Address ||
		!got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) || !got.LastSeen.Equal(want.LastSeen) ||
		got.Revoked != want.Revoked || !got.RevokedAt.Equal(want.RevokedAt) {
		t.Errorf("%s device:\n got %+v\nwant %+v", what, got, want)
	}
}

func TestExpiry(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		e := enrollment(t, "bob")
		e.Expires = clk.Now().Add(time.Hour)
		d, err := r.Enroll(c, e)
		if err != nil {
			t.Fatal(err)
		}
		keep, err := r.Enroll(c, enrollment(t, "carol")) // never expires
		if err != nil {
			t.Fatal(err)
		}
		r.Refresh(c)
		s := r.Snapshot()
		if s.Len() != 2 || !s.NextExpiry().Equal(e.Expires) {
			t.Fatalf("snapshot: %d devices, next expiry %v", s.Len(), s.NextExpiry())
		}
		gen := s.Generation()

		// At the expiry the device leaves the snapshot without any write
		// to the database: the generation stays.
		clk.Advance(time.Hour)
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		s = r.Snapshot()
		if _, ok := s.ByID(d.ID); ok || s.Len() != 1 || s.Generation() != gen || !s.NextExpiry().IsZero() {
			t.Errorf("after expiry: has=%v len=%d gen=%d (was %d) next=%v", ok, s.Len(), s.Generation(), gen, s.NextExpiry())
		}
		if _, ok := s.ByID(keep.ID); !ok {
			t.Error("non-expiring device left the snapshot")
		}
		if got, err := r.Get(c, d.ID); err != nil || got.Revoked {
			t.Errorf("expired device in the database: %v, %v; want it there, not revoked", got, err)
		}

		// An expired device re-enrolls with the same key: same address.
		e.Expires = clk.Now().Add(time.Hour)
		d2, err := r.Enroll(c, e)
		if err != nil {
			t.Fatal(err)
		}
		if d2.ID != d.ID || d2.Address != d.Address {
			t.Errorf("re-enrolled expired device: %s %s, want %s %s", d2.ID, d2.Address, d.ID, d.Address)
		}
		r.Refresh(c)
		if _, ok := r.Snapshot().ByAddr(d.Address); !ok {
			t.Error("re-enrolled device not in the snapshot")
		}
	})
}

func TestAddressAllocation(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		// 100.96.7.0/29: .0 network, .7 broadcast, .1 the gateway, .3 a
		// static peer: four addresses for devices.
		r := open(t, env, Options{
			Now: clk.Now, Pool: netip.MustParsePrefix("100.96.7.1/29"),
			Reserved: []netip.Addr{netip.MustParseAddr("100.96.7.1"), netip.MustParseAddr("100.96.7.3")},
		})
		c := ctx(t)
		var devs []Device
		for i := range 4 {
			e := enrollment(t, fmt.Sprintf("u%d", i))
			if i == 0 {
				e.Expires = clk.Now().Add(time.Minute)
			}
			d, err := r.Enroll(c, e)
			if err != nil {
				t.Fatalf("enroll %d: %v", i, err)
			}
			devs = append(devs, d)
		}
		var got []string
		for _, d := range devs {
			got = append(got, d.Address.String())
		}
		if want := []string{"100.96.7.2", "100.96.7.4", "100.96.7.5", "100.96.7.6"}; !slices.Equal(got, want) {
			t.Errorf("addresses %v, want %v", got, want)
		}

		// Full: the next enrollment fails and writes nothing. An expired
		// device still holds its address (it may re-enroll).
		clk.Advance(time.Hour)
		if _, err := r.Enroll(c, enrollment(t, "late")); !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("enroll into a full pool: %v, want ErrPoolExhausted", err)
		}
		if n := count(t, r); n != 4 {
			t.Errorf("%d rows after a failed enrollment, want 4", n)
		}

		// Revocation frees the address for the next device.
		if _, err := r.Revoke(c, devs[2].ID); err != nil {
			t.Fatal(err)
		}
		d, err := r.Enroll(c, enrollment(t, "late"))
		if err != nil {
			t.Fatal(err)
		}
		if d.Address != devs[2].Address {
			t.Errorf("new device got %s, want the revoked device's %s", d.Address, devs[2].Address)
		}
	})
}

func TestAddressReuseOrder(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		r := open(t, env, Options{})
		c := ctx(t)
		a, _ := r.Enroll(c, enrollment(t, "a"))
		b, _ := r.Enroll(c, enrollment(t, "b"))
		if _, err := r.Revoke(c, a.ID); err != nil {
			t.Fatal(err)
		}
		// A freed address waits until the rest of the pool was used: flow
		// logs from just before the revocation stay unambiguous.
		d, err := r.Enroll(c, enrollment(t, "c"))
		if err != nil {
			t.Fatal(err)
		}
		if d.Address == a.Address || d.Address != b.Address.Next() {
			t.Errorf("third device got %s; want %s (after %s, not the freed %s)", d.Address, b.Address.Next(), b.Address, a.Address)
		}
		// Also after a restart.
		r.Close()
		r = open(t, env, Options{})
		e, err := r.Enroll(c, enrollment(t, "d"))
		if err != nil {
			t.Fatal(err)
		}
		if e.Address != d.Address.Next() {
			t.Errorf("after a restart the next device got %s; want %s (not the freed %s)", e.Address, d.Address.Next(), a.Address)
		}
	})
}

func TestKeyInUse(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		r := open(t, env, Options{})
		c := ctx(t)
		alice := enrollment(t, "alice")
		d, err := r.Enroll(c, alice)
		if err != nil {
			t.Fatal(err)
		}
		mallory := enrollment(t, "mallory")
		mallory.PublicKey = alice.PublicKey
		if _, err := r.Enroll(c, mallory); !errors.Is(err, ErrKeyInUse) {
			t.Fatalf("enroll alice's key as mallory: %v, want ErrKeyInUse", err)
		}
		got, err := r.Get(c, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertDevice(t, "after the refused enrollment", got, d)
		if n := count(t, r); n != 1 {
			t.Errorf("%d rows, want 1", n)
		}
		// Revoked keys stay taken too: another user cannot pick one up.
		r.Revoke(c, d.ID)
		if _, err := r.Enroll(c, mallory); !errors.Is(err, ErrKeyInUse) {
			t.Errorf("enroll a revoked key as another user: %v, want ErrKeyInUse", err)
		}
	})
}

func TestInvalidEnrollment(t *testing.T) {
	r := open(t, storeKinds[0].fresh(t), Options{})
	now := time.Now()
	for _, tc := range []struct {
		name string
		edit func(*Enrollment)
	}{
		{"no subject", func(e *Enrollment) { e.Subject = "" }},
		{"zero key", func(e *Enrollment) { e.PublicKey = [32]byte{} }},
		{"expiry in the past", func(e *Enrollment) { e.Expires = now.Add(-time.Minute) }},
		{"control character in name", func(e *Enrollment) { e.Name = "a\nb" }},
		{"long name", func(e *Enrollment) { e.Name = string(make([]byte, 65)) }},
		{"empty group", func(e *Enrollment) { e.Groups = []string{"ok", ""} }},
		{"too many groups", func(e *Enrollment) { e.Groups = make([]string, 257) }},
		{"email not UTF-8", func(e *Enrollment) { e.Email = "\xff@x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := enrollment(t, "x")
			tc.edit(&e)
			if _, err := r.Enroll(ctx(t), e); !errors.Is(err, ErrInvalid) {
				t.Errorf("Enroll: %v, want ErrInvalid", err)
			}
		})
	}
	if n := count(t, r); n != 0 {
		t.Errorf("%d rows after invalid enrollments", n)
	}
	e := enrollment(t, "x")
	e.Name = ""
	if d, err := r.Enroll(ctx(t), e); err != nil || d.Name != "device" {
		t.Errorf("empty name: %q, %v; want the default name", d.Name, err)
	}
}

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
