package geo

import (
	"net/netip"
	"sync/atomic"
)

// Live answers lookups from whichever Watcher it was last given, so a
// long-lived consumer (the Access server, the flow sampler, Gateway DNS)
// that outlives configuration reloads follows the Watcher of the current
// plan, and through it every database replaced on disk. The zero Live
// and the nil *Live know nothing: every lookup returns the zero Info.
// Safe for concurrent use; lookups take no lock.
type Live struct {
	w atomic.Pointer[Watcher]
}

// Set makes w (nil: none) the source of later lookups.
func (l *Live) Set(w *Watcher) { l.w.Store(w) }

// Current returns the current snapshot, nil without a Watcher.
func (l *Live) Current() *DB {
	if l == nil {
		return nil
	}
	w := l.w.Load()
	if w == nil {
		return nil
	}
	return w.Current()
}

// Lookup is what the current snapshot knows of a.
func (l *Live) Lookup(a netip.Addr) Info { return l.Current().Lookup(a) }

// Country is a's ISO 3166-1 alpha-2 country, "" unknown.
func (l *Live) Country(a netip.Addr) string { return l.Lookup(a).Country }
