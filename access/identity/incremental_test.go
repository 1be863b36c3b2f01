package identity

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// fleetModel is the devices table in memory: every row with the
// generation that last changed it, as bumpGeneration keeps them.
type fleetModel struct {
	rng     *rand.Rand
	now     time.Time
	gen     int64
	rows    map[string]Device
	changed map[string]int64
	next    int
}

func newFleetModel(seed uint64) *fleetModel {
	return &fleetModel{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		rows: map[string]Device{}, changed: map[string]int64{}}
}

// write stores d as the newest change.
func (m *fleetModel) write(d Device) {
	m.gen++
	m.rows[d.ID], m.changed[d.ID] = d, m.gen
}

// usedAddr reports whether a non-revoked row holds a (the database's
// partial unique index).
func (m *fleetModel) usedAddr(a netip.Addr) bool {
	for _, d := range m.rows {
		if !d.Revoked && d.Address == a {
			return true
		}
	}
	return false
}

// enroll adds a device at a free random address of a /21, so chunks fill
// and split unevenly.
func (m *fleetModel) enroll() {
	var a netip.Addr
	for {
		a = netip.AddrFrom4([4]byte{100, 96, byte(m.rng.IntN(8)), byte(1 + m.rng.IntN(254))})
		if !m.usedAddr(a) {
			break
		}
	}
	m.next++
	d := Device{ID: fmt.Sprintf("dev_%06d", m.next), Name: "laptop", Email: fmt.Sprintf("u%d@corp.example", m.next%50),
		Subject: fmt.Sprint("idp#", m.next%50), Groups: []string{"staff"}, Address: a, Created: m.now}
	d.PublicKey[0], d.PublicKey[1], d.PublicKey[2] = byte(m.next), byte(m.next>>8), 0xee
	switch m.rng.IntN(4) {
	case 0: // never expires
	case 1:
		d.Pending = true
		d.Expires = m.now.Add(time.Duration(1+m.rng.IntN(120)) * time.Minute)
	default:
		d.Expires = m.now.Add(time.Duration(1+m.rng.IntN(120)) * time.Minute)
	}
	m.write(d)
}

// pick is a random non-revoked row, if any.
func (m *fleetModel) pick() (Device, bool) {
	ids := make([]string, 0, len(m.rows))
	for id, d := range m.rows {
		if !d.Revoked {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return Device{}, false
	}
	slices.Sort(ids)
	return m.rows[ids[m.rng.IntN(len(ids))]], true
}

// step makes one random change, as the registry's writers do.
func (m *fleetModel) step() {
	d, ok := m.pick()
	op := m.rng.IntN(10)
	if !ok || op < 4 {
		m.enroll()
		return
	}
	switch op {
	case 4: // Revoke, RevokeUser
		d.Revoked, d.RevokedAt = true, m.now
	case 5: // SetUserGroups, RefreshUserGroups
		d.Groups = []string{fmt.Sprint("g", m.rng.IntN(5))}
	case 6: // re-enrollment: a new expiry, an expired device comes back
		d.Expires = m.now.Add(time.Duration(1+m.rng.IntN(120)) * time.Minute)
	case 7: // Approve
		if !d.Pending {
			m.enroll()
			return
		}
		d.Pending = false
	case 8: // RecordPosture, QuarantineStale
		d.Quarantined = !d.Quarantined
	case 9: // an admin revokes a whole address range (a /27) at once
		if m.rng.IntN(4) != 0 {
			m.enroll()
			return
		}
		lo := d.Address.As4()
		for _, r := range m.rows {
			if a := r.Address.As4(); !r.Revoked && a[2] == lo[2] && a[3]/32 == lo[3]/32 {
				r.Revoked, r.RevokedAt = true, m.now
				m.write(r)
			}
		}
		return
	}
	m.write(d)
}

// changedSince is what sync's incremental query reads: the rows changed
// after from, up to the current generation, in no particular order.
func (m *fleetModel) changedSince(from int64) []Device {
	var out []Device
	for id, g := range m.changed {
		if g > from {
			out = append(out, m.rows[id])
		}
	}
	m.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (m *fleetModel) all() []Device {
	out := make([]Device, 0, len(m.rows))
	for _, d := range m.rows {
		out = append(out, d)
	}
	return out
}

// snapshotView is everything a snapshot answers, for comparing two.
type snapshotView struct {
	Gen                     int64
	Built, NextExpiry       time.Time
	Len                     int
	Devices                 []Device
	Expired, Revoked, Pend  int
	ByAddr, ByKey, ByID     map[string]string // query -> device id found ("" none)
	IndexSizes, InactiveLen [4]int
}

func viewOf(s *Snapshot, probe []Device) snapshotView {
	v := snapshotView{Gen: s.Generation(), Built: s.Built(), NextExpiry: s.NextExpiry(), Len: s.Len(),
		Expired: s.expired, Revoked: s.revoked, Pend: s.pending,
		ByAddr: map[string]string{}, ByKey: map[string]string{}, ByID: map[string]string{}}
	for d := range s.All() {
		v.Devices = append(v.Devices, d)
	}
	for _, p := range probe {
		a, _ := s.ByAddr(p.Address)
		k, _ := s.ByKey(p.PublicKey)
		i, _ := s.ByID(p.ID)
		v.ByAddr[p.Address.String()], v.ByKey[p.ID], v.ByID[p.ID] = a.ID, k.ID, i.ID
	}
	v.IndexSizes = [4]int{s.byAddr.len(), s.byKey.len(), s.byID.len(), s.inactive.len()}
	return v
}

// checkChunks asserts the chunk invariants: none empty or oversized, and
// addresses in order across them.
func checkChunks(t *testing.T, s *Snapshot) {
	t.Helper()
	var prev netip.Addr
	for i, c := range s.chunks {
		if len(c.devs) == 0 || len(c.devs) > maxChunk {
			t.Fatalf("chunk %d holds %d devices", i, len(c.devs))
		}
		if c.lastKey != c.devs[len(c.devs)-1].Address || !c.minExp.Equal(newChunk(c.devs).minExp) {
			t.Fatalf("chunk %d: stale lastKey %v or minExp %v", i, c.lastKey, c.minExp)
		}
		for _, d := range c.devs {
			if prev.IsValid() && d.Address.Less(prev) {
				t.Fatalf("chunk %d: %v after %v", i, d.Address, prev)
			}
			prev = d.Address
		}
	}
}

// TestIncrementalMatchesRebuild: random sequences of enrollments,
// revocations (single and mass), expiries, approvals, group and posture
// changes, absorbed in random batches by apply and expire, give at every
// step the snapshot a full rebuild of the same rows gives; and deriving
// a snapshot never changes the one it came from (readers hold it).
func TestIncrementalMatchesRebuild(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			m := newFleetModel(seed)
			for range 300 + int(seed)*40 { // a first full load of a few chunks
				m.enroll()
			}
			cur := newSnapshot(m.gen, m.now, m.all())
			for round := range 120 {
				for range m.rng.IntN(8) {
					m.step()
				}
				if m.rng.IntN(3) == 0 {
					m.now = m.now.Add(time.Duration(m.rng.IntN(300)) * time.Second)
				}
				probe := m.all()
				before := viewOf(cur, probe)
				var next *Snapshot
				if m.gen == cur.Generation() {
					next = cur.expire(m.now)
				} else {
					next = cur.apply(m.gen, m.now, m.changedSince(cur.Generation()))
				}
				if after := viewOf(cur, probe); !reflect.DeepEqual(before, after) {
					t.Fatalf("round %d: deriving a snapshot changed the old one", round)
				}
				want := newSnapshot(m.gen, m.now, m.all())
				got := viewOf(next, probe)
				if next != cur { // expire without expiries keeps s, with its build time
					if w := viewOf(want, probe); !reflect.DeepEqual(got, w) {
						t.Fatalf("round %d (gen %d): incremental and rebuilt snapshots differ:\nlen %d/%d expired %d/%d revoked %d/%d pending %d/%d next %v/%v indexes %v/%v",
							round, m.gen, got.Len, w.Len, got.Expired, w.Expired, got.Revoked, w.Revoked, got.Pend, w.Pend,
							got.NextExpiry, w.NextExpiry, got.IndexSizes, w.IndexSizes)
					}
				} else if want.Len() != cur.Len() || want.expired != cur.expired {
					t.Fatalf("round %d: expire kept the snapshot, but a rebuild has %d devices, %d expired; it %d, %d",
						round, want.Len(), want.expired, cur.Len(), cur.expired)
				}
				checkChunks(t, next)
				cur = next
			}
			t.Logf("seed %d: %d rows, %d active in %d chunks, %d expired, %d pending, %d revoked",
				seed, len(m.rows), cur.Len(), len(cur.chunks), cur.expired, cur.pending, cur.revoked)
		})
	}
}

// TestIncrementalChunksSplitAndVanish: many enrollments into one address
// range split its chunk; revoking them all removes the emptied chunks.
func TestIncrementalChunksSplitAndVanish(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var rows []Device
	mk := func(i int) Device {
		d := Device{ID: fmt.Sprintf("dev_%05d", i), Address: netip.AddrFrom4([4]byte{100, 96, byte(i >> 8), byte(i)})}
		d.PublicKey[0], d.PublicKey[1] = byte(i), byte(i>>8)
		return d
	}
	for i := range 1000 {
		rows = append(rows, mk(i))
	}
	s := newSnapshot(1, now, nil)
	s = s.apply(2, now, rows)
	checkChunks(t, s)
	if s.Len() != 1000 || len(s.chunks) < 1000/maxChunk {
		t.Fatalf("%d devices in %d chunks", s.Len(), len(s.chunks))
	}
	for i := range rows {
		rows[i].Revoked = true
	}
	s2 := s.apply(3, now, rows[:900])
	checkChunks(t, s2)
	if s2.Len() != 100 || s2.revoked != 900 || len(s2.chunks) > 2 {
		t.Fatalf("after revoking 900: %d devices in %d chunks, %d revoked", s2.Len(), len(s2.chunks), s2.revoked)
	}
	if d, ok := s2.ByAddr(rows[950].Address); !ok || d.ID != rows[950].ID {
		t.Errorf("ByAddr after the mass revocation: %q %v", d.ID, ok)
	}
	if s.Len() != 1000 {
		t.Errorf("the old snapshot lost devices: %d", s.Len())
	}
}

// BenchmarkRefreshAfterRevoke10k: with 10,000 devices held, what an
// appliance spends to absorb one revocation (a SCIM deactivation): poll
// the generation, read the changed row, derive the snapshot. This is the
// wait of a deactivation PATCH that answers once the snapshot follows.
//
//	go test -run '^$' -bench RefreshAfterRevoke10k -benchtime 500x ./access/identity/
func BenchmarkRefreshAfterRevoke10k(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			r := open(b, benchEnv(b, kind), Options{})
			ids := bulkEnroll(b, r, 10000+b.N)
			c := context.Background()
			if err := r.Refresh(c); err != nil {
				b.Fatal(err)
			}
			d := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if _, err := r.Revoke(c, ids[i]); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				if err := r.Refresh(c); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			b.StopTimer()
			if n := r.Snapshot().Len(); n != 10000 {
				b.Fatalf("%d devices", n)
			}
			reportPercentiles(b, d)
		})
	}
}

// BenchmarkApply10k: the in-memory part alone: derive a 10,000-device
// snapshot with one device revoked and one enrolled.
func BenchmarkApply10k(b *testing.B) {
	now := time.Now()
	devs := make([]Device, 10000)
	addr := netip.MustParseAddr("100.96.0.2")
	for i := range devs {
		devs[i] = Device{ID: NewDeviceID(), Name: fmt.Sprintf("dev%d", i), Email: fmt.Sprintf("u%d@corp.example", i),
			Groups: []string{"eng"}, PublicKey: randKey(b), Address: addr, Created: now, Expires: now.Add(time.Hour)}
		addr = addr.Next()
	}
	s := newSnapshot(1, now, devs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		gone := devs[i%len(devs)]
		gone.Revoked = true
		fresh := Device{ID: NewDeviceID(), PublicKey: randKey(b), Address: addr, Created: now}
		s.apply(int64(2+i), now, []Device{gone, fresh})
	}
}

// TestDeriveWhileReading: readers keep using a snapshot while later ones
// are derived from it, as the packet and DNS paths do; under -race this
// proves deriving never writes what a published snapshot shares.
func TestDeriveWhileReading(t *testing.T) {
	m := newFleetModel(99)
	for range 400 {
		m.enroll()
	}
	first := newSnapshot(m.gen, m.now, m.all())
	want := viewOf(first, m.all())
	probe := m.all()
	stop := make(chan struct{})
	done := make(chan [2]int) // reads, reads that differed
	go func() {               // owned by this test: stopped by stop, waited for by done
		var n [2]int
		for {
			if !reflect.DeepEqual(viewOf(first, probe), want) {
				n[1]++
			}
			n[0]++
			select {
			case <-stop:
				done <- n
				return
			default:
			}
		}
	}()
	cur := first
	for range 200 {
		for range 5 {
			m.step()
		}
		m.now = m.now.Add(30 * time.Second)
		cur = cur.apply(m.gen, m.now, m.changedSince(cur.Generation()))
	}
	close(stop)
	if n := <-done; n[1] != 0 {
		t.Fatalf("%d of %d reads of the first snapshot saw it changed", n[1], n[0])
	}
	if cur.Generation() == first.Generation() {
		t.Fatal("no snapshot was derived")
	}
}

// BenchmarkSnapshotLookup10k: ByAddr and ByKey on a 10,000-device
// snapshot, the lookups of the WireGuard and flow paths.
func BenchmarkSnapshotLookup10k(b *testing.B) {
	now := time.Now()
	devs := make([]Device, 10000)
	addr := netip.MustParseAddr("100.96.0.2")
	for i := range devs {
		devs[i] = Device{ID: NewDeviceID(), PublicKey: randKey(b), Address: addr, Created: now}
		addr = addr.Next()
	}
	s := newSnapshot(1, now, devs)
	b.Run("addr", func(b *testing.B) {
		for i := range b.N {
			if _, ok := s.ByAddr(devs[i%len(devs)].Address); !ok {
				b.Fatal("not found")
			}
		}
	})
	b.Run("key", func(b *testing.B) {
		for i := range b.N {
			if _, ok := s.ByKey(devs[i%len(devs)].PublicKey); !ok {
				b.Fatal("not found")
			}
		}
	})
}

// TestRandomWritesFollowedIncrementally: random writes through the
// registry's own API on one appliance (enrollments, pending ones and
// their approval, re-enrollments, revocations of devices and users, group
// changes, posture quarantine, expiry as the clock moves), followed by a
// second appliance that reads only the changed rows, give it after every
// refresh the snapshot a full read of the database gives, counts
// included, on both stores.
func TestRandomWritesFollowedIncrementally(t *testing.T) {
	eachStore(t, func(t *testing.T, env storeEnv) {
		clk := newClock()
		a := open(t, env, Options{Now: clk.Now})
		b := open(t, env, Options{Now: clk.Now})
		c := ctx(t)
		rng := rand.New(rand.NewPCG(7, 11))
		var es []Enrollment
		var ids []string
		for step := range 120 {
			switch op := rng.IntN(9); {
			case op < 3 || len(ids) == 0:
				e := enrollment(t, fmt.Sprintf("u%d", step%17))
				e.Pending = rng.IntN(4) == 0
				if rng.IntN(2) == 0 {
					e.Expires = clk.Now().Add(time.Duration(1+rng.IntN(20)) * time.Minute)
				}
				d, err := a.Enroll(c, e)
				if err != nil {
					t.Fatalf("step %d: enroll: %v", step, err)
				}
				es, ids = append(es, e), append(ids, d.ID)
			case op == 3: // re-enrollment: new groups and expiry, same key
				i := rng.IntN(len(es))
				e := es[i]
				e.Groups = []string{fmt.Sprint("g", rng.IntN(4))}
				e.Expires = clk.Now().Add(time.Duration(1+rng.IntN(20)) * time.Minute)
				if _, err := a.Enroll(c, e); err != nil && !errors.Is(err, ErrRevoked) {
					t.Fatalf("step %d: re-enroll: %v", step, err)
				}
			case op == 4:
				if _, err := a.Revoke(c, ids[rng.IntN(len(ids))]); err != nil {
					t.Fatalf("step %d: revoke: %v", step, err)
				}
			case op == 5:
				if _, err := a.RevokeUser(c, []string{es[rng.IntN(len(es))].Email}); err != nil {
					t.Fatalf("step %d: revoke user: %v", step, err)
				}
			case op == 6:
				if _, err := a.SetUserGroups(c, []string{es[rng.IntN(len(es))].Email}, []string{fmt.Sprint("g", rng.IntN(4))}); err != nil {
					t.Fatalf("step %d: set groups: %v", step, err)
				}
			case op == 7:
				if _, err := a.Approve(c, ids[rng.IntN(len(ids))]); err != nil && !errors.Is(err, ErrNotPending) {
					t.Fatalf("step %d: approve: %v", step, err)
				}
			default:
				_, err := a.RecordPosture(c, ids[rng.IntN(len(ids))], clk.Now().Add(time.Duration(step)*time.Millisecond), []byte(`{}`), rng.IntN(2) == 0, rules.Posture{})
				if err != nil && !errors.Is(err, ErrRevoked) {
					t.Fatalf("step %d: posture: %v", step, err)
				}
			}
			if rng.IntN(3) != 0 {
				continue
			}
			clk.Advance(time.Duration(rng.IntN(180)) * time.Second)
			if err := b.Refresh(c); err != nil {
				t.Fatal(err)
			}
			got := b.Snapshot()
			full, err := b.sync(c, nil, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			var probe []Device
			for _, id := range ids {
				probe = append(probe, Device{ID: id})
			}
			for d := range full.All() {
				probe = append(probe, d)
			}
			gv, fv := viewOf(got, probe), viewOf(full, probe)
			if gv.Gen != fv.Gen || gv.Len != fv.Len || gv.Expired != fv.Expired || gv.Revoked != fv.Revoked || gv.Pend != fv.Pend ||
				!gv.NextExpiry.Equal(fv.NextExpiry) || gv.IndexSizes != fv.IndexSizes ||
				!reflect.DeepEqual(gv.ByAddr, fv.ByAddr) || !reflect.DeepEqual(gv.ByKey, fv.ByKey) || !reflect.DeepEqual(gv.ByID, fv.ByID) {
				t.Fatalf("step %d: incremental gen %d len %d expired %d revoked %d pending %d next %v indexes %v; full gen %d len %d expired %d revoked %d pending %d next %v indexes %v",
					step, gv.Gen, gv.Len, gv.Expired, gv.Revoked, gv.Pend, gv.NextExpiry, gv.IndexSizes,
					fv.Gen, fv.Len, fv.Expired, fv.Revoked, fv.Pend, fv.NextExpiry, fv.IndexSizes)
			}
			if len(gv.Devices) != len(fv.Devices) {
				t.Fatalf("step %d: %d devices, full %d", step, len(gv.Devices), len(fv.Devices))
			}
			for i := range gv.Devices {
				assertDevice(t, fmt.Sprintf("step %d device %d", step, i), gv.Devices[i], fv.Devices[i])
			}
		}
		t.Logf("%d devices enrolled; finally %d active, %d expired, %d pending, %d revoked",
			len(ids), b.Snapshot().Len(), b.Snapshot().expired, b.Snapshot().pending, b.Snapshot().revoked)
	})
}
