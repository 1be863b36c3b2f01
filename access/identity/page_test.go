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
