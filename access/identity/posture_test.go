package identity

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// TestRecordPosture: a failing report quarantines the device (the
// snapshot moves), a passing one releases it, a report that changes
// nothing moves no generation, a replayed or older report is refused and
// changes nothing, a revoked device cannot report.
func TestRecordPosture(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		d, err := r.Enroll(c, enrollment(t, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		refresh := func() *Snapshot {
			t.Helper()
			if err := r.Refresh(c); err != nil {
				t.Fatal(err)
			}
			return r.Snapshot()
		}
		gen := refresh().Generation()
		t0 := clk.Now()
		if got, err := r.RecordPosture(c, d.ID, t0, []byte(`{"os":"linux","os_version":"4.19"}`), true, rules.Posture{}); err != nil || !got.Quarantined {
			t.Fatalf("failing report: %+v %v", got, err)
		}
		s := refresh()
		if sd, ok := s.ByID(d.ID); !ok || !sd.Quarantined || s.Generation() <= gen {
			t.Fatalf("snapshot after the failing report: %+v %v gen %d (was %d)", sd, ok, s.Generation(), gen)
		}
		gen = s.Generation()
		// The same state again: stored, no new generation.
		if _, err := r.RecordPosture(c, d.ID, t0.Add(time.Second), []byte(`{"os":"linux","os_version":"4.19.1"}`), true, rules.Posture{}); err != nil {
			t.Fatal(err)
		}
		if g := refresh().Generation(); g != gen {
			t.Errorf("an unchanged state moved the generation %d → %d", gen, g)
		}
		p, ok, err := r.Posture(c, d.ID)
		if err != nil || !ok || string(p.Report) != `{"os":"linux","os_version":"4.19.1"}` || !p.Reported.Equal(dbTime(t0.Add(time.Second))) {
			t.Fatalf("stored posture: %+v %v %v", p, ok, err)
		}
		// A replay (same time) and an older report are refused and
		// change nothing: a captured failing report cannot undo a release
		// and a captured passing one cannot be played again.
		for _, at := range []time.Time{t0.Add(time.Second), t0} {
			if _, err := r.RecordPosture(c, d.ID, at, []byte(`{}`), false, rules.Posture{}); !errors.Is(err, ErrStaleReport) {
				t.Errorf("report of %s: %v, want ErrStaleReport", at, err)
			}
		}
		if sd, _ := refresh().ByID(d.ID); !sd.Quarantined {
			t.Error("a refused report released the device")
		}
		// A passing report releases it.
		if got, err := r.RecordPosture(c, d.ID, t0.Add(2*time.Second), []byte(`{"os":"linux","os_version":"6.12"}`), false, rules.Posture{}); err != nil || got.Quarantined {
			t.Fatalf("passing report: %+v %v", got, err)
		}
		if sd, _ := refresh().ByID(d.ID); sd.Quarantined {
			t.Error("the passing report did not release the device")
		}
		if _, err := r.RecordPosture(c, "dev_nosuchdevice0000000000000", t0.Add(3*time.Second), []byte(`{}`), false, rules.Posture{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown device: %v", err)
		}
		if _, err := r.Revoke(c, d.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := r.RecordPosture(c, d.ID, t0.Add(4*time.Second), []byte(`{}`), false, rules.Posture{}); !errors.Is(err, ErrRevoked) {
			t.Errorf("revoked device: %v", err)
		}
	})
}

// TestQuarantineStale: a device whose last report is older than the
// cutoff, and one that never reported past its grace, are quarantined;
// a fresh reporter, a device still in its grace and a pending device are
// not; a second sweep changes nothing.
func TestQuarantineStale(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		enroll := func(who string, pending bool) Device {
			t.Helper()
			e := enrollment(t, who)
			e.Pending = pending
			d, err := r.Enroll(c, e)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		stale, silent, pending := enroll("stale", false), enroll("silent", false), enroll("pending", true)
		if _, err := r.RecordPosture(c, stale.ID, clk.Now(), []byte(`{}`), false, rules.Posture{}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Minute)
		fresh, young := enroll("fresh", false), enroll("young", false)
		if _, err := r.RecordPosture(c, fresh.ID, clk.Now(), []byte(`{}`), false, rules.Posture{}); err != nil {
			t.Fatal(err)
		}
		got, err := r.QuarantineStale(c, clk.Now().Add(-5*time.Minute), clk.Now().Add(-2*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, d := range got {
			ids[d.ID] = d.Quarantined
		}
		if len(got) != 2 || !ids[stale.ID] || !ids[silent.ID] {
			t.Fatalf("quarantined %+v, want %s and %s", got, stale.ID, silent.ID)
		}
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		for _, d := range []Device{fresh, young} {
			if sd, ok := r.Snapshot().ByID(d.ID); !ok || sd.Quarantined {
				t.Errorf("%s: %+v %v, want active and not quarantined", d.Name, sd, ok)
			}
		}
		if p, _ := r.Get(c, pending.ID); p.Quarantined {
			t.Error("a pending device was quarantined")
		}
		if again, err := r.QuarantineStale(c, clk.Now().Add(-5*time.Minute), clk.Now().Add(-2*time.Minute)); err != nil || len(again) != 0 {
			t.Errorf("second sweep: %+v %v", again, err)
		}
	})
}

// TestDeviceCompliant: only with posture on, and only a device that is
// not quarantined.
func TestDeviceCompliant(t *testing.T) {
	a, b := netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("100.96.0.3")
	d := NewDevices()
	d.Publish(newSnapshot(1, time.Now(), []Device{
		{ID: "dev_a", Address: a, PublicKey: [32]byte{1}},
		{ID: "dev_b", Address: b, PublicKey: [32]byte{2}, Quarantined: true},
	}))
	if d.DeviceCompliant(a) {
		t.Error("compliant without posture rules")
	}
	d.SetPosture(true)
	if !d.DeviceCompliant(a) || d.DeviceCompliant(b) || d.DeviceCompliant(netip.MustParseAddr("100.96.0.4")) {
		t.Error("with posture: want only the unquarantined device compliant")
	}
}

// TestWhoQuarantined: the resolver says a device is quarantined only
// while posture rules run.
func TestWhoQuarantined(t *testing.T) {
	a := netip.MustParseAddr("100.96.0.3")
	d := NewDevices()
	d.Publish(newSnapshot(1, time.Now(), []Device{{ID: "dev_b", Email: "b@corp.example", Address: a, PublicKey: [32]byte{2}, Quarantined: true}}))
	r := NewResolver(d)
	if w, ok := r.Who(a); !ok || w.Quarantined || w.Email != "b@corp.example" {
		t.Errorf("posture off: %+v %v", w, ok)
	}
	d.SetPosture(true)
	if w, ok := r.Who(a); !ok || !w.Quarantined {
		t.Errorf("posture on: %+v %v", w, ok)
	}
}

// TestPostureAttributes: the attributes rules match on reach the snapshot
// with the device; a report that changes them moves the generation even
// when the quarantine state stays, one that repeats them does not; a
// stale report clears them (what it said is no longer known); a
// re-enrollment keeps them.
func TestPostureAttributes(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		e := enrollment(t, "alice")
		d, err := r.Enroll(c, e)
		if err != nil {
			t.Fatal(err)
		}
		refresh := func() *Snapshot {
			t.Helper()
			if err := r.Refresh(c); err != nil {
				t.Fatal(err)
			}
			return r.Snapshot()
		}
		if sd, _ := refresh().ByID(d.ID); sd.Posture != (rules.Posture{}) {
			t.Fatalf("new device has posture %+v, want none", sd.Posture)
		}
		at := clk.Now()
		report := func(p rules.Posture) {
			t.Helper()
			at = at.Add(time.Second)
			if got, err := r.RecordPosture(c, d.ID, at, []byte(`{}`), false, p); err != nil || got.Posture != p {
				t.Fatalf("RecordPosture(%+v) = %+v, %v", p, got.Posture, err)
			}
		}
		p := rules.Posture{OS: "linux", OSVersion: "6.1.0-27-amd64", ClientVersion: "1.2",
			DiskEncrypted: rules.CheckYes, Firewall: rules.CheckUnknown, Compliant: rules.CheckYes}
		gen := refresh().Generation()
		report(p)
		s := refresh()
		if sd, _ := s.ByID(d.ID); sd.Posture != p || s.Generation() <= gen {
			t.Fatalf("snapshot: posture %+v gen %d (was %d), want %+v and a new generation", sd.Posture, s.Generation(), gen, p)
		}
		gen = s.Generation()
		report(p) // the same attributes again: no snapshot
		if g := refresh().Generation(); g != gen {
			t.Errorf("unchanged attributes moved the generation %d → %d", gen, g)
		}
		p.DiskEncrypted = rules.CheckNo // one attribute, quarantine unchanged
		report(p)
		s = refresh()
		if sd, _ := s.ByID(d.ID); sd.Posture != p || s.Generation() <= gen {
			t.Fatalf("after the change: posture %+v gen %d (was %d), want %+v", sd.Posture, s.Generation(), gen, p)
		}
		if _, err := r.Enroll(c, e); err != nil { // a renewal
			t.Fatal(err)
		}
		if sd, _ := refresh().ByID(d.ID); sd.Posture != p {
			t.Errorf("after re-enrollment: posture %+v, want %+v", sd.Posture, p)
		}
		clk.Advance(time.Hour)
		if _, err := r.QuarantineStale(c, clk.Now().Add(-time.Minute), clk.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if sd, _ := refresh().ByID(d.ID); sd.Posture != (rules.Posture{}) || !sd.Quarantined {
			t.Errorf("after the report went stale: posture %+v quarantined %v, want none and quarantined", sd.Posture, sd.Quarantined)
		}
	})
}

// TestWhoPosture: the resolver gives a device's posture only while
// posture rules run; a quarantined device's is only "not compliant"; a
// static identity has none.
func TestWhoPosture(t *testing.T) {
	a, q, st := netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("100.96.0.3"), netip.MustParseAddr("100.96.9.9")
	p := rules.Posture{OS: "linux", OSVersion: "6.12", DiskEncrypted: rules.CheckYes, Compliant: rules.CheckYes}
	d := NewDevices()
	d.Publish(newSnapshot(1, time.Now(), []Device{
		{ID: "dev_a", Email: "a@corp.example", Address: a, PublicKey: [32]byte{1}, Posture: p},
		{ID: "dev_q", Email: "q@corp.example", Address: q, PublicKey: [32]byte{2}, Quarantined: true, Posture: p},
	}))
	r := NewResolver(d)
	r.SetStatic([]StaticIdentity{{Prefixes: []netip.Prefix{netip.PrefixFrom(st, 32)}, Email: "s@corp.example"}})
	if w, _ := r.Who(a); w.Posture != (rules.Posture{}) {
		t.Errorf("posture off: %+v", w.Posture)
	}
	d.SetPosture(true)
	for _, tc := range []struct {
		addr netip.Addr
		want rules.Posture
	}{
		{a, p},
		{q, rules.Posture{Compliant: rules.CheckNo}},
		{st, rules.Posture{}},
	} {
		if w, ok := r.Who(tc.addr); !ok || w.Posture != tc.want {
			t.Errorf("%s: %+v %v, want posture %+v", tc.addr, w, ok, tc.want)
		}
	}
}
