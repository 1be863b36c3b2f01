package identity

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"
)

// Benchmarks, each against both stores. The baseline ("peer") for the
// registry's own work is BenchmarkRawInsert: one plain INSERT of the same
// row in its own transaction, the least any registry on that database can
// spend per enrollment.
//
//	go test -run XXX -bench . -benchtime 10000x -benchmem ./access/identity/

// benchEnv gives each sub-benchmark run its own empty store: the Enroll
// numbers must not depend on how many devices earlier runs left behind.
func benchEnv(b *testing.B, kind string) storeEnv {
	if kind == "sqlite" {
		return storeEnv{kind: "sqlite", store: "sqlite", stateDir: b.TempDir()}
	}
	s := postgres(b)
	name, url := s.newDB(b)
	return storeEnv{kind: "postgres", store: url, pg: s, pgName: name}
}

func BenchmarkEnroll(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			r := open(b, benchEnv(b, kind), Options{})
			c := context.Background()
			es := make([]Enrollment, b.N)
			for i := range es {
				es[i] = enrollment(b, fmt.Sprint(i))
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := r.Enroll(c, es[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRawInsert(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			r := open(b, benchEnv(b, kind), Options{})
			c := context.Background()
			addr := netip.MustParseAddr("100.96.0.2")
			b.ResetTimer()
			for i := range b.N {
				tx, err := r.db.BeginTx(c, nil)
				if err != nil {
					b.Fatal(err)
				}
				k := randKey(b)
				if _, err := tx.ExecContext(c, `INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
					NewDeviceID(), "n", "e", "s", `["staff"]`, keyText(k), addr.String(), int64(i), nil, nil, false, nil, false, false); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				addr = addr.Next()
			}
		})
	}
}

func BenchmarkRevoke(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			r := open(b, benchEnv(b, kind), Options{})
			c := context.Background()
			ids := bulkEnroll(b, r, b.N)
			b.ResetTimer()
			for _, id := range ids {
				if _, err := r.Revoke(c, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// bulkEnroll writes n devices in one transaction (for setting up, not
// for measuring) and returns their ids.
func bulkEnroll(b *testing.B, r *Registry, n int) []string {
	c := context.Background()
	tx, err := r.db.BeginTx(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	ids := make([]string, n)
	addr := netip.MustParseAddr("100.96.0.2")
	now := time.Now().UnixMicro()
	for i := range ids {
		ids[i] = NewDeviceID()
		// A distinct created time each, as enrollments one after another
		// have: the order pages follow.
		if _, err := tx.ExecContext(c, `INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			ids[i], fmt.Sprintf("dev%05d", i), fmt.Sprintf("user%05d@corp.example", i), fmt.Sprintf("sub%d", i),
			`["staff","eng"]`, keyText(randKey(b)), addr.String(), now+int64(i), nil, now+int64(time.Hour/time.Microsecond), false, nil, false, false); err != nil {
			b.Fatal(err)
		}
		addr = addr.Next()
	}
	if _, err := tx.ExecContext(c, `UPDATE registry_generation SET generation = generation + 1`); err != nil {
		b.Fatal(err)
	}
	if _, err := tx.ExecContext(c, `UPDATE devices SET changed_gen = (SELECT generation FROM registry_generation)`); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return ids
}

// BenchmarkLoadSnapshot10k: read 10,000 devices from the database and
// build their snapshot, what an appliance does when the generation moves.
func BenchmarkLoadSnapshot10k(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			r := open(b, benchEnv(b, kind), Options{})
			bulkEnroll(b, r, 10000)
			c := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				s, err := r.sync(c, nil, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if s.Len() != 10000 {
					b.Fatalf("%d devices", s.Len())
				}
			}
		})
	}
}

// BenchmarkBuildSnapshot10k: the in-memory part alone, plus the memory a
// 10,000-device snapshot keeps alive (retained-bytes).
func BenchmarkBuildSnapshot10k(b *testing.B) {
	now := time.Now()
	devs := make([]Device, 10000)
	addr := netip.MustParseAddr("100.96.0.2")
	for i := range devs {
		devs[i] = Device{ID: NewDeviceID(), Name: fmt.Sprintf("dev%d", i), Email: fmt.Sprintf("u%d@corp.example", i),
			Subject: fmt.Sprintf("https://sso.corp.example#%d", i), Groups: []string{"eng", "staff"},
			PublicKey: randKey(b), Address: addr, Created: now, Expires: now.Add(time.Hour)}
		addr = addr.Next()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	keep := newSnapshot(1, now, devs)
	devs = nil // the snapshot's own copy is what stays
	runtime.GC()
	runtime.ReadMemStats(&after)
	retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	rebuild := make([]Device, 0, keep.Len())
	for d := range keep.All() {
		rebuild = append(rebuild, d)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		newSnapshot(2, now, rebuild)
	}
	b.StopTimer()
	b.ReportMetric(float64(retained), "retained-bytes")
	runtime.KeepAlive(keep)
}

// BenchmarkRefreshAfterEnroll10k: with 10,000 devices held, the cost for
// an appliance to absorb one enrollment made elsewhere (it reads only the
// changed row, then rebuilds the snapshot).
func BenchmarkRefreshAfterEnroll10k(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			env := benchEnv(b, kind)
			w := open(b, env, Options{})
			bulkEnroll(b, w, 10000)
			r := open(b, env, Options{})
			c := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if _, err := w.Enroll(c, enrollment(b, fmt.Sprint(i))); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := r.Refresh(c); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if r.Snapshot().Len() != 10000+b.N {
				b.Fatalf("%d devices", r.Snapshot().Len())
			}
		})
	}
}

// BenchmarkPage10k: the device list behind the console and the admin API
// with 10,000 devices: the first page, a page deep in the list (offset
// 7,500), a search for one user (a substring, as the console's search box
// sends it), a search that matches every device, and the active ones.
// Each reports p50 and p99 besides the mean; the goal is 50 ms at p99
// through HTTP (BenchmarkConsoleAPI in gateway/admin).
//
//	go test -run '^$' -bench Page10k -benchtime 200x ./access/identity/
func BenchmarkPage10k(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			r := open(b, benchEnv(b, kind), Options{})
			bulkEnroll(b, r, 10000)
			c := context.Background()
			for _, tt := range []struct {
				name  string
				f     Filter
				n     int // devices on the page
				total int
			}{
				{"first", Filter{Limit: 50}, 50, 10000},
				{"offset-7500", Filter{Limit: 50, Offset: 7500}, 50, 10000},
				{"search-one", Filter{Limit: 50, Query: "user09876"}, 1, 1},
				{"search-all", Filter{Limit: 50, Offset: 5000, Query: "corp.example"}, 50, 10000},
				{"active", Filter{Limit: 50, Offset: 100, Status: "active", Now: time.Now()}, 50, 10000},
			} {
				b.Run(tt.name, func(b *testing.B) {
					d := make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for range b.N {
						t0 := time.Now()
						devs, total, err := r.Page(c, tt.f)
						if err != nil {
							b.Fatal(err)
						}
						d = append(d, time.Since(t0))
						if len(devs) != tt.n || total != tt.total {
							b.Fatalf("%d devices of %d, want %d of %d", len(devs), total, tt.n, tt.total)
						}
					}
					b.StopTimer()
					reportPercentiles(b, d)
				})
			}
		})
	}
}

// reportPercentiles adds p50 and p99 (ms) of the iterations' times.
func reportPercentiles(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}
