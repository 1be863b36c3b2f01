package identity

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// RefreshUserGroups sets the groups of every active device of the user
// (Subject: SubjectOf(issuer, sub), so only a sign-in at the provider
// that enrolled the device counts) to what that sign-in just read from the
// provider (an Access login), and records the time for
// identity.max_group_age. It is for providers without SCIM: with SCIM,
// SetUserGroups keeps groups current. It returns the devices it changed.
func (r *Registry) RefreshUserGroups(ctx context.Context, subject string, groups []string) ([]Device, error) {
	op := "refresh groups at sign-in"
	groups, err := normalizeGroups(groups)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	now := r.clock()
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, unavailable(op+": begin", err)
	}
	defer tx.Rollback()
	devs, err := queryTx(ctx, tx, `SELECT `+deviceCols+` FROM devices WHERE subject = $1 AND NOT revoked`, subject)
	if err != nil {
		return nil, unavailable(op, err)
	}
	if len(devs) == 0 {
		return nil, nil
	}
	for i := range devs {
		devs[i].Groups = groups
		// The time moves even when the groups do not.
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET groups_json = $2, groups_us = $3 WHERE id = $1`, devs[i].ID, groupsText(groups), now.UnixMicro()); err != nil {
			return nil, unavailable(op+": "+devs[i].ID, err)
		}
		if err := bumpGeneration(ctx, tx, devs[i].ID); err != nil {
			return nil, unavailable(op+": bump generation", err)
		}
	}
	if err := r.commit(ctx, tx); err != nil {
		return nil, unavailable(op+": commit", err)
	}
	for _, d := range devs {
		r.log.Info("device groups refreshed at sign-in", "device", d.ID, "email", d.Email, "groups", d.Groups)
	}
	r.poke()
	return devs, nil
}

// queryTx reads devices in tx.
func queryTx(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]Device, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ClearStaleGroups drops the groups of the active devices whose groups a
// sign-in set before `before` (identity.max_group_age): policies then see
// the user without groups until they sign in again. It returns the
// devices it changed.
func (r *Registry) ClearStaleGroups(ctx context.Context, before time.Time) ([]Device, error) {
	const op = "clear stale groups"
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, unavailable(op+": begin", err)
	}
	defer tx.Rollback()
	devs, err := queryTx(ctx, tx, `SELECT `+deviceCols+` FROM devices
		WHERE NOT revoked AND groups_json <> '[]' AND COALESCE(groups_us, created_us) < $1`, dbTime(before).UnixMicro())
	if err != nil {
		return nil, unavailable(op, err)
	}
	if len(devs) == 0 {
		return nil, nil
	}
	for i := range devs {
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET groups_json = '[]' WHERE id = $1`, devs[i].ID); err != nil {
			return nil, unavailable(op+": "+devs[i].ID, err)
		}
		if err := bumpGeneration(ctx, tx, devs[i].ID); err != nil {
			return nil, unavailable(op+": bump generation", err)
		}
	}
	if err := r.commit(ctx, tx); err != nil {
		return nil, unavailable(op+": commit", err)
	}
	for i := range devs {
		r.log.Info("device groups dropped: not refreshed by a sign-in within identity.max_group_age", "device", devs[i].ID, "email", devs[i].Email, "groups", devs[i].Groups)
		devs[i].Groups = []string{}
	}
	r.poke()
	return slices.Clip(devs), nil
}

// RunGroupExpiry calls ClearStaleGroups every few seconds with the cutoff
// maxAge before now, until ctx ends. A failing database is logged and
// retried at the next tick.
func (r *Registry) RunGroupExpiry(ctx context.Context, maxAge time.Duration, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := r.ClearStaleGroups(ctx, r.now().Add(-maxAge)); err != nil && ctx.Err() == nil {
			r.log.Error("identity.max_group_age: clear stale groups", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
