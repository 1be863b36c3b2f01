package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrNotPending is returned by Approve for a device that is revoked.
var ErrNotPending = errors.New("device is revoked; it cannot be approved")

// Approve lets a pending device in: it joins the next snapshot, and so
// the WireGuard peers and identity sets. Approving an approved device
// returns it unchanged. Errors: ErrNotFound, ErrNotPending (revoked),
// ErrUnavailable.
func (r *Registry) Approve(ctx context.Context, id string) (Device, error) {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return Device{}, unavailable("approve "+id+": begin", err)
	}
	defer tx.Rollback()
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("approve device %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, unavailable("approve "+id, err)
	}
	if d.Revoked {
		return Device{}, fmt.Errorf("approve device %q: %w", id, ErrNotPending)
	}
	if !d.Pending {
		return d, nil
	}
	d.Pending = false
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET pending = $2 WHERE id = $1`, id, false); err != nil {
		return Device{}, unavailable("approve "+id, err)
	}
	if err := bumpGeneration(ctx, tx, id); err != nil {
		return Device{}, unavailable("approve "+id+": bump generation", err)
	}
	if err := r.commit(ctx, tx); err != nil {
		return Device{}, unavailable("approve "+id+": commit", err)
	}
	r.log.Info("device approved", "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address)
	r.poke()
	return d, nil
}
