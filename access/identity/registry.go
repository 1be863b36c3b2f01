package identity

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Registry.
type Options struct {
	// Store is identity.store: "sqlite" (or empty) for a file in StateDir,
	// or a postgres:// URL shared by every appliance of a fleet.
	Store    string
	StateDir string
	// Pool is the WireGuard address range devices get addresses from
	// (tunnels.wireguard.address; host bits are ignored).
	Pool netip.Prefix
	// Reserved addresses are never handed out: the gateway's own address
	// and the static peers' addresses.
	Reserved []netip.Addr
	Logger   *slog.Logger
	// Now is the clock for creation, expiry and revocation times; time.Now
	// when nil.
	Now func() time.Time
	// Poll is how often Run checks the database for changes made by other
	// appliances and for expiries; 1 s when zero.
	Poll time.Duration
}

// Registry is the device registry: the database of enrolled devices and the
// current Snapshot of the active ones. Its methods are safe for concurrent
// use. Writes go straight to the database; the snapshot follows through Run
// (or Refresh).
type Registry struct {
	db    *sql.DB
	d     dialect
	desc  string
	log   *slog.Logger
	now   func() time.Time
	poll  time.Duration
	pool  netip.Prefix
	resv  map[netip.Addr]bool
	first netip.Addr // the pool's first and last addresses
	last  netip.Addr

	// enrollMu serializes this instance's enrollments (other appliances
	// race through the database) and guards cursor, the last address
	// handed out (at Open, the newest device's): allocation continues
	// after it, so a freed address goes back into use only when allocation
	// wraps around the pool, not at the next enrollment.
	enrollMu sync.Mutex
	cursor   netip.Addr

	snap     atomic.Pointer[Snapshot]
	pubMu    sync.Mutex // serializes publishing and subscriber calls
	subs     map[int]func(*Snapshot)
	nextSub  int
	nudge    chan struct{}
	lastFull time.Time     // when sync last read every device; guarded by pubMu
	list     listIndex     // what Page filters (page.go)
	ckpt     *checkpointer // SQLite's background checkpoints (store.go)

	syncErrors   atomic.Uint64
	retries      atomic.Uint64
	lastSync     atomic.Int64 // unix nanoseconds of the last successful poll
	syncFailing  atomic.Bool
	closeOnce    sync.Once
	closeErr     error
	beforeCommit func(context.Context, *sql.Tx) error // test hook: runs just before a write commits
}

// maxAttempts bounds the retries of an enrollment that collided with
// another appliance's on a unique index.
const maxAttempts = 20

// Open opens (creating or migrating forward) the registry's database and
// loads the first snapshot. The caller owns the Registry: it runs Run and
// calls Close.
func Open(ctx context.Context, o Options) (*Registry, error) {
	if !o.Pool.IsValid() {
		return nil, fmt.Errorf("%w: no WireGuard address range to allocate device addresses from", ErrInvalid)
	}
	pool := o.Pool.Masked()
	if pool.Addr().Is4In6() {
		pool = netip.PrefixFrom(pool.Addr().Unmap(), pool.Bits()-96)
	}
	r := &Registry{
		log:   o.Logger,
		now:   o.Now,
		poll:  o.Poll,
		pool:  pool,
		resv:  map[netip.Addr]bool{},
		subs:  map[int]func(*Snapshot){},
		nudge: make(chan struct{}, 1),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.poll <= 0 {
		r.poll = time.Second
	}
	for _, a := range o.Reserved {
		r.resv[a.Unmap()] = true
	}
	r.first = pool.Addr()
	r.last = lastAddr(pool)
	db, d, desc, err := openStore(o.Store, o.StateDir)
	if err != nil {
		return nil, err
	}
	r.db, r.d, r.desc = db, d, desc
	r.log = r.log.With("store", d.String())
	if h := StoreUnverified(o.Store); h != "" {
		// The config check lets this through only with store_tls: disable.
		r.log.Warn("the device registry's PostgreSQL server is reached without verified TLS (identity.store_tls: disable): whoever can see or divert that traffic can read and change devices", "host", h)
	}
	from, err := migrate(ctx, db, d, schemaVersion(), r.clock())
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open device registry (%s): %w", desc, err)
	}
	if from != schemaVersion() {
		r.log.Info("device registry schema migrated", "from", from, "to", schemaVersion())
	}
	if err := r.Refresh(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open device registry (%s): %w", desc, err)
	}
	// Continue after the newest device's address, so a restart does not
	// hand out the lowest recently freed address first.
	r.cursor = r.first
	var newest string
	err = db.QueryRowContext(ctx, `SELECT address FROM devices ORDER BY created_us DESC, id LIMIT 1`).Scan(&newest)
	if a, perr := netip.ParseAddr(newest); err == nil && perr == nil && r.pool.Contains(a) {
		r.cursor = a
	}
	r.ckpt = startCheckpointer(ctx, db, d)
	return r, nil
}

// Close closes the database. It is idempotent; Run must have returned.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() { r.ckpt.close(); r.closeErr = r.db.Close() })
	return r.closeErr
}

// clock is Now at the database's precision.
func (r *Registry) clock() time.Time { return dbTime(r.now()) }

// Snapshot is the current snapshot of active devices; never nil after Open.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// deviceCols is the column list every query reads devices with.
const deviceCols = `id, name, email, subject, groups_json, public_key, address, created_us, last_seen_us, expires_us, revoked, revoked_us, pending, quarantined, posture_json`

type scanner interface{ Scan(...any) error }

func scanDevice(sc scanner) (Device, error) {
	var (
		d                      Device
		groups, key, addr      string
		posture                string
		created                int64
		lastSeen, exp, revoked sql.NullInt64
	)
	if err := sc.Scan(&d.ID, &d.Name, &d.Email, &d.Subject, &groups, &key, &addr, &created, &lastSeen, &exp, &d.Revoked, &revoked, &d.Pending, &d.Quarantined, &posture); err != nil {
		return Device{}, err
	}
	if err := json.Unmarshal([]byte(groups), &d.Groups); err != nil {
		return Device{}, fmt.Errorf("device %s: stored groups: %w", d.ID, err)
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(k) != 32 {
		return Device{}, fmt.Errorf("device %s: stored public key %q is not 32 bytes of base64", d.ID, key)
	}
	copy(d.PublicKey[:], k)
	if d.Posture, err = postureFromText(posture); err != nil {
		return Device{}, fmt.Errorf("device %s: %w", d.ID, err)
	}
	if d.Address, err = netip.ParseAddr(addr); err != nil {
		return Device{}, fmt.Errorf("device %s: stored address: %w", d.ID, err)
	}
	d.Created = fromMicro(sql.NullInt64{Int64: created, Valid: true})
	d.LastSeen, d.Expires, d.RevokedAt = fromMicro(lastSeen), fromMicro(exp), fromMicro(revoked)
	return d, nil
}

func fromMicro(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func toMicro(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func keyText(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }

func groupsText(g []string) string {
	if g == nil {
		g = []string{}
	}
	b, _ := json.Marshal(g) // []string always marshals
	return string(b)
}

// bumpGeneration is part of every write transaction: other appliances poll
// the counter to learn that something changed, then read the devices whose
// changed_gen is newer than what they hold. The counter's row stays locked
// until commit, so generations are handed out in commit order: a reader
// that sees generation g sees every change up to g.
func bumpGeneration(ctx context.Context, tx *sql.Tx, id string) error {
	var gen int64
	if err := tx.QueryRowContext(ctx, `UPDATE registry_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation`).Scan(&gen); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE devices SET changed_gen = $2 WHERE id = $1`, id, gen)
	return err
}

// commit runs the test hook, then commits.
func (r *Registry) commit(ctx context.Context, tx *sql.Tx) error {
	if r.beforeCommit != nil {
		if err := r.beforeCommit(ctx, tx); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Enroll registers the device in e. The same public key with the same
// subject re-enrolls: the device keeps its ID and address (unless the
// address has left the pool) and takes the new name, email, groups and
// expiry; an expired device comes back to life this way. Errors:
// ErrInvalid, ErrKeyInUse (the key belongs to another subject),
// ErrRevoked (this key was revoked: enroll a new one), ErrPoolExhausted,
// ErrUnavailable. On any error nothing was written.
func (r *Registry) Enroll(ctx context.Context, e Enrollment) (Device, error) {
	e, err := e.normalize(r.clock())
	if err != nil {
		return Device{}, err
	}
	r.enrollMu.Lock()
	defer r.enrollMu.Unlock()
	for range maxAttempts {
		d, created, err := r.enrollOnce(ctx, e)
		if isUniqueViolation(err) {
			// Another appliance took this address or enrolled this key
			// between our read and our write; its row is visible now.
			r.retries.Add(1)
			continue
		}
		if err != nil {
			return Device{}, err
		}
		verb := "device re-enrolled"
		if created {
			verb = "device enrolled"
		}
		r.log.Info(verb, "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address, "expires", d.Expires)
		r.poke()
		return d, nil
	}
	return Device{}, fmt.Errorf("enroll device %q for %s: %d attempts collided with other appliances: %w", e.Name, e.Email, maxAttempts, ErrUnavailable)
}

func (r *Registry) enrollOnce(ctx context.Context, e Enrollment) (Device, bool, error) {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return Device{}, false, unavailable("enroll: begin", err)
	}
	defer tx.Rollback()
	if r.d == dialectPostgres {
		// Take the generation row's lock, which the commit's generation
		// bump would take anyway, before reading: enrollments across the
		// fleet then queue here, and each reads the addresses the one
		// before it committed (READ COMMITTED takes a fresh snapshot per
		// statement) instead of picking the same free address and losing
		// on the unique index, which two appliances enrolling in lockstep
		// could do again on every retry. SQLite's immediate transactions
		// already serialize writers.
		if _, err := tx.ExecContext(ctx, `SELECT generation FROM registry_generation WHERE id = 1 FOR UPDATE`); err != nil {
			return Device{}, false, unavailable("enroll: lock the registry", err)
		}
	}
	now := r.clock()
	key := keyText(e.PublicKey)
	old, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE public_key = $1`, key))
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Device{}, false, unavailable("enroll: look up key", err)
	}
	if found {
		switch {
		case old.Subject != e.Subject:
			return Device{}, false, fmt.Errorf("enroll key %s for %s: %w (device %s)", key, e.Email, ErrKeyInUse, old.ID)
		case old.Revoked:
			return Device{}, false, fmt.Errorf("enroll key %s: device %s was revoked at %s: %w; enroll with a new key",
				key, old.ID, old.RevokedAt.Format(time.RFC3339), ErrRevoked)
		}
	}
	d := Device{
		ID: NewDeviceID(), Name: e.Name, Email: e.Email, Subject: e.Subject, Groups: e.Groups,
		PublicKey: e.PublicKey, Created: now, Expires: e.Expires, Pending: e.Pending,
	}
	if found {
		// A renewal keeps the device's approval state: approved stays
		// approved, pending stays pending.
		d.ID, d.Created, d.LastSeen, d.Address, d.Pending = old.ID, old.Created, old.LastSeen, old.Address, old.Pending
	}
	if !found || !r.usable(d.Address) {
		if d.Address, err = r.allocate(ctx, tx); err != nil {
			return Device{}, false, fmt.Errorf("enroll device %q for %s: %w", e.Name, e.Email, err)
		}
	}
	if found {
		_, err = tx.ExecContext(ctx, `UPDATE devices SET name = $2, email = $3, groups_json = $4, address = $5, expires_us = $6 WHERE id = $1`,
			d.ID, d.Name, d.Email, groupsText(d.Groups), d.Address.String(), toMicro(d.Expires))
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			d.ID, d.Name, d.Email, d.Subject, groupsText(d.Groups), key, d.Address.String(),
			d.Created.UnixMicro(), toMicro(d.LastSeen), toMicro(d.Expires), false, sql.NullInt64{}, d.Pending, false, "")
	}
	if err != nil {
		if isUniqueViolation(err) {
			return Device{}, false, err
		}
		return Device{}, false, unavailable("enroll: write device", err)
	}
	// The sign-in just read the user's groups (identity.max_group_age).
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET groups_us = $2 WHERE id = $1`, d.ID, now.UnixMicro()); err != nil {
		return Device{}, false, unavailable("enroll: write groups time", err)
	}
	if err := bumpGeneration(ctx, tx, d.ID); err != nil {
		return Device{}, false, unavailable("enroll: bump generation", err)
	}
	if err := r.commit(ctx, tx); err != nil {
		if isUniqueViolation(err) {
			return Device{}, false, err
		}
		return Device{}, false, unavailable("enroll: commit", err)
	}
	return d, !found, nil
}

// Revoke marks the device revoked: it leaves every snapshot, its address
// becomes free, and its key can never enroll again. Revoking a revoked
// device returns it unchanged. Errors: ErrNotFound, ErrUnavailable.
func (r *Registry) Revoke(ctx context.Context, id string) (Device, error) {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return Device{}, unavailable("revoke "+id+": begin", err)
	}
	defer tx.Rollback()
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("revoke device %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, unavailable("revoke "+id, err)
	}
	if d.Revoked {
		return d, nil
	}
	d.Revoked, d.RevokedAt = true, r.clock()
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET revoked = $2, revoked_us = $3 WHERE id = $1`, id, true, d.RevokedAt.UnixMicro()); err != nil {
		return Device{}, unavailable("revoke "+id, err)
	}
	if err := bumpGeneration(ctx, tx, id); err != nil {
		return Device{}, unavailable("revoke "+id+": bump generation", err)
	}
	if err := r.commit(ctx, tx); err != nil {
		return Device{}, unavailable("revoke "+id+": commit", err)
	}
	r.log.Info("device revoked", "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address)
	r.poke()
	return d, nil
}

// Get reads one device, revoked or not, from the database.
func (r *Registry) Get(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(r.db.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("device %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, unavailable("read device "+id, err)
	}
	return d, nil
}

// List reads every device, revoked and expired ones included, oldest
// first.
func (r *Registry) List(ctx context.Context) ([]Device, error) {
	return r.query(ctx, "list devices", `SELECT `+deviceCols+` FROM devices ORDER BY created_us, id`)
}

func (r *Registry) query(ctx context.Context, op, q string, args ...any) ([]Device, error) {
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, unavailable(op, err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, unavailable(op, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(op, err)
	}
	return out, nil
}

// Touch records that the device was seen at t (a WireGuard handshake). It
// only moves LastSeen forward and does not bump the generation: last-seen
// times are for people reading Get and List, and a snapshot rebuild per
// handshake would cost every appliance work for nothing. Errors:
// ErrNotFound, ErrRevoked, ErrUnavailable.
func (r *Registry) Touch(ctx context.Context, id string, t time.Time) error {
	us := dbTime(t).UnixMicro()
	res, err := r.db.ExecContext(ctx, `UPDATE devices SET last_seen_us = $2
		WHERE id = $1 AND NOT revoked AND (last_seen_us IS NULL OR last_seen_us < $2)`, id, us)
	if err != nil {
		return unavailable("touch device "+id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		return nil
	}
	var revoked bool
	err = r.db.QueryRowContext(ctx, `SELECT revoked FROM devices WHERE id = $1`, id).Scan(&revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("touch device %q: %w", id, ErrNotFound)
	case err != nil:
		return unavailable("touch device "+id, err)
	case revoked:
		return fmt.Errorf("touch device %q: %w", id, ErrRevoked)
	}
	return nil // already seen later than t
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := min(8, max(0, (i+1)*8-p.Bits()))
		b[i] |= byte(1<<hostBits - 1)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// usable reports whether a may be handed to a device: inside the pool, not
// reserved, not the network address (nor, for IPv4 ranges wider than /31,
// the broadcast address).
func (r *Registry) usable(a netip.Addr) bool {
	if !a.IsValid() || !r.pool.Contains(a) || r.resv[a] {
		return false
	}
	hostBits := a.BitLen() - r.pool.Bits()
	if hostBits >= 2 && a == r.first {
		return false
	}
	if hostBits >= 2 && a.Is4() && a == r.last {
		return false
	}
	return true
}

// next is the address after a in the pool, wrapping at the end.
func (r *Registry) next(a netip.Addr) netip.Addr {
	n := a.Next()
	if !n.IsValid() || !r.pool.Contains(n) {
		return r.first
	}
	return n
}

// probeWindow is how many candidates after the cursor one query checks;
// in a pool with room the first window almost always has a free address.
const probeWindow = 32

// allocate picks a free address in tx: the first usable address after
// the cursor that no active device holds. The database's partial unique
// index is the real guard: if another appliance takes the same address
// first, the insert fails and Enroll retries.
func (r *Registry) allocate(ctx context.Context, tx *sql.Tx) (netip.Addr, error) {
	cands := make([]netip.Addr, 0, probeWindow)
	args := make([]any, 0, probeWindow)
	seen := map[netip.Addr]bool{}
	for a := r.next(r.cursor); len(cands) < probeWindow && !seen[a]; a = r.next(a) {
		seen[a] = true
		if r.usable(a) {
			cands = append(cands, a)
			args = append(args, a.String())
		}
	}
	if len(cands) == 0 {
		return netip.Addr{}, fmt.Errorf("%w %s: every address is reserved", ErrPoolExhausted, r.pool)
	}
	ph := make([]string, len(args))
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	used, err := r.usedAddrs(ctx, tx, `SELECT address FROM devices WHERE NOT revoked AND address IN (`+strings.Join(ph, ", ")+`)`, args...)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range cands {
		if !used[a] {
			r.cursor = a
			return a, nil
		}
	}
	// The window is full: read every active address and walk the pool from
	// the cursor. At most len(used)+len(reserved)+2 steps can land on
	// taken or unusable addresses, so the walk is bounded by the number of
	// devices, not by the size of the pool.
	used, err = r.usedAddrs(ctx, tx, `SELECT address FROM devices WHERE NOT revoked`)
	if err != nil {
		return netip.Addr{}, err
	}
	start := r.next(r.cursor)
	a := start
	for range len(used) + len(r.resv) + 3 {
		if r.usable(a) && !used[a] {
			r.cursor = a
			return a, nil
		}
		if a = r.next(a); a == start {
			break
		}
	}
	return netip.Addr{}, fmt.Errorf("%w %s: %d devices hold its addresses", ErrPoolExhausted, r.pool, len(used))
}

func (r *Registry) usedAddrs(ctx context.Context, tx *sql.Tx, q string, args ...any) (map[netip.Addr]bool, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, unavailable("allocate address", err)
	}
	defer rows.Close()
	used := map[netip.Addr]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, unavailable("allocate address", err)
		}
		if a, err := netip.ParseAddr(s); err == nil {
			used[a] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("allocate address", err)
	}
	return used, nil
}

// maxUserEmails bounds how many addresses one user lookup may name.
const maxUserEmails = 32
