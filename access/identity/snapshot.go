package identity

import (
	"encoding/binary"
	"hash/maphash"
	"iter"
	"net/netip"
	"slices"
	"time"
)

// Snapshot is the set of active devices (not revoked, not pending, not
// expired when it was built) at one registry generation. It never changes
// after it is published, so the packet, DNS and flow paths read it without
// locks. The Device values it hands out share their Groups slices with the
// snapshot: callers must not modify them.
//
// A new snapshot is usually derived from the previous one (apply, expire)
// and shares with it everything a change did not touch: the devices sit in
// address-ordered chunks and the indexes in hash shards, and a change
// copies only the chunks and shards it touches. So absorbing one change
// costs tens of microseconds with 10,000 devices instead of milliseconds
// for a rebuild (BenchmarkApply10k, BenchmarkBuildSnapshot10k), and
// the old snapshot, which readers may still hold, stays as it was.
//
// A nil *Snapshot is empty.
type Snapshot struct {
	generation int64
	built      time.Time
	chunks     []*chunk // active devices in address order; no chunk is empty
	n          int      // active devices
	byAddr     *index[netip.Addr]
	byKey      *index[[32]byte]
	byID       *index[string]
	// inactive holds the devices that are neither revoked nor active
	// (pending or expired), by id, so a change to one of them moves the
	// counts without asking the database.
	inactive   *index[string]
	nextExpiry time.Time // the earliest Expires among devices; zero if none expire

	// Counts by state for metrics. A pending device counts as pending
	// whether or not it has expired; revoked comes from the database on a
	// full load and is counted from the changed rows between full loads
	// (a revoked row is never written again, so each revocation arrives
	// exactly once).
	expired, revoked, pending int

	// logouts are the Access logouts of every appliance (logouts.go),
	// shared by the snapshots derived from this one until one changes.
	logouts map[string]int64
}

// Chunk sizes: a change copies one chunk of at most maxChunk pointers and
// the chunk list (n/chunkSize pointers), so both stay small at 10,000
// devices.
const (
	chunkSize = 128
	maxChunk  = 2 * chunkSize
)

// chunk is a run of active devices in address order. It is never changed
// once it is in a published snapshot.
type chunk struct {
	devs    []*Device
	minExp  time.Time // the earliest non-zero Expires in devs; zero if none
	lastKey netip.Addr
}

func newChunk(devs []*Device) *chunk {
	c := &chunk{devs: devs}
	for _, d := range devs {
		if !d.Expires.IsZero() && (c.minExp.IsZero() || d.Expires.Before(c.minExp)) {
			c.minExp = d.Expires
		}
	}
	c.lastKey = devs[len(devs)-1].Address
	return c
}

// shards is the number of hash shards of every index: a change copies the
// shard array and clones the one shard it touches (n/shards entries).
const shards = 128

var indexSeed = maphash.MakeSeed()

// index maps keys to active devices. It is never changed once it is in a
// published snapshot; an indexEdit copies the shard array and the shards
// it touches.
type index[K comparable] struct {
	m    [shards]map[K]*Device
	hash func(K) uint64
}

// The shard hashes of the indexes' key types: the fast byte and string
// hashes, seeded per process so no one can choose keys that crowd a shard.
func hashString(k string) uint64 { return maphash.String(indexSeed, k) }
func hashKey(k [32]byte) uint64  { return maphash.Bytes(indexSeed, k[:]) }

// hashAddr needs no seed: the registry hands out addresses one after
// another, so their low bits spread evenly over the shards; it is the
// cheapest, for the tunnel's lookups by source address.
func hashAddr(k netip.Addr) uint64 {
	b := k.As16()
	lo := binary.BigEndian.Uint64(b[8:])
	return lo ^ lo>>7 ^ binary.BigEndian.Uint64(b[:8])
}

func (x *index[K]) shard(k K) int { return int(x.hash(k) % shards) }

func (x *index[K]) get(k K) (*Device, bool) {
	d, ok := x.m[x.shard(k)][k]
	return d, ok
}

func (x *index[K]) len() int {
	n := 0
	for _, m := range x.m {
		n += len(m)
	}
	return n
}

// indexEdit is a copy-on-write edit of an index: the first write to a
// shard clones it; shards not written stay shared with the original.
type indexEdit[K comparable] struct {
	x      *index[K]
	cloned [shards]bool
}

func editIndex[K comparable](x *index[K]) *indexEdit[K] {
	c := *x
	return &indexEdit[K]{x: &c}
}

func (e *indexEdit[K]) shard(k K) map[K]*Device {
	i := e.x.shard(k)
	if !e.cloned[i] {
		m := make(map[K]*Device, len(e.x.m[i])+1)
		for k, v := range e.x.m[i] {
			m[k] = v
		}
		e.x.m[i] = m
		e.cloned[i] = true
	}
	return e.x.m[i]
}

func (e *indexEdit[K]) put(k K, d *Device) { e.shard(k)[k] = d }

// del removes k if it maps to d: a device is only ever taken out under its
// own keys, never another device's that shares one (which only a row
// changed behind the registry's back can produce).
func (e *indexEdit[K]) del(k K, d *Device) {
	if cur, ok := e.x.get(k); ok && cur == d {
		delete(e.shard(k), k)
	}
}

// newIndex builds an index of the given capacity from scratch.
func newIndex[K comparable](n int, hash func(K) uint64) *index[K] {
	x := &index[K]{hash: hash}
	for i := range x.m {
		x.m[i] = make(map[K]*Device, n/shards+1)
	}
	return x
}

// newSnapshot builds the snapshot of devs (in any order) as of now;
// revoked, pending and expired devices are counted and left out. It is the
// full rebuild: what apply derives incrementally must equal it.
func newSnapshot(generation int64, now time.Time, devs []Device) *Snapshot {
	s := &Snapshot{generation: generation, built: now}
	own := make([]Device, 0, len(devs)) // one allocation for every kept device
	active := make([]*Device, 0, len(devs))
	s.inactive = newIndex(0, hashString)
	for _, d := range devs {
		if d.Revoked {
			s.revoked++
			continue
		}
		own = append(own, d)
		p := &own[len(own)-1]
		switch {
		case d.Pending:
			s.pending++
			s.inactive.m[s.inactive.shard(d.ID)][d.ID] = p
		case expiredAt(d, now):
			s.expired++
			s.inactive.m[s.inactive.shard(d.ID)][d.ID] = p
		default:
			active = append(active, p)
		}
	}
	slices.SortFunc(active, func(a, b *Device) int { return a.Address.Compare(b.Address) })
	s.byAddr, s.byKey, s.byID = newIndex(len(active), hashAddr), newIndex(len(active), hashKey), newIndex(len(active), hashString)
	for _, d := range active {
		s.byAddr.m[s.byAddr.shard(d.Address)][d.Address] = d
		s.byKey.m[s.byKey.shard(d.PublicKey)][d.PublicKey] = d
		s.byID.m[s.byID.shard(d.ID)][d.ID] = d
	}
	for len(active) > 0 {
		n := min(chunkSize, len(active))
		s.chunks = append(s.chunks, newChunk(active[:n:n]))
		active = active[n:]
	}
	s.finish()
	return s
}

func expiredAt(d Device, now time.Time) bool {
	return !d.Expires.IsZero() && !now.Before(d.Expires)
}

// finish sets the fields derived from the chunks.
func (s *Snapshot) finish() {
	s.n, s.nextExpiry = 0, time.Time{}
	for _, c := range s.chunks {
		s.n += len(c.devs)
		if !c.minExp.IsZero() && (s.nextExpiry.IsZero() || c.minExp.Before(s.nextExpiry)) {
			s.nextExpiry = c.minExp
		}
	}
}

// apply returns the snapshot at generation gen, derived from s by applying
// the rows changed since s (each row's current state, every changed row
// once) as of now, then expiry. s is not changed. Its cost grows with the
// number of changes, not of devices.
func (s *Snapshot) apply(gen int64, now time.Time, changed []Device) *Snapshot {
	e := s.edit(gen, now)
	// Take every changed device out first, then put the new states in: a
	// batch can free an address or key (a revocation) and give it to
	// another device (a new enrollment) in either order.
	for i := range changed {
		e.remove(changed[i].ID)
	}
	own := slices.Clone(changed)
	for i := range own {
		d := &own[i]
		switch {
		case d.Revoked:
			e.s.revoked++
		case d.Pending:
			e.s.pending++
			e.inactive.put(d.ID, d)
		case expiredAt(*d, now):
			e.s.expired++
			e.inactive.put(d.ID, d)
		default:
			e.insert(d)
		}
	}
	e.expire(now)
	return e.done()
}

// expire returns s without the devices expired at now, at the same
// generation, or s itself when none has. It needs no database, so devices
// stop working at their expiry even while the database is down.
func (s *Snapshot) expire(now time.Time) *Snapshot {
	if s.nextExpiry.IsZero() || now.Before(s.nextExpiry) {
		return s
	}
	e := s.edit(s.generation, now)
	e.expire(now)
	return e.done()
}

// snapEdit derives a snapshot from another by copy-on-write.
type snapEdit struct {
	s              *Snapshot // the new snapshot, being built
	byAddr         *indexEdit[netip.Addr]
	byKey          *indexEdit[[32]byte]
	byID, inactive *indexEdit[string]
	cloned         map[*chunk]bool // chunks that belong to the edit, free to change
}

func (s *Snapshot) edit(gen int64, now time.Time) *snapEdit {
	n := *s
	n.generation, n.built = gen, now
	n.chunks = slices.Clone(s.chunks)
	e := &snapEdit{s: &n, byAddr: editIndex(s.byAddr), byKey: editIndex(s.byKey), byID: editIndex(s.byID),
		inactive: editIndex(s.inactive), cloned: map[*chunk]bool{}}
	return e
}

func (e *snapEdit) done() *Snapshot {
	e.s.byAddr, e.s.byKey, e.s.byID, e.s.inactive = e.byAddr.x, e.byKey.x, e.byID.x, e.inactive.x
	for c := range e.cloned {
		c.lastKey = c.devs[len(c.devs)-1].Address
		c.minExp = newChunk(c.devs).minExp
	}
	e.s.finish()
	return e.s
}

// own returns chunk i, cloned into the edit the first time.
func (e *snapEdit) own(i int) *chunk {
	c := e.s.chunks[i]
	if !e.cloned[c] {
		c = &chunk{devs: slices.Clone(c.devs)}
		e.s.chunks[i] = c
		e.cloned[c] = true
	}
	return c
}

// find is the index of the chunk where address a belongs: the first whose
// last address is not below a (the last chunk if a is beyond them all).
func (e *snapEdit) find(a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(e.s.chunks, a, func(c *chunk, a netip.Addr) int { return e.last(c).Compare(a) })
	return min(i, len(e.s.chunks)-1)
}

// last is c's last address; an edited chunk's lastKey is refreshed only in
// done, so it is read from devs.
func (e *snapEdit) last(c *chunk) netip.Addr {
	if e.cloned[c] {
		return c.devs[len(c.devs)-1].Address
	}
	return c.lastKey
}

// remove takes the device with the id out, wherever it is (active or
// inactive), and uncounts it.
func (e *snapEdit) remove(id string) {
	if d, ok := e.inactive.x.get(id); ok {
		e.inactive.del(id, d)
		if d.Pending {
			e.s.pending--
		} else {
			e.s.expired--
		}
		return
	}
	d, ok := e.byID.x.get(id)
	if !ok {
		return
	}
	e.byID.del(d.ID, d)
	e.byAddr.del(d.Address, d)
	e.byKey.del(d.PublicKey, d)
	i := e.find(d.Address)
	// Equal addresses (rows changed behind the registry's back) may span
	// chunks: look from i on for the pointer itself.
	for ; i < len(e.s.chunks); i++ {
		c := e.s.chunks[i]
		j := slices.Index(c.devs, d)
		if j < 0 {
			continue
		}
		c = e.own(i)
		c.devs = slices.Delete(c.devs, j, j+1)
		if len(c.devs) == 0 {
			delete(e.cloned, c)
			e.s.chunks = slices.Delete(e.s.chunks, i, i+1)
		}
		return
	}
}

// insert puts the active device d into the chunks and indexes.
func (e *snapEdit) insert(d *Device) {
	e.byID.put(d.ID, d)
	e.byAddr.put(d.Address, d)
	e.byKey.put(d.PublicKey, d)
	if len(e.s.chunks) == 0 {
		c := &chunk{devs: []*Device{d}}
		e.s.chunks = append(e.s.chunks, c)
		e.cloned[c] = true
		return
	}
	i := e.find(d.Address)
	c := e.own(i)
	j, _ := slices.BinarySearchFunc(c.devs, d.Address, func(x *Device, a netip.Addr) int { return x.Address.Compare(a) })
	c.devs = slices.Insert(c.devs, j, d)
	if len(c.devs) > maxChunk {
		half := len(c.devs) / 2
		right := &chunk{devs: slices.Clone(c.devs[half:])}
		c.devs = c.devs[:half:half]
		e.cloned[right] = true
		e.s.chunks = slices.Insert(e.s.chunks, i+1, right)
	}
}

// expire moves the active devices expired at now to the inactive ones.
func (e *snapEdit) expire(now time.Time) {
	var gone []*Device
	for _, c := range e.s.chunks {
		if e.cloned[c] {
			c.minExp = newChunk(c.devs).minExp
		}
		if c.minExp.IsZero() || now.Before(c.minExp) {
			continue
		}
		for _, d := range c.devs {
			if expiredAt(*d, now) {
				gone = append(gone, d)
			}
		}
	}
	for _, d := range gone {
		e.remove(d.ID)
		e.inactive.put(d.ID, d)
		e.s.expired++
	}
}

// Generation is the registry generation the snapshot reflects; it grows
// with every change to the registry.
func (s *Snapshot) Generation() int64 {
	if s == nil {
		return 0
	}
	return s.generation
}

// Built is when the snapshot was built, by the registry's clock; expiry was
// judged at that time.
func (s *Snapshot) Built() time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.built
}

// NextExpiry is the earliest expiry among the snapshot's devices, zero when
// none expires. The registry publishes a new snapshot when it passes.
func (s *Snapshot) NextExpiry() time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.nextExpiry
}

// Len is the number of active devices.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// ByAddr finds the active device with the WireGuard address a.
func (s *Snapshot) ByAddr(a netip.Addr) (Device, bool) {
	if s == nil {
		return Device{}, false
	}
	return found(s.byAddr.get(a.Unmap()))
}

// ByKey finds the active device with the WireGuard public key k.
func (s *Snapshot) ByKey(k [32]byte) (Device, bool) {
	if s == nil {
		return Device{}, false
	}
	return found(s.byKey.get(k))
}

// ByID finds the active device with the id.
func (s *Snapshot) ByID(id string) (Device, bool) {
	if s == nil {
		return Device{}, false
	}
	return found(s.byID.get(id))
}

func found(d *Device, ok bool) (Device, bool) {
	if !ok {
		return Device{}, false
	}
	return *d, true
}

// All yields the active devices in address order.
func (s *Snapshot) All() iter.Seq[Device] {
	return func(yield func(Device) bool) {
		if s == nil {
			return
		}
		for _, c := range s.chunks {
			for _, d := range c.devs {
				if !yield(*d) {
					return
				}
			}
		}
	}
}
