package identity

import (
	"context"
	"crypto/rand"
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
