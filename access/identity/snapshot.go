package identity

import (
	"iter"
	"net/netip"
	"slices"
	"time"
)

// Snapshot is the set of active devices (not revoked, not expired when it
// was built) at one registry generation. It never changes after it is
// published, so the packet, DNS and flow paths read it without locks. The
// Device values it hands out share their Groups slices with the snapshot:
// callers must not modify them.
//
// A nil *Snapshot is empty.
type Snapshot struct {
	generation int64
	built      time.Time
	devices    []Device // sorted by address
	byAddr     map[netip.Addr]int32
	byKey      map[[32]byte]int32
	byID       map[string]int32
	nextExpiry time.Time // the earliest Expires among devices; zero if none expire

	// Counts by state for metrics; revoked comes from the database.
	expired, revoked, pending int
}

// newSnapshot builds the snapshot of devs (in any order) as of now;
// revoked and expired devices are counted and left out.
func newSnapshot(generation int64, now time.Time, devs []Device) *Snapshot {
	s := &Snapshot{generation: generation, built: now}
	active := make([]Device, 0, len(devs))
	for _, d := range devs {
		if d.Revoked {
			s.revoked++
			continue
		}
		if d.Pending {
			s.pending++
			continue
		}
		if !d.Expires.IsZero() && !now.Before(d.Expires) {
			s.expired++
			continue
		}
		active = append(active, d)
	}
	slices.SortFunc(active, func(a, b Device) int { return a.Address.Compare(b.Address) })
	s.devices = active
	s.byAddr = make(map[netip.Addr]int32, len(active))
	s.byKey = make(map[[32]byte]int32, len(active))
	s.byID = make(map[string]int32, len(active))
	for i, d := range active {
		s.byAddr[d.Address] = int32(i)
		s.byKey[d.PublicKey] = int32(i)
		s.byID[d.ID] = int32(i)
		if !d.Expires.IsZero() && (s.nextExpiry.IsZero() || d.Expires.Before(s.nextExpiry)) {
			s.nextExpiry = d.Expires
		}
	}
	return s
}

// expire returns s without the devices expired at now, at the same
// generation, or s itself when none has. It needs no database, so devices
// stop working at their expiry even while the database is down.
func (s *Snapshot) expire(now time.Time) *Snapshot {
	if s.nextExpiry.IsZero() || now.Before(s.nextExpiry) {
		return s
	}
	n := newSnapshot(s.generation, now, s.devices)
	n.expired += s.expired
	n.revoked = s.revoked
	return n
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
	return len(s.devices)
}

// ByAddr finds the active device with the WireGuard address a.
func (s *Snapshot) ByAddr(a netip.Addr) (Device, bool) {
	if s == nil {
		return Device{}, false
	}
	i, ok := s.byAddr[a.Unmap()]
	if !ok {
		return Device{}, false
	}
	return s.devices[i], true
}

// ByKey finds the active device with the WireGuard public key k.
func (s *Snapshot) ByKey(k [32]byte) (Device, bool) {
	if s == nil {
		return Device{}, false
	}
	i, ok := s.byKey[k]
	if !ok {
		return Device{}, false
	}
	return s.devices[i], true
}

// ByID finds the active device with the id.
func (s *Snapshot) ByID(id string) (Device, bool) {
	if s == nil {
		return Device{}, false
	}
	i, ok := s.byID[id]
	if !ok {
		return Device{}, false
	}
	return s.devices[i], true
}

// All yields the active devices in address order.
func (s *Snapshot) All() iter.Seq[Device] {
	return func(yield func(Device) bool) {
		if s == nil {
			return
		}
		for _, d := range s.devices {
			if !yield(d) {
				return
			}
		}
	}
}
