package replay

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := New(3)
	a, b, c, d := KeyOf("a"), KeyOf("b"), KeyOf("c"), KeyOf("d")
	steps := []struct {
		name string
		k    Key
		now  time.Duration
		exp  time.Duration
		want error
	}{
		{"first use", a, 0, 10 * time.Second, nil},
		{"replay", a, 1 * time.Second, 10 * time.Second, ErrReplayed},
		{"second key", b, 1 * time.Second, 5 * time.Second, nil},
		{"third key", c, 2 * time.Second, 20 * time.Second, nil},
		{"full", d, 3 * time.Second, 20 * time.Second, ErrFull},
		{"replay while full is still a replay", c, 3 * time.Second, 20 * time.Second, ErrReplayed},
		{"b expired: room again", d, 5 * time.Second, 20 * time.Second, nil},
		{"b may be used again once expired", b, 6 * time.Second, 20 * time.Second, ErrFull},
		{"a expired too", b, 10 * time.Second, 20 * time.Second, nil},
		{"an already expired value is not stored", a, 11 * time.Second, 11 * time.Second, nil},
	}
	for _, st := range steps {
		err := s.Add(st.k, t0.Add(st.now), t0.Add(st.exp))
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Fatalf("%s: Add = %v, want %v", st.name, err, st.want)
		}
	}
	if s.Len() != 3 || s.Full() != 2 {
		t.Fatalf("Len %d Full %d", s.Len(), s.Full())
	}
	if !s.Seen(c, t0.Add(11*time.Second)) || s.Seen(a, t0.Add(11*time.Second)) {
		t.Fatal("Seen")
	}
	s.Remove(c)
	if s.Seen(c, t0.Add(11*time.Second)) {
		t.Fatal("removed key still seen")
	}
	if err := s.Add(c, t0.Add(11*time.Second), t0.Add(30*time.Second)); err != nil {
		t.Fatalf("re-add after Remove: %v", err)
	}
	// The stale heap entry of c's first use must not expire its second.
	if err := s.Add(KeyOf("x"), t0.Add(21*time.Second), t0.Add(40*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !s.Seen(c, t0.Add(21*time.Second)) {
		t.Fatal("c's second use was forgotten when its first one's expiry passed")
	}
}

func TestKeyOfIsUnambiguous(t *testing.T) {
	if KeyOf("ab", "c") == KeyOf("a", "bc") || KeyOf("a", "") == KeyOf("a") {
		t.Fatal("different part lists share a key")
	}
}

// TestBoundedUnderFlood fills the set far past its bound with values that
// expire in a scrambled order: it never holds more than its bound, and
// once time passes it takes new values again.
func TestBoundedUnderFlood(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := New(1000)
	for i := range 50000 {
		// expiries 1..997 s after t0, not in insertion order
		s.Add(KeyOf(fmt.Sprint(i)), t0, t0.Add(time.Duration(1+(i*7919)%997)*time.Second))
		if s.Len() > 1000 {
			t.Fatalf("%d entries after %d adds", s.Len(), i+1)
		}
	}
	if s.Full() != 49000 {
		t.Fatalf("Full = %d", s.Full())
	}
	if err := s.Add(KeyOf("late"), t0.Add(998*time.Second), t0.Add(999*time.Second)); err != nil {
		t.Fatalf("after every entry expired: %v", err)
	}
	if s.Len() != 1 || len(s.q) != 1 {
		t.Fatalf("Len %d, heap %d", s.Len(), len(s.q))
	}
}

// BenchmarkAddFull is the cost of one Add on a set at its bound, the
// state an attacker would try to hold it in.
func BenchmarkAddFull(b *testing.B) {
	t0 := time.Unix(1_700_000_000, 0)
	s := New(DefaultMax)
	for i := range DefaultMax {
		s.Add(KeyOf(fmt.Sprint(i)), t0, t0.Add(time.Hour))
	}
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i] = KeyOf("new", fmt.Sprint(i))
	}
	b.ResetTimer()
	for i := range b.N {
		s.Add(keys[i%len(keys)], t0, t0.Add(time.Hour))
	}
}

// BenchmarkAddExpiring is the steady state of a busy gateway: every Add
// records a value and expires an older one.
func BenchmarkAddExpiring(b *testing.B) {
	t0 := time.Unix(1_700_000_000, 0)
	s := New(DefaultMax)
	b.ResetTimer()
	for i := range b.N {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		s.Add(KeyOf(fmt.Sprint(i)), now, now.Add(10*time.Second))
	}
}
