package identity

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestUserChanges: a provider's user changes reach every active device of
// that user, matched by any of the user's addresses without regard to case,
// and no one else's.
func TestUserChanges(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		r := open(t, env, Options{})
		alice1, err := r.Enroll(ctx(t), enrollment(t, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		e := enrollment(t, "alice")
		e.Email = "Alice@Corp.Example"
		alice2, err := r.Enroll(ctx(t), e)
		if err != nil {
			t.Fatal(err)
		}
		bob, err := r.Enroll(ctx(t), enrollment(t, "bob"))
		if err != nil {
			t.Fatal(err)
		}
		gen := r.Snapshot().Generation()

		// Groups: both of alice's devices, as a sorted set; bob untouched.
		got, err := r.SetUserGroups(ctx(t), []string{"alice.smith@corp.example", "ALICE@corp.example"}, []string{"ledger", "finance", "ledger"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("SetUserGroups changed %d devices, want alice's 2", len(got))
		}
		if err := r.Refresh(ctx(t)); err != nil {
			t.Fatal(err)
		}
		s := r.Snapshot()
		if s.Generation() <= gen {
			t.Errorf("generation %d did not move past %d: other appliances would not see the change", s.Generation(), gen)
		}
		for _, id := range []string{alice1.ID, alice2.ID} {
			d, _ := s.ByID(id)
			if !slices.Equal(d.Groups, []string{"finance", "ledger"}) {
				t.Errorf("device %s groups %v, want [finance ledger]", id, d.Groups)
			}
		}
		if d, _ := s.ByID(bob.ID); !slices.Equal(d.Groups, []string{"staff"}) {
			t.Errorf("bob's groups %v changed", d.Groups)
		}

		// The same groups again write nothing.
		gen = s.Generation()
		if got, err := r.SetUserGroups(ctx(t), []string{"alice@corp.example"}, []string{"finance", "ledger"}); err != nil || len(got) != 0 {
			t.Errorf("unchanged groups: %d devices, %v; want none", len(got), err)
		}
		if r.Refresh(ctx(t)); r.Snapshot().Generation() != gen {
			t.Errorf("unchanged groups bumped the generation")
		}

		// Deactivation: alice's devices leave the snapshot, bob stays.
		got, err = r.RevokeUser(ctx(t), []string{"alice@CORP.example"})
		if err != nil || len(got) != 2 {
			t.Fatalf("RevokeUser: %d devices, %v; want 2", len(got), err)
		}
		for _, d := range got {
			if !d.Revoked || d.RevokedAt.IsZero() {
				t.Errorf("returned device %s not marked revoked", d.ID)
			}
		}
		if err := r.Refresh(ctx(t)); err != nil {
			t.Fatal(err)
		}
		s = r.Snapshot()
		if _, ok := s.ByID(alice1.ID); ok {
			t.Error("alice's first device still in the snapshot")
		}
		if _, ok := s.ByID(alice2.ID); ok {
			t.Error("alice's second device still in the snapshot")
		}
		if _, ok := s.ByID(bob.ID); !ok {
			t.Error("bob's device left the snapshot")
		}
		if _, err := r.Enroll(ctx(t), Enrollment{Name: "x", Email: "alice@corp.example", Subject: alice1.Subject, PublicKey: alice1.PublicKey}); !errors.Is(err, ErrRevoked) {
			t.Errorf("re-enroll of a revoked key: %v, want ErrRevoked", err)
		}
		// Again: nothing left to revoke.
		if got, err := r.RevokeUser(ctx(t), []string{"alice@corp.example"}); err != nil || len(got) != 0 {
			t.Errorf("second RevokeUser: %d devices, %v", len(got), err)
		}
	})
}

// TestUserChangesInvalid: malformed input changes nothing.
func TestUserChangesInvalid(t *testing.T) {
	r := open(t, storeKinds[0].fresh(t), Options{})
	if _, err := r.Enroll(ctx(t), enrollment(t, "alice")); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"no emails":    func() error { _, err := r.RevokeUser(ctx(t), nil); return err },
		"control char": func() error { _, err := r.RevokeUser(ctx(t), []string{"alice@corp.example\n"}); return err },
		"empty group": func() error {
			_, err := r.SetUserGroups(ctx(t), []string{"alice@corp.example"}, []string{""})
			return err
		},
		"too many": func() error { _, err := r.SetUserGroups(ctx(t), make([]string, maxUserEmails+1), nil); return err },
		"group too big": func() error {
			_, err := r.SetUserGroups(ctx(t), []string{"alice@corp.example"}, make([]string, maxGroups+1))
			return err
		},
	} {
		if err := call(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := r.Refresh(ctx(t)); err != nil {
		t.Fatal(err)
	}
	for d := range r.Snapshot().All() {
		if !slices.Equal(d.Groups, []string{"staff"}) {
			t.Errorf("groups changed to %v", d.Groups)
		}
	}
}

// TestUserLookupIndexed: finding a user's devices uses the email index,
// not a scan of every device.
func TestUserLookupIndexed(t *testing.T) {
	r := open(t, storeKinds[0].fresh(t), Options{})
	rows, err := r.db.QueryContext(ctx(t), `EXPLAIN QUERY PLAN SELECT `+deviceCols+` FROM devices WHERE NOT revoked AND lower(email) IN ($1, $2) ORDER BY created_us, id`, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if !slices.ContainsFunc(plan, func(s string) bool { return strings.Contains(s, "devices_active_email") }) {
		t.Errorf("query plan does not use devices_active_email: %v", plan)
	}
}
