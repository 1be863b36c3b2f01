package identity

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migration is one forward step of the schema. Steps are never edited once
// released: a change is a new step. The statements run in one transaction
// with the row that records them, so a step is applied whole or not at all.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations is the schema history. Version 1 was the first registry
// schema; version 2 moved address uniqueness into the database (a partial
// unique index over non-revoked devices, so two appliances can never hand
// out one address) and added the revocation time and the generation
// counter that other appliances poll; version 3 records in each row the
// generation that last changed it; version 4 indexes active devices by
// their lower-case email; version 5 adds the pending state of devices
// that wait for an admin's approval; version 6 adds device posture
// (the quarantined flag and the last report); version 7 shares Access
// logouts between the appliances of a pair; version 8 keeps on each
// device the posture attributes rules match on (device.posture.*).
var migrations = []migration{
	{1, "devices", []string{
		`CREATE TABLE devices (
			id           TEXT PRIMARY KEY,
			name         TEXT NOT NULL,
			email        TEXT NOT NULL,
			subject      TEXT NOT NULL,
			groups_json  TEXT NOT NULL,
			public_key   TEXT NOT NULL,
			address      TEXT NOT NULL,
			created_us   BIGINT NOT NULL,
			last_seen_us BIGINT,
			expires_us   BIGINT,
			revoked      BOOLEAN NOT NULL DEFAULT FALSE
		)`,
		`CREATE UNIQUE INDEX devices_public_key ON devices (public_key)`,
		`CREATE INDEX devices_subject ON devices (subject)`,
		`CREATE INDEX devices_address ON devices (address)`,
	}},
	{2, "active address unique, generation counter", []string{
		`ALTER TABLE devices ADD COLUMN revoked_us BIGINT`,
		`DROP INDEX devices_address`,
		`CREATE UNIQUE INDEX devices_active_address ON devices (address) WHERE NOT revoked`,
		`CREATE TABLE registry_generation (
			id         INTEGER PRIMARY KEY CHECK (id = 1),
			generation BIGINT NOT NULL
		)`,
		`INSERT INTO registry_generation (id, generation) VALUES (1, 1)`,
	}},
	{3, "per-device change generation", []string{
		// Lets an appliance read only what changed since the generation
		// it holds instead of every device on every change.
		`ALTER TABLE devices ADD COLUMN changed_gen BIGINT NOT NULL DEFAULT 0`,
		`CREATE INDEX devices_changed_gen ON devices (changed_gen)`,
	}},
	{4, "active devices by email", []string{
		// RevokeUser and SetUserGroups find a user's devices by address
		// without regard to case (an identity provider's SCIM changes);
		// without it each change scans every device.
		`CREATE INDEX devices_active_email ON devices (lower(email)) WHERE NOT revoked`,
	}},
	{5, "pending devices", []string{
		// enrollment.approval: admin registers new devices pending: they
		// hold an address but stay out of every snapshot until approved.
		`ALTER TABLE devices ADD COLUMN pending BOOLEAN NOT NULL DEFAULT FALSE`,
	}},
	{6, "device posture", []string{
		// A quarantined device keeps its tunnel but the firewall gives it
		// only what remediation needs (posture:); the flag is in the row,
		// so it travels with the snapshot to every appliance.
		`ALTER TABLE devices ADD COLUMN quarantined BOOLEAN NOT NULL DEFAULT FALSE`,
		// The last accepted report per device, apart from the devices
		// table: a report that changes nothing writes here without
		// bumping the generation.
		// When a sign-in last set the device's groups (NULL: at
		// creation), for identity.max_group_age.
		`ALTER TABLE devices ADD COLUMN groups_us BIGINT`,
		`CREATE TABLE device_posture (
			device_id   TEXT PRIMARY KEY,
			report_json TEXT NOT NULL,
			reported_us BIGINT NOT NULL,
			received_us BIGINT NOT NULL
		)`,
	}},
	{7, "access logouts", []string{
		// A logout (or a SCIM deactivation) on one appliance must hold on
		// the other after a failover: the session cookie is the pair's.
		// user_key is opaque to the registry (Access's revocation key,
		// base64url); logout_ms only grows; changed_gen as for devices.
		`CREATE TABLE access_logouts (
			user_key    TEXT PRIMARY KEY,
			logout_ms   BIGINT NOT NULL,
			changed_gen BIGINT NOT NULL
		)`,
		`CREATE INDEX access_logouts_changed_gen ON access_logouts (changed_gen)`,
	}},
	{8, "device posture attributes", []string{
		// On the devices row, so the snapshot loads them with the device
		// and a change moves its changed_gen; the JSON of postureText,
		// '' for none. The full report stays in device_posture.
		`ALTER TABLE devices ADD COLUMN posture_json TEXT NOT NULL DEFAULT ''`,
	}},
}

// schemaVersion is the version this build writes.
func schemaVersion() int { return migrations[len(migrations)-1].version }

// migrationLockKey is the PostgreSQL advisory lock that serializes
// migrations when several appliances start at once against one database
// ("edgegw-i" as a big-endian integer; any constant would do).
const migrationLockKey int64 = 0x6564676577692d69

// migrate brings the schema to version `to` (schemaVersion() outside
// tests). It refuses a database newer than this build: running old code
// on a new schema could write rows the new code misreads.
func migrate(ctx context.Context, db *sql.DB, d dialect, to int, now time.Time) (from int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, unavailable("begin migration", err)
	}
	defer tx.Rollback()
	if d == dialectPostgres {
		// Held until commit or rollback; the second appliance waits here
		// and then finds the schema current. SQLite needs nothing more: the
		// transaction is BEGIN IMMEDIATE, which already excludes writers.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return 0, unavailable("take the migration lock", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_us BIGINT NOT NULL
	)`); err != nil {
		return 0, unavailable("create schema_migrations", err)
	}
	var cur sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&cur); err != nil {
		return 0, unavailable("read schema version", err)
	}
	from = int(cur.Int64)
	if from > schemaVersion() {
		return from, fmt.Errorf("the device registry schema is version %d, newer than this edgegw understands (%d): upgrade edgegw", from, schemaVersion())
	}
	applied := false
	for _, m := range migrations {
		if m.version <= from || m.version > to {
			continue
		}
		for _, s := range m.stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return from, fmt.Errorf("schema migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_us) VALUES ($1, $2, $3)`,
			m.version, m.name, now.UnixMicro()); err != nil {
			return from, fmt.Errorf("record schema migration %d: %w", m.version, err)
		}
		applied = true
	}
	if !applied {
		return from, nil
	}
	if err := tx.Commit(); err != nil {
		return from, unavailable("commit schema migrations", err)
	}
	return from, nil
}
