package geo

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/geo/geotest"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var testEntries = []geotest.Entry{
	{Prefix: pfx("192.0.2.0/25"), Country: "KP", ASN: 64512, Org: "Test Net A"},
	{Prefix: pfx("192.0.2.128/25"), Country: "KP", ASN: 64513},
	{Prefix: pfx("198.51.100.0/24"), Country: "IR", ASN: 64512, Org: "Test Net A"},
	{Prefix: pfx("203.0.113.0/24"), Country: "GB"},
	{Prefix: pfx("2001:db8:1::/48"), Country: "KP", ASN: 4200000000},
	{Prefix: pfx("2001:db8:2::/48"), ASN: 64513},
	{Prefix: pfx("2001:db8:3::/48"), Country: "xx"}, // not a code: no country
}

func build(t testing.TB, entries []geotest.Entry) []byte {
	t.Helper()
	b, err := geotest.Build(entries)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseNetworks(t *testing.T) {
	b := build(t, testEntries)
	db, err := Parse(b, b)
	if err != nil {
		t.Fatal(err)
	}
	if !db.HasCountry() || !db.HasASN() {
		t.Fatalf("HasCountry %v, HasASN %v; want both", db.HasCountry(), db.HasASN())
	}
	if got, want := db.Countries(), []string{"GB", "IR", "KP"}; !slices.Equal(got, want) {
		t.Errorf("Countries() = %v, want %v", got, want)
	}
	if got, want := db.ASNs(), []uint32{64512, 64513, 4200000000}; !slices.Equal(got, want) {
		t.Errorf("ASNs() = %v, want %v", got, want)
	}
	tests := []struct {
		name string
		got  []netip.Prefix
		want []string
	}{
		{"KP", db.CountryNetworks("KP"), []string{"192.0.2.0/25", "192.0.2.128/25", "2001:db8:1::/48"}},
		{"GB", db.CountryNetworks("GB"), []string{"203.0.113.0/24"}},
		{"kp (lower case)", db.CountryNetworks("kp"), nil},
		{"AS64512", db.ASNetworks(64512), []string{"192.0.2.0/25", "198.51.100.0/24"}},
		{"AS64513", db.ASNetworks(64513), []string{"192.0.2.128/25", "2001:db8:2::/48"}},
		{"AS1", db.ASNetworks(1), nil},
	}
	for _, tt := range tests {
		var got []string
		for _, p := range tt.got {
			got = append(got, p.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: networks %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLookup(t *testing.T) {
	b := build(t, testEntries)
	db, err := Parse(b, b)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want Info
	}{
		{"192.0.2.1", Info{Country: "KP", ASN: 64512, ASOrg: "Test Net A"}},
		{"192.0.2.200", Info{Country: "KP", ASN: 64513}},
		{"::ffff:198.51.100.7", Info{Country: "IR", ASN: 64512, ASOrg: "Test Net A"}},
		{"203.0.113.1", Info{Country: "GB"}},
		{"2001:db8:1::1", Info{Country: "KP", ASN: 4200000000}},
		{"2001:db8:3::1", Info{}},
		{"10.0.0.1", Info{}},
	}
	for _, tt := range tests {
		if got := db.Lookup(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Lookup(%s) = %+v, want %+v", tt.addr, got, tt.want)
		}
	}
	var none *DB
	if got := none.Lookup(netip.MustParseAddr("192.0.2.1")); got != (Info{}) {
		t.Errorf("nil DB Lookup = %+v, want nothing", got)
	}
	if none.HasCountry() || none.Countries() != nil || none.ASNetworks(1) != nil {
		t.Error("nil DB is not empty")
	}
}

// A country database and a separate ASN database, as GeoLite2 ships them.
func TestLoadSeparateFiles(t *testing.T) {
	dir := t.TempDir()
	var countries, asns []geotest.Entry
	for _, e := range testEntries {
		countries = append(countries, geotest.Entry{Prefix: e.Prefix, Country: e.Country})
		asns = append(asns, geotest.Entry{Prefix: e.Prefix, ASN: e.ASN, Org: e.Org})
	}
	f := Files{Country: filepath.Join(dir, "country.mmdb"), ASN: filepath.Join(dir, "asn.mmdb")}
	if err := geotest.WriteFile(f.Country, countries); err != nil {
		t.Fatal(err)
	}
	if err := geotest.WriteFile(f.ASN, asns); err != nil {
		t.Fatal(err)
	}
	db, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Lookup(netip.MustParseAddr("198.51.100.1")); got != (Info{Country: "IR", ASN: 64512, ASOrg: "Test Net A"}) {
		t.Errorf("Lookup = %+v", got)
	}
	if db.Files() != f {
		t.Errorf("Files() = %+v, want %+v", db.Files(), f)
	}
	// Only a country database: AS numbers are unknown.
	db, err = Load(Files{Country: f.Country})
	if err != nil {
		t.Fatal(err)
	}
	if db.HasASN() || db.Lookup(netip.MustParseAddr("198.51.100.1")).ASN != 0 {
		t.Error("a country-only snapshot has AS numbers")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	good := build(t, testEntries)
	asnOnly := build(t, []geotest.Entry{{Prefix: pfx("192.0.2.0/24"), ASN: 64512}})
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name  string
		files Files
		want  string
	}{
		{"missing file", Files{Country: filepath.Join(dir, "nope.mmdb")}, "nope.mmdb: no such file"},
		{"not a database", Files{ASN: write("text.mmdb", []byte("hello"))}, "text.mmdb"},
		{"truncated", Files{Country: write("short.mmdb", good[:len(good)/2])}, "short.mmdb"},
		{"corrupt tree", Files{Country: write("bad.mmdb", corrupt(good))}, "bad.mmdb"},
		{"ASN file as country", Files{Country: write("asn.mmdb", asnOnly)}, "country.iso_code"},
	}
	for _, tt := range tests {
		_, err := Load(tt.files)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Load error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// corrupt flips bytes of the search tree, which starts the file.
func corrupt(b []byte) []byte {
	c := slices.Clone(b)
	for i := 0; i < 64 && i < len(c); i++ {
		c[i] ^= 0xff
	}
	return c
}

func TestWatcherSwap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "geo.mmdb")
	if err := geotest.WriteFile(path, testEntries); err != nil {
		t.Fatal(err)
	}
	changed := make(chan *DB, 4)
	w, err := NewWatcher(Files{Country: path, ASN: path}, 10*time.Millisecond, slog.New(slog.DiscardHandler),
		func(db *DB) error { changed <- db; return nil })
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.1")
	if got := w.Current().Lookup(a).Country; got != "KP" {
		t.Fatalf("before the swap: %s", got)
	}
	if ok, err := w.Check(); ok || err != nil {
		t.Fatalf("Check without a change = %v, %v", ok, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// A half-written file is refused and the old snapshot kept...
	if err := os.WriteFile(path, build(t, testEntries)[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the broken file is tried", func() error {
		if _, f := w.Stats(); f == 0 {
			return errors.New("no failed load yet")
		}
		return nil
	})
	if got := w.Current().Lookup(a).Country; got != "KP" {
		t.Fatalf("after a broken file: %s, want the old snapshot", got)
	}
	// ...and the finished one is loaded.
	swapped := slices.Clone(testEntries)
	swapped[0].Country = "NZ"
	if err := geotest.WriteFile(path, swapped); err != nil {
		t.Fatal(err)
	}
	select {
	case db := <-changed:
		if got := db.Lookup(a).Country; got != "NZ" {
			t.Errorf("onChange got a snapshot with %s, want NZ", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the swapped file was not loaded")
	}
	if got := w.Current().Lookup(a).Country; got != "NZ" {
		t.Errorf("Current after the swap: %s, want NZ", got)
	}
}

func TestNewWatcherMissingFile(t *testing.T) {
	_, err := NewWatcher(Files{Country: "/nonexistent/GeoLite2-Country.mmdb"}, 0, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/GeoLite2-Country.mmdb") {
		t.Errorf("error %v does not name the file", err)
	}
}

// FuzzParse feeds arbitrary bytes to the database reader: it must refuse
// or read them, never panic or hang, and what it reads must be consistent.
func FuzzParse(f *testing.F) {
	good := build(f, testEntries)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[len(good)-200:])
	f.Add(corrupt(good))
	f.Add(build(f, []geotest.Entry{{Prefix: pfx("0.0.0.0/0"), Country: "AQ"}}))
	f.Add([]byte("\xab\xcd\xefMaxMind.com"))
	f.Fuzz(func(t *testing.T, b []byte) {
		db, err := Parse(b, b)
		if err != nil {
			return
		}
		for _, c := range db.Countries() {
			if !validCountry(c) {
				t.Fatalf("country %q", c)
			}
			for _, p := range db.CountryNetworks(c) {
				if !p.IsValid() {
					t.Fatalf("invalid prefix in %s", c)
				}
			}
		}
		for _, n := range db.ASNs() {
			if n == 0 {
				t.Fatal("AS 0 has networks")
			}
		}
		db.Lookup(netip.MustParseAddr("192.0.2.1"))
		db.Lookup(netip.MustParseAddr("2001:db8::1"))
	})
}

func TestCollector(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "geo.mmdb")
	if err := geotest.WriteFile(path, testEntries); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(Files{Country: path, ASN: path}, 0, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(w))
	want := `
# HELP edgegw_geoip_load_failures_total GeoIP database files that changed but could not be loaded; the previous snapshot stayed in use.
# TYPE edgegw_geoip_load_failures_total counter
edgegw_geoip_load_failures_total 0
# HELP edgegw_geoip_loads_total GeoIP database snapshots loaded, the first included.
# TYPE edgegw_geoip_loads_total counter
edgegw_geoip_loads_total 1
# HELP edgegw_geoip_networks Networks with a country (kind country) or an AS number (kind asn) in the current GeoIP snapshot.
# TYPE edgegw_geoip_networks gauge
edgegw_geoip_networks{kind="asn"} 5
edgegw_geoip_networks{kind="country"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"edgegw_geoip_loads_total", "edgegw_geoip_load_failures_total", "edgegw_geoip_networks"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// TestNewWatcherReusesUnchanged: every reload prepares a Watcher; one for
// the same unchanged files shares the database already loaded instead of
// parsing it again, and a replaced file is loaded afresh.
func TestNewWatcherReusesUnchanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "geo.mmdb")
	if err := geotest.WriteFile(path, testEntries); err != nil {
		t.Fatal(err)
	}
	f := Files{Country: path, ASN: path}
	log := slog.New(slog.DiscardHandler)
	w1, err := NewWatcher(f, 0, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := NewWatcher(f, 0, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w1.Current() != w2.Current() {
		t.Error("a second Watcher on unchanged files loaded the database again")
	}
	swapped := slices.Clone(testEntries)
	swapped[0].Country = "NZ"
	if err := geotest.WriteFile(path, swapped); err != nil {
		t.Fatal(err)
	}
	w3, err := NewWatcher(f, 0, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w3.Current() == w2.Current() {
		t.Fatal("a replaced file was not loaded again")
	}
	if got := w3.Current().Lookup(netip.MustParseAddr("192.0.2.1")).Country; got != "NZ" {
		t.Errorf("after the swap: %s, want NZ", got)
	}
	// A file that is gone is an error, never the cached database.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWatcher(f, 0, log, nil); err == nil {
		t.Error("NewWatcher on a removed file: no error")
	}
}
