package identity

import (
	"errors"
	"testing"
	"time"
)

// TestApprovePending: a device enrolled pending holds an address but is in
// no snapshot until Approve; a renewal keeps its state; a revoked device
// cannot be approved; approving twice is harmless.
func TestApprovePending(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		e := enrollment(t, "alice")
		e.Expires, e.Pending = clk.Now().Add(time.Hour), true
		d, err := r.Enroll(c, e)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Pending || !d.Address.IsValid() {
			t.Fatalf("enrolled %+v, want pending with an address", d)
		}
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if _, ok := r.Snapshot().ByKey(e.PublicKey); ok || r.Snapshot().Len() != 0 {
			t.Fatal("a pending device is in the snapshot")
		}
		// A renewal (same key) stays pending even if asked otherwise.
		e.Pending = false
		if d2, err := r.Enroll(c, e); err != nil || !d2.Pending || d2.ID != d.ID {
			t.Fatalf("renewal: %+v %v", d2, err)
		}
		// Another device does not get the pending device's address.
		other, err := r.Enroll(c, enrollment(t, "bob"))
		if err != nil || other.Address == d.Address {
			t.Fatalf("other device %+v %v", other, err)
		}
		gen := r.Snapshot().Generation()
		a, err := r.Approve(c, d.ID)
		if err != nil || a.Pending {
			t.Fatalf("approve: %+v %v", a, err)
		}
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if s, ok := r.Snapshot().ByKey(e.PublicKey); !ok || s.ID != d.ID || s.Address != d.Address || r.Snapshot().Generation() <= gen {
			t.Fatalf("approved device not in the snapshot: %v %v", s, ok)
		}
		if got, err := r.Get(c, d.ID); err != nil || got.Pending {
			t.Fatalf("Get after approval: %+v %v", got, err)
		}
		if again, err := r.Approve(c, d.ID); err != nil || again.Pending {
			t.Fatalf("second approval: %v", err)
		}
		// Approval state survives a renewal the other way too.
		if d3, err := r.Enroll(c, Enrollment{Name: "x", Email: e.Email, Subject: e.Subject, PublicKey: e.PublicKey, Expires: e.Expires, Pending: true}); err != nil || d3.Pending {
			t.Fatalf("renewal of an approved device: %+v %v", d3, err)
		}
		if _, err := r.Revoke(c, other.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Approve(c, other.ID); !errors.Is(err, ErrNotPending) {
			t.Fatalf("approve a revoked device: %v", err)
		}
		if _, err := r.Approve(c, "dev_nosuchdevice0000000000000"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("approve an unknown device: %v", err)
		}
	})
}
