package identity

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestPage filters and pages in the database, on SQLite and PostgreSQL
// alike: a substring of the name, email, address, id or groups, the
// status at a time, LIKE's wildcards taken literally, and the total.
func TestPage(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		r := open(t, env, Options{Now: clk.Now})
		var ids []string
		for i := range 12 {
			e := enrollment(t, fmt.Sprintf("user%02d", i))
			e.Expires = clk.Now().Add(time.Hour)
			if i%4 == 0 {
				e.Groups = []string{"Finance"}
			}
			if i == 7 {
				e.Name = "lab_50%"
				e.Expires = clk.Now().Add(time.Minute)
			}
			d, err := r.Enroll(ctx(t), e)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, d.ID)
			clk.Advance(time.Second) // a distinct created time each
		}
		if _, err := r.Revoke(ctx(t), ids[2]); err != nil {
			t.Fatal(err)
		}
		later := clk.Now().Add(2 * time.Minute) // device 7 has expired
		for _, tt := range []struct {
			name  string
			f     Filter
			want  []int // indexes into ids, in order
			total int
		}{
			{"all", Filter{}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 12},
			{"first page", Filter{Limit: 5}, []int{0, 1, 2, 3, 4}, 12},
			{"last page", Filter{Offset: 10, Limit: 5}, []int{10, 11}, 12},
			{"past the end", Filter{Offset: 20, Limit: 5}, nil, 12},
			{"offset only", Filter{Offset: 9}, []int{9, 10, 11}, 12},
			{"email, any case", Filter{Query: "USER1"}, []int{10, 11}, 2},
			{"group", Filter{Query: "finance", Limit: 2, Offset: 1}, []int{4, 8}, 3},
			{"address", Filter{Query: "100.96."}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 12},
			{"id", Filter{Query: ids[5]}, []int{5}, 1},
			{"wildcards are literal", Filter{Query: "_50%"}, []int{7}, 1},
			{"a lone % matches only a literal %", Filter{Query: "%"}, []int{7}, 1},
			{"revoked", Filter{Status: "revoked"}, []int{2}, 1},
			{"expired", Filter{Status: "expired", Now: later}, []int{7}, 1},
			{"active", Filter{Status: "active", Now: later, Limit: 3}, []int{0, 1, 3}, 10},
			{"active and a query", Filter{Status: "active", Now: later, Query: "user0"}, []int{0, 1, 3, 4, 5, 6, 8, 9}, 8},
		} {
			devs, total, err := r.Page(ctx(t), tt.f)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			var got []int
			for _, d := range devs {
				got = append(got, slices.Index(ids, d.ID))
			}
			if !slices.Equal(got, tt.want) || total != tt.total {
				t.Errorf("%s: %v of %d, want %v of %d", tt.name, got, total, tt.want, tt.total)
			}
		}
		if _, _, err := r.Page(ctx(t), Filter{Status: "gone"}); err == nil {
			t.Error("an unknown status was accepted")
		}
	})
}

// TestPageFollowsChanges: Page's index follows changes made after it was
// built, by this registry and by another appliance on the same database:
// a new device joins at the end, a changed one keeps its place with its
// new groups, a revoked one moves to the revoked status.
func TestPageFollowsChanges(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		a := open(t, env, Options{Now: clk.Now})
		b := open(t, env, Options{Now: clk.Now}) // another appliance
		var ids []string
		for i := range 5 {
			d, err := a.Enroll(ctx(t), enrollment(t, fmt.Sprintf("user%02d", i)))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, d.ID)
			clk.Advance(time.Second)
		}
		page := func(r *Registry, f Filter) ([]int, int) {
			t.Helper()
			devs, total, err := r.Page(ctx(t), f)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, d := range devs {
				got = append(got, slices.Index(ids, d.ID))
			}
			return got, total
		}
		if got, total := page(a, Filter{}); !slices.Equal(got, []int{0, 1, 2, 3, 4}) || total != 5 {
			t.Fatalf("before: %v of %d", got, total)
		}
		// Another appliance enrolls, regroups and revokes.
		d, err := b.Enroll(ctx(t), enrollment(t, "late"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
		if _, err := b.SetUserGroups(ctx(t), []string{"USER01@corp.example"}, []string{"Audit"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Revoke(ctx(t), ids[3]); err != nil {
			t.Fatal(err)
		}
		// And this one too.
		if _, err := a.RevokeUser(ctx(t), []string{"user04@corp.example"}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name  string
			f     Filter
			want  []int
			total int
		}{
			{"all, in order", Filter{}, []int{0, 1, 2, 3, 4, 5}, 6},
			{"second page", Filter{Offset: 4, Limit: 1}, []int{4}, 6},
			{"new groups", Filter{Query: "audit"}, []int{1}, 1},
			{"old groups gone", Filter{Query: "staff", Status: "active", Now: clk.Now()}, []int{0, 2, 5}, 3},
			{"revoked", Filter{Status: "revoked"}, []int{3, 4}, 2},
			{"new device", Filter{Query: "LATE"}, []int{5}, 1},
		} {
			for _, r := range []*Registry{a, b} {
				if got, total := page(r, tt.f); !slices.Equal(got, tt.want) || total != tt.total {
					t.Errorf("%s: %v of %d, want %v of %d", tt.name, got, total, tt.want, tt.total)
				}
			}
		}
	})
}
