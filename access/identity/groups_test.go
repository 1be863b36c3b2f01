package identity

import (
	"slices"
	"testing"
	"time"
)

// TestMaxGroupAge: groups a sign-in set longer ago than the cutoff are
// dropped (the snapshot follows); an Access login's refresh and an
// enrollment renewal keep them current; a second sweep changes nothing.
func TestMaxGroupAge(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		ea, eb, ec := enrollment(t, "alice"), enrollment(t, "bob"), enrollment(t, "carol")
		alice, err := r.Enroll(c, ea)
		if err != nil {
			t.Fatal(err)
		}
		bob, err := r.Enroll(c, eb)
		if err != nil {
			t.Fatal(err)
		}
		carol, err := r.Enroll(c, ec)
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Hour)
		// Bob signs in to an Access app: the provider now says eng.
		devs, err := r.RefreshUserGroups(c, eb.Subject, []string{"eng", "staff", "eng"})
		if err != nil || len(devs) != 1 || !slices.Equal(devs[0].Groups, []string{"eng", "staff"}) {
			t.Fatalf("refresh: %+v %v", devs, err)
		}
		// Another provider's user of the same address changes nothing.
		if devs, err := r.RefreshUserGroups(c, "https://other.example#bob", []string{"admins"}); err != nil || len(devs) != 0 {
			t.Fatalf("another subject: %+v %v", devs, err)
		}
		// Carol renews her enrollment.
		if _, err := r.Enroll(c, ec); err != nil {
			t.Fatal(err)
		}
		cleared, err := r.ClearStaleGroups(c, clk.Now().Add(-30*time.Minute))
		if err != nil || len(cleared) != 1 || cleared[0].ID != alice.ID || len(cleared[0].Groups) != 0 {
			t.Fatalf("cleared %+v %v, want alice's", cleared, err)
		}
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		s := r.Snapshot()
		for _, tc := range []struct {
			d    Device
			want []string
		}{{alice, []string{}}, {bob, []string{"eng", "staff"}}, {carol, []string{"staff"}}} {
			got, ok := s.ByID(tc.d.ID)
			if !ok || !slices.Equal(got.Groups, tc.want) {
				t.Errorf("%s: groups %v, want %v", tc.d.Email, got.Groups, tc.want)
			}
		}
		if again, err := r.ClearStaleGroups(c, clk.Now().Add(-30*time.Minute)); err != nil || len(again) != 0 {
			t.Errorf("second sweep: %+v %v", again, err)
		}
		// Alice signs in again: her groups are back.
		if _, err := r.Enroll(c, ea); err != nil {
			t.Fatal(err)
		}
		if err := r.Refresh(c); err != nil {
			t.Fatal(err)
		}
		if got, _ := r.Snapshot().ByID(alice.ID); !slices.Equal(got.Groups, []string{"staff"}) {
			t.Errorf("alice after signing in again: %v", got.Groups)
		}
		if _, err := r.RefreshUserGroups(c, ea.Subject, []string{""}); err == nil {
			t.Error("an empty group name was accepted")
		}
	})
}
