package identity

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"time"
)

// Access logouts
//
// A logout at the Access proxy refuses the user's session cookies issued
// before it. An HA pair shares the cookie key, so a logout (or a SCIM
// deactivation, which ends sessions the same way) made on one node must
// be known to the other before a failover hands it the user. The registry
// both nodes already share carries them: RecordLogouts writes them with a
// new generation, and each appliance's snapshot picks them up on its next
// poll, as it picks up devices. The keys are Access's and opaque here.

// RecordLogouts records logouts (key -> logout time in Unix ms) for every
// appliance sharing the database: a key's time only ever moves forward.
// Rows older than forgetBefore are deleted in the same transaction (no
// session outlives them). Nothing is written when every logout is already
// known at that time or later.
func (r *Registry) RecordLogouts(ctx context.Context, logouts map[string]int64, forgetBefore time.Time) error {
	if s := r.snap.Load(); s != nil {
		fresh := false
		for k, t := range logouts {
			if s.logouts[k] < t {
				fresh = true
				break
			}
		}
		if !fresh {
			return nil
		}
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return unavailable("record logouts: begin", err)
	}
	defer tx.Rollback()
	var gen int64
	if err := tx.QueryRowContext(ctx, `UPDATE registry_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation`).Scan(&gen); err != nil {
		return unavailable("record logouts: bump generation", err)
	}
	for k, t := range logouts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO access_logouts (user_key, logout_ms, changed_gen) VALUES ($1, $2, $3)
			ON CONFLICT (user_key) DO UPDATE SET logout_ms = excluded.logout_ms, changed_gen = excluded.changed_gen
			WHERE access_logouts.logout_ms < excluded.logout_ms`, logoutKey(k), t, gen); err != nil {
			return unavailable("record logouts", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM access_logouts WHERE logout_ms < $1`, forgetBefore.UnixMilli()); err != nil {
		return unavailable("record logouts: forget old ones", err)
	}
	if err := r.commit(ctx, tx); err != nil {
		return unavailable("record logouts: commit", err)
	}
	// Published before returning, so a caller comparing its logouts with
	// the snapshot's does not write the same ones again.
	if err := r.Refresh(ctx); err != nil {
		r.poke()
	}
	return nil
}

// logoutKey is how a key is stored: Access's keys hold NUL bytes, which
// PostgreSQL's TEXT cannot.
func logoutKey(k string) string { return base64.RawURLEncoding.EncodeToString([]byte(k)) }

// loadLogouts returns the logouts of the generations after since, up to
// gen (since < 0: every row), merged over base, which is not changed; base
// itself when nothing changed.
func (r *Registry) loadLogouts(ctx context.Context, base map[string]int64, since, gen int64) (map[string]int64, error) {
	q, args := `SELECT user_key, logout_ms FROM access_logouts WHERE changed_gen > $1 AND changed_gen <= $2`, []any{since, gen}
	if since < 0 {
		q, args = `SELECT user_key, logout_ms FROM access_logouts`, nil
		base = nil
	}
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, unavailable("load logouts", err)
	}
	defer rows.Close()
	out, cloned := base, false
	for rows.Next() {
		var k string
		var t int64
		if err := rows.Scan(&k, &t); err != nil {
			return nil, unavailable("load logouts", err)
		}
		b, err := base64.RawURLEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("load logouts: key %q: %w", k, err)
		}
		if !cloned { // base belongs to a published snapshot
			out, cloned = maps.Clone(base), true
			if out == nil {
				out = map[string]int64{}
			}
		}
		out[string(b)] = max(out[string(b)], t)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("load logouts", err)
	}
	return out, nil
}

// Logouts returns the logouts every appliance recorded, key -> Unix ms;
// nil when none. The map is the snapshot's: read it, never change it.
func (s *Snapshot) Logouts() map[string]int64 {
	if s == nil {
		return nil
	}
	return s.logouts
}
