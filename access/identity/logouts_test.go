package identity

import (
	"net/netip"
	"testing"
	"time"
)

// TestSharedLogouts: a logout recorded through one appliance reaches the
// other's snapshot on its next poll, keys with NUL bytes survive the
// store, a time only moves forward, an older or equal record writes
// nothing, and rows past forgetBefore go.
func TestSharedLogouts(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		o := Options{Pool: netip.MustParsePrefix("100.96.9.0/24")}
		a, b := open(t, env, o), open(t, env, o)
		c := ctx(t)
		now := time.Now()
		alice, email := "https://idp.test\x00alice", "email\x00bob@corp.example"
		at := now.UnixMilli()
		if err := a.RecordLogouts(c, map[string]int64{alice: at, email: at - 10}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := b.Refresh(c); err != nil {
			t.Fatal(err)
		}
		got := b.Snapshot().Logouts()
		if got[alice] != at || got[email] != at-10 || len(got) != 2 {
			t.Fatalf("B's logouts %v, want alice at %d and bob's email at %d", got, at, at-10)
		}
		held := got

		// An older logout of alice changes nothing: no new generation.
		gen := b.Snapshot().generation
		if err := b.RecordLogouts(c, map[string]int64{alice: at - 1000}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := b.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if g := b.Snapshot().generation; g != gen {
			t.Errorf("an older logout wrote generation %d (had %d)", g, gen)
		}

		// A later one moves forward on both, and the map A's snapshot held
		// before is not changed under its readers.
		if err := b.RecordLogouts(c, map[string]int64{alice: at + 5000}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := a.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if got := a.Snapshot().Logouts()[alice]; got != at+5000 {
			t.Errorf("A: alice's logout %d, want %d", got, at+5000)
		}
		if held[alice] != at {
			t.Errorf("a published snapshot's logouts changed: %d", held[alice])
		}

		// forgetBefore past bob's logout drops it from the store; a full
		// reload (a new appliance) no longer has it.
		if err := a.RecordLogouts(c, map[string]int64{"k": at + 6000}, time.UnixMilli(at)); err != nil {
			t.Fatal(err)
		}
		fresh := open(t, env, o)
		got = fresh.Snapshot().Logouts()
		if _, ok := got[email]; ok || got[alice] != at+5000 || got["k"] != at+6000 {
			t.Errorf("after forgetting: %v", got)
		}
	})
}
