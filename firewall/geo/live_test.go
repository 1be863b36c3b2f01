package geo

import (
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgegw/edgegw/firewall/geo/geotest"
)

// TestLive: a Live knows nothing until it is given a Watcher, then answers
// from the Watcher's current snapshot (also after the file is swapped),
// and from a later Watcher once it is given one (a reload).
func TestLive(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	var nilLive *Live
	if got := nilLive.Lookup(a); got != (Info{}) {
		t.Fatalf("nil Live: %+v", got)
	}
	var l Live
	if got := l.Country(a); got != "" {
		t.Fatalf("Live without a Watcher: %q", got)
	}
	dir := t.TempDir()
	watch := func(name string, entries []geotest.Entry) *Watcher {
		path := filepath.Join(dir, name)
		if err := geotest.WriteFile(path, entries); err != nil {
			t.Fatal(err)
		}
		w, err := NewWatcher(Files{Country: path, ASN: path}, 0, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1 := watch("one.mmdb", testEntries)
	l.Set(w1)
	if got := l.Lookup(a); got.Country != "KP" || got.ASN == 0 {
		t.Fatalf("from the first Watcher: %+v", got)
	}
	swapped := slices.Clone(testEntries)
	swapped[0].Country = "NZ"
	if err := geotest.WriteFile(filepath.Join(dir, "one.mmdb"), swapped); err != nil {
		t.Fatal(err)
	}
	if ok, err := w1.Check(); !ok || err != nil {
		t.Fatalf("Check after the swap = %v, %v", ok, err)
	}
	if got := l.Country(a); got != "NZ" {
		t.Fatalf("after the swap: %q, want NZ", got)
	}
	moved := slices.Clone(testEntries)
	moved[0].Country = "FR"
	l.Set(watch("two.mmdb", moved))
	if got := l.Country(a); got != "FR" {
		t.Fatalf("from the second Watcher: %q, want FR", got)
	}
	l.Set(nil)
	if got := l.Lookup(a); got != (Info{}) {
		t.Fatalf("after Set(nil): %+v", got)
	}
}
