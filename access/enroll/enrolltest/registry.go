package enrolltest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/edgegw/edgegw/access/identity"
)

// Registry is an in-memory device registry with the semantics of
// identity.DeviceStore: a key is one device of one subject, the same key and
// subject re-enroll in place, a revoked device stays revoked, addresses come
// from a fixed pool and return to it on revocation. Down makes every call
// fail with identity.ErrUnavailable.
type Registry struct {
	mu      sync.Mutex
	pool    []netip.Addr
	devices []identity.Device
	next    int
	down    bool
	now     func() time.Time
}

// NewRegistry makes a registry handing out size addresses after first.
func NewRegistry(first netip.Addr, size int) *Registry {
	r := &Registry{now: time.Now}
	a := first
	for range size {
		r.pool = append(r.pool, a)
		a = a.Next()
	}
	return r
}

// SetDown makes the registry unreachable (true) or reachable again.
func (r *Registry) SetDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *Registry) check() error {
	if r.down {
		return fmt.Errorf("connect to the test database: %w", identity.ErrUnavailable)
	}
	return nil
}

// Enroll implements the registry's Enroll.
func (r *Registry) Enroll(ctx context.Context, e identity.Enrollment) (identity.Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(); err != nil {
		return identity.Device{}, err
	}
	now := r.now()
	for i, d := range r.devices {
		if d.PublicKey != e.PublicKey {
			continue
		}
		if d.Subject != e.Subject {
			return identity.Device{}, fmt.Errorf("enroll key of device %s: %w", d.ID, identity.ErrKeyInUse)
		}
		if d.Revoked {
			return identity.Device{}, fmt.Errorf("enroll device %s: %w", d.ID, identity.ErrRevoked)
		}
		d.Name, d.Email, d.Groups, d.Expires, d.LastSeen = e.Name, e.Email, slices.Clone(e.Groups), e.Expires, now
		r.devices[i] = d
		return d, nil
	}
	addr, ok := r.freeLocked()
	if !ok {
		return identity.Device{}, fmt.Errorf("enroll %q: %d addresses in use: %w", e.Name, len(r.pool), identity.ErrPoolExhausted)
	}
	r.next++
	d := identity.Device{
		ID: fmt.Sprintf("dev_test%06d", r.next), Name: e.Name, Email: e.Email, Subject: e.Subject,
		Groups: slices.Clone(e.Groups), PublicKey: e.PublicKey, Address: addr,
		Created: now, LastSeen: now, Expires: e.Expires, Pending: e.Pending,
	}
	r.devices = append(r.devices, d)
	return d, nil
}

func (r *Registry) freeLocked() (netip.Addr, bool) {
	for _, a := range r.pool {
		if !slices.ContainsFunc(r.devices, func(d identity.Device) bool { return !d.Revoked && d.Address == a }) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Revoke implements the registry's Revoke; revoking twice is no error.
func (r *Registry) Revoke(ctx context.Context, id string) (identity.Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(); err != nil {
		return identity.Device{}, err
	}
	for i, d := range r.devices {
		if d.ID == id {
			if !d.Revoked {
				d.Revoked, d.RevokedAt = true, r.now()
				r.devices[i] = d
			}
			return d, nil
		}
	}
	return identity.Device{}, fmt.Errorf("revoke %q: %w", id, identity.ErrNotFound)
}

// Approve implements the registry's Approve: a pending device becomes
// approved; a revoked one cannot.
func (r *Registry) Approve(ctx context.Context, id string) (identity.Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(); err != nil {
		return identity.Device{}, err
	}
	for i, d := range r.devices {
		if d.ID == id {
			if d.Revoked {
				return identity.Device{}, fmt.Errorf("approve %q: %w", id, identity.ErrNotPending)
			}
			d.Pending = false
			r.devices[i] = d
			return d, nil
		}
	}
	return identity.Device{}, fmt.Errorf("approve %q: %w", id, identity.ErrNotFound)
}

// Get implements the registry's Get.
func (r *Registry) Get(ctx context.Context, id string) (identity.Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(); err != nil {
		return identity.Device{}, err
	}
	for _, d := range r.devices {
		if d.ID == id {
			return d, nil
		}
	}
	return identity.Device{}, fmt.Errorf("device %q: %w", id, identity.ErrNotFound)
}

// List implements the registry's List.
func (r *Registry) List(ctx context.Context) ([]identity.Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(); err != nil {
		return nil, err
	}
	return slices.Clone(r.devices), nil
}
