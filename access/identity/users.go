package identity

// A user's devices, changed together: what an identity provider's
// provisioning (SCIM) asks for when it deactivates a user or changes
// their groups.

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// RevokeUser revokes every active device enrolled with one of emails (the
// addresses an identity provider knows the user by, compared without
// regard to case, since providers and tokens disagree on it): the user
// was deactivated or deleted at the provider. It returns the devices it
// revoked, none when the user has none; all or nothing is written.
// Errors: ErrInvalid, ErrUnavailable.
func (r *Registry) RevokeUser(ctx context.Context, emails []string) ([]Device, error) {
	return r.changeUser(ctx, "revoke devices of "+strings.Join(emails, ","), emails, func(d *Device) (bool, error) {
		d.Revoked, d.RevokedAt = true, r.clock()
		return true, nil
	}, func(ctx context.Context, tx *sql.Tx, d Device) error {
		_, err := tx.ExecContext(ctx, `UPDATE devices SET revoked = $2, revoked_us = $3 WHERE id = $1`, d.ID, true, d.RevokedAt.UnixMicro())
		return err
	})
}

// SetUserGroups sets the groups of every active device enrolled with one
// of emails (compared without regard to case): the provider changed the
// user's group memberships, and the devices' groups follow without a
// re-enrollment. Devices whose groups already match are not written. It
// returns the devices it changed. Errors: ErrInvalid, ErrUnavailable.
func (r *Registry) SetUserGroups(ctx context.Context, emails, groups []string) ([]Device, error) {
	groups, err := normalizeGroups(groups)
	if err != nil {
		return nil, err
	}
	return r.changeUser(ctx, "set groups of "+strings.Join(emails, ","), emails, func(d *Device) (bool, error) {
		if slices.Equal(d.Groups, groups) {
			return false, nil
		}
		d.Groups = slices.Clone(groups)
		return true, nil
	}, func(ctx context.Context, tx *sql.Tx, d Device) error {
		_, err := tx.ExecContext(ctx, `UPDATE devices SET groups_json = $2 WHERE id = $1`, d.ID, groupsText(d.Groups))
		return err
	})
}

// changeUser runs change on each active device of the user in one
// transaction and writes (with a generation bump) those it changed.
func (r *Registry) changeUser(ctx context.Context, op string, emails []string,
	change func(*Device) (bool, error), write func(context.Context, *sql.Tx, Device) error) ([]Device, error) {
	if len(emails) == 0 || len(emails) > maxUserEmails {
		return nil, fmt.Errorf("%s: %w: %d email addresses (1 to %d)", op, ErrInvalid, len(emails), maxUserEmails)
	}
	args := make([]any, 0, len(emails))
	ph := make([]string, 0, len(emails))
	for _, e := range emails {
		if err := checkText("email", e, maxEmailLen); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
		}
		args = append(args, strings.ToLower(e))
		ph = append(ph, fmt.Sprintf("$%d", len(args)))
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, unavailable(op+": begin", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE NOT revoked AND lower(email) IN (`+strings.Join(ph, ", ")+`) ORDER BY created_us, id`, args...)
	if err != nil {
		return nil, unavailable(op, err)
	}
	var devs []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return nil, unavailable(op, err)
		}
		devs = append(devs, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, unavailable(op, err)
	}
	var changed []Device
	for _, d := range devs {
		ok, err := change(&d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		if !ok {
			continue
		}
		if err := write(ctx, tx, d); err != nil {
			return nil, unavailable(op+": write device "+d.ID, err)
		}
		if err := bumpGeneration(ctx, tx, d.ID); err != nil {
			return nil, unavailable(op+": bump generation", err)
		}
		changed = append(changed, d)
	}
	if len(changed) == 0 {
		return nil, nil
	}
	if err := r.commit(ctx, tx); err != nil {
		return nil, unavailable(op+": commit", err)
	}
	for _, d := range changed {
		r.log.Info(op, "device", d.ID, "name", d.Name, "email", d.Email, "groups", d.Groups, "revoked", d.Revoked)
	}
	r.poke()
	return changed, nil
}
