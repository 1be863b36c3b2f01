package identity

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

func TestSnapshotLookups(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	dev := func(id, addr string, expires time.Duration, revoked bool) Device {
		d := Device{ID: id, Address: netip.MustParseAddr(addr), Revoked: revoked}
		d.PublicKey[0] = addr[len(addr)-1]
		if expires != 0 {
			d.Expires = now.Add(expires)
		}
		return d
	}
	devs := []Device{
		dev("dev_c", "100.96.0.9", 0, false),
		dev("dev_a", "100.96.0.2", time.Hour, false),
		dev("dev_x", "100.96.0.5", -time.Second, false), // expired
		dev("dev_b", "100.96.0.3", 2*time.Hour, false),
		dev("dev_r", "100.96.0.4", 0, true), // revoked
	}
	s := newSnapshot(7, now, devs)
	var ids []string
	for d := range s.All() {
		ids = append(ids, d.ID)
	}
	if want := []string{"dev_a", "dev_b", "dev_c"}; !slices.Equal(ids, want) {
		t.Errorf("All = %v, want %v (address order, without expired and revoked)", ids, want)
	}
	if s.Len() != 3 || s.Generation() != 7 || !s.NextExpiry().Equal(now.Add(time.Hour)) || s.expired != 1 || s.revoked != 1 {
		t.Errorf("Len %d Generation %d NextExpiry %v expired %d revoked %d", s.Len(), s.Generation(), s.NextExpiry(), s.expired, s.revoked)
	}
	for _, tc := range []struct {
		addr, id string
		ok       bool
	}{
		{"100.96.0.2", "dev_a", true},
		{"::ffff:100.96.0.3", "dev_b", true}, // a v4-mapped source finds the device
		{"100.96.0.5", "", false},
		{"100.96.0.4", "", false},
		{"100.96.0.6", "", false},
	} {
		d, ok := s.ByAddr(netip.MustParseAddr(tc.addr))
		if ok != tc.ok || d.ID != tc.id {
			t.Errorf("ByAddr(%s) = %q %v, want %q %v", tc.addr, d.ID, ok, tc.id, tc.ok)
		}
	}
	if d, ok := s.ByKey(devs[0].PublicKey); !ok || d.ID != "dev_c" {
		t.Errorf("ByKey = %q %v", d.ID, ok)
	}
	if _, ok := s.ByID("dev_x"); ok {
		t.Error("ByID found an expired device")
	}

	// Expiry without the database.
	if s.expire(now.Add(time.Minute)) != s {
		t.Error("expire before the next expiry built a new snapshot")
	}
	s2 := s.expire(now.Add(time.Hour))
	if s2.Len() != 2 || s2.Generation() != 7 || s2.expired != 2 || !s2.NextExpiry().Equal(now.Add(2*time.Hour)) {
		t.Errorf("after an hour: Len %d Generation %d expired %d next %v", s2.Len(), s2.Generation(), s2.expired, s2.NextExpiry())
	}
	if s.Len() != 3 {
		t.Error("expire changed the old snapshot")
	}

	var empty *Snapshot
	if _, ok := empty.ByAddr(netip.MustParseAddr("100.96.0.2")); ok || empty.Len() != 0 {
		t.Error("nil snapshot is not empty")
	}
	for range empty.All() {
		t.Error("nil snapshot yielded a device")
	}
}

func TestSubscribe(t *testing.T) {
	r := open(t, storeKinds[0].fresh(t), Options{})
	var got []int64
	cancel := r.Subscribe(func(s *Snapshot) { got = append(got, s.Generation()) })
	c := ctx(t)
	r.Enroll(c, enrollment(t, "a"))
	r.Refresh(c)
	r.Refresh(c) // nothing changed: no call
	r.Enroll(c, enrollment(t, "b"))
	r.Refresh(c)
	cancel()
	r.Enroll(c, enrollment(t, "c"))
	r.Refresh(c)
	if want := []int64{2, 3}; !slices.Equal(got, want) {
		t.Errorf("subscriber saw generations %v, want %v", got, want)
	}
}

func TestMetrics(t *testing.T) {
	clk := newClock()
	r := open(t, storeKinds[0].fresh(t), Options{Now: clk.Now})
	c := ctx(t)
	e := enrollment(t, "a")
	e.Expires = clk.Now().Add(time.Minute)
	r.Enroll(c, e)
	b, _ := r.Enroll(c, enrollment(t, "b"))
	r.Enroll(c, enrollment(t, "c"))
	r.Revoke(c, b.ID)
	clk.Advance(time.Hour)
	r.Refresh(c)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collector())
	want := `
# HELP edgegw_identity_devices Enrolled devices by state: active, expired (not revoked, not pending, past their expiry), revoked.
# TYPE edgegw_identity_devices gauge
edgegw_identity_devices{state="active"} 1
edgegw_identity_devices{state="expired"} 1
edgegw_identity_devices{state="revoked"} 1
# HELP edgegw_identity_registry_generation Registry generation of the current snapshot; it grows with every change.
# TYPE edgegw_identity_registry_generation gauge
edgegw_identity_registry_generation 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edgegw_identity_devices", "edgegw_identity_registry_generation"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 5 {
		t.Errorf("%d metric families, want 5", len(mfs))
	}
	if problems, err := promlint.NewWithMetricFamilies(mfs).Lint(); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

func TestDeviceID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewDeviceID()
		if !ValidDeviceID(id) || len(id) != 30 {
			t.Fatalf("NewDeviceID() = %q is not valid", id)
		}
		if seen[id] {
			t.Fatalf("NewDeviceID repeated %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "dev_", "dev_0000000000000000000000000", "dev_000000000000000000000000000",
		"DEV_00000000000000000000000000", "dev_0000000000000000000000000i", "dev_0000000000000000000000000U", "xyz_00000000000000000000000000"} {
		if ValidDeviceID(bad) {
			t.Errorf("ValidDeviceID(%q) = true", bad)
		}
	}
}

// FuzzValidDeviceID: ids arrive from the CLI and the admin API. Whatever
// ValidDeviceID accepts must be exactly the shape NewDeviceID makes.
func FuzzValidDeviceID(f *testing.F) {
	f.Add(NewDeviceID())
	f.Add("dev_")
	f.Add("dev_0000000000000000000000000\xff")
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidDeviceID(s) {
			return
		}
		if len(s) != 30 || !strings.HasPrefix(s, "dev_") {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range s[4:] {
			if !strings.ContainsRune(idAlphabet, c) {
				t.Fatalf("accepted %q with %q", s, c)
			}
		}
	})
}

func TestLastAddr(t *testing.T) {
	for _, tc := range []struct{ prefix, last string }{
		{"100.96.0.0/12", "100.111.255.255"},
		{"10.0.0.0/31", "10.0.0.1"},
		{"10.0.0.7/32", "10.0.0.7"},
		{"fd00::/120", "fd00::ff"},
		{"fd00::/64", "fd00::ffff:ffff:ffff:ffff"},
	} {
		if got := lastAddr(netip.MustParsePrefix(tc.prefix)); got.String() != tc.last {
			t.Errorf("lastAddr(%s) = %s, want %s", tc.prefix, got, tc.last)
		}
	}
}

func TestIPv6Pool(t *testing.T) {
	r := open(t, storeKinds[0].fresh(t), Options{Pool: netip.MustParsePrefix("fd00:ed6e::/64"), Reserved: []netip.Addr{netip.MustParseAddr("fd00:ed6e::1")}})
	var got []string
	for i := range 2 {
		d, err := r.Enroll(ctx(t), enrollment(t, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.Address.String())
	}
	if want := []string{"fd00:ed6e::2", "fd00:ed6e::3"}; !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
}

func TestRunAndClose(t *testing.T) {
	clk := newClock()
	r, err := Open(ctx(t), Options{Store: "sqlite", StateDir: t.TempDir(), Pool: testPool, Now: clk.Now, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := enrollment(t, "a")
	e.Expires = clk.Now().Add(time.Minute)
	if _, err := r.Enroll(ctx(t), e); err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(c) }()
	// Run picks up the local write, then drops the device at its expiry.
	testkit.Eventually(t, 5*time.Second, "one device in the snapshot", func() error {
		if n := r.Snapshot().Len(); n != 1 {
			return fmt.Errorf("%d devices", n)
		}
		return nil
	})
	clk.Advance(time.Minute)
	testkit.Eventually(t, 5*time.Second, "no device in the snapshot", func() error {
		if n := r.Snapshot().Len(); n != 0 {
			return fmt.Errorf("%d devices", n)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
