package identity

import (
	"context"
	"time"
)

// pollTimeout bounds one poll of the database, so a database that hangs
// instead of refusing cannot stall expiry handling.
const pollTimeout = 5 * time.Second

// Run keeps the snapshot current until ctx ends, then returns nil. Every
// Options.Poll it reads the generation counter, reloads the devices when
// another writer (this appliance or another one sharing the database) has
// changed it, and drops devices whose expiry has passed, which needs no
// database. Writes through this Registry wake it at once. A failing
// database is logged and counted; the last snapshot stays in force.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.nudge:
		}
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		err := r.Refresh(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil && !r.syncFailing.Swap(true):
			r.log.Error("device registry: cannot read the database; keeping the last snapshot", "err", err)
		case err == nil && r.syncFailing.Swap(false):
			r.log.Info("device registry: database reachable again")
		}
	}
}

// poke wakes Run after a local write.
func (r *Registry) poke() {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

// Refresh brings the snapshot up to date now: it reads the devices changed
// since the snapshot's generation, if the generation moved, and applies
// expiry. Run calls it on every tick; the enrollment handler may call it so
// the new peer exists before the client gets its configuration. Even when
// the database fails, expired devices are dropped before the error
// returns.
func (r *Registry) Refresh(ctx context.Context) error {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	now := r.now()
	cur := r.snap.Load()
	s, err := r.sync(ctx, cur, now)
	if err != nil {
		r.syncErrors.Add(1)
		if cur != nil {
			r.publish(cur.expire(now))
		}
		return err
	}
	r.lastSync.Store(now.UnixNano())
	r.publish(s)
	return nil
}

// fullReload is how often Refresh reads every device even when it could
// read only the changes: insurance against rows changed behind the
// registry's back (an operator's UPDATE in psql).
const fullReload = 10 * time.Minute

// sync returns the snapshot for the database's current generation.
func (r *Registry) sync(ctx context.Context, cur *Snapshot, now time.Time) (*Snapshot, error) {
	var gen int64
	if err := r.db.QueryRowContext(ctx, `SELECT generation FROM registry_generation WHERE id = 1`).Scan(&gen); err != nil {
		return nil, unavailable("poll the device registry", err)
	}
	full := cur == nil || now.Sub(r.lastFull) >= fullReload || gen < cur.generation
	if !full && gen == cur.generation {
		return cur.expire(now), nil
	}
	if !full {
		// Only rows changed up to gen: a write that commits during this
		// read has a larger generation and is read by the next poll, once.
		// A row is then absorbed exactly once, which keeps the revoked
		// count exact without reading revoked rows.
		changed, err := r.query(ctx, "load changed devices", `SELECT `+deviceCols+` FROM devices WHERE changed_gen > $1 AND changed_gen <= $2`, cur.generation, gen)
		if err != nil {
			return nil, err
		}
		lo, err := r.loadLogouts(ctx, cur.logouts, cur.generation, gen)
		if err != nil {
			return nil, err
		}
		s := cur.apply(gen, now, changed)
		s.logouts = lo
		return s, nil
	}
	// A full load reads every row's newest state, which may be newer than
	// gen; the next poll reads such a row again, and apply takes a row's
	// current state whatever the snapshot held, so that is harmless.
	devs, err := r.query(ctx, "load devices", `SELECT `+deviceCols+` FROM devices WHERE NOT revoked`)
	if err != nil {
		return nil, err
	}
	// Revoked rows are not loaded; their count is asked once per full
	// load (up to gen: a later revocation is counted by the poll that
	// reads it as a changed row).
	var revoked int64
	if err := r.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE revoked AND changed_gen <= $1`, gen).Scan(&revoked); err != nil {
		return nil, unavailable("count revoked devices", err)
	}
	lo, err := r.loadLogouts(ctx, nil, -1, gen)
	if err != nil {
		return nil, err
	}
	s := newSnapshot(gen, now, devs)
	s.revoked = int(revoked)
	s.logouts = lo
	r.lastFull = now
	return s, nil
}

// publish makes s current and tells the subscribers, unless s is what is
// already published. Callers hold pubMu.
func (r *Registry) publish(s *Snapshot) {
	if r.snap.Load() == s {
		return
	}
	r.snap.Store(s)
	for _, fn := range r.subscribers() {
		fn(s)
	}
}

func (r *Registry) subscribers() []func(*Snapshot) {
	out := make([]func(*Snapshot), 0, len(r.subs))
	for i := range r.nextSub {
		if fn, ok := r.subs[i]; ok {
			out = append(out, fn)
		}
	}
	return out
}

// Subscribe calls fn with every snapshot published from now on, in order,
// one call at a time, on the goroutine that publishes (Run's, or a Refresh
// caller's). fn must return quickly and must not call Refresh or
// Subscribe. It is not called with the current snapshot: subscribe first,
// then read Snapshot(), and treat a repeat of the same snapshot as a no-op.
// The returned function unsubscribes; after it returns fn is not called
// again.
func (r *Registry) Subscribe(fn func(*Snapshot)) (cancel func()) {
	if fn == nil {
		panic("identity: Subscribe(nil)")
	}
	r.pubMu.Lock()
	id := r.nextSub
	r.nextSub++
	r.subs[id] = fn
	r.pubMu.Unlock()
	return func() {
		r.pubMu.Lock()
		delete(r.subs, id)
		r.pubMu.Unlock()
	}
}
