package geo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// PollInterval is how often a [Watcher] looks at its files by default.
const PollInterval = 2 * time.Second

// Watcher holds the current snapshot of a set of database files and loads
// them again when one changes on disk (replaced by a rename, as updaters
// such as geoipupdate do, or rewritten in place). A file that changed but
// does not load (half written, corrupt) is logged and tried again at the
// next poll; until then the previous snapshot stays current.
type Watcher struct {
	files    Files
	log      *slog.Logger
	interval time.Duration
	onChange func(*DB) error

	cur   atomic.Pointer[DB]
	stamp [2]stamp // what Country and ASN looked like when cur was loaded

	loads, failures atomic.Uint64
	loadedAt        atomic.Int64 // Unix nanoseconds of the current snapshot's load
}

// stamp identifies one version of a file cheaply: a rename gives a new
// inode, a rewrite in place a new size or modification time.
type stamp struct {
	ino, size  int64
	mtime      time.Time
	ctimeSec   int64
	ctimeNsec  int64
	exists     bool
	unreadable bool
}

func statFile(path string) stamp {
	if path == "" {
		return stamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{unreadable: true}
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime(), exists: true}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino, s.ctimeSec, s.ctimeNsec = int64(st.Ino), st.Ctim.Sec, st.Ctim.Nsec
	}
	return s
}

// NewWatcher loads f and returns a Watcher holding it. onChange, if not
// nil, is called from [Watcher.Run] with each new snapshot after it
// becomes current; its error is logged. interval 0 is [PollInterval].
func NewWatcher(f Files, interval time.Duration, log *slog.Logger, onChange func(*DB) error) (*Watcher, error) {
	if interval <= 0 {
		interval = PollInterval
	}
	w := &Watcher{files: f, log: log.With("component", "geoip"), interval: interval, onChange: onChange}
	st := [2]stamp{statFile(f.Country), statFile(f.ASN)}
	db, reused := lastLoad.get(f, st)
	if !reused {
		var err error
		if db, err = Load(f); err != nil {
			return nil, err
		}
		lastLoad.put(f, st, db)
	}
	w.cur.Store(db)
	w.stamp = st
	w.loads.Add(1)
	w.loadedAt.Store(time.Now().UnixNano())
	if !reused {
		w.logLoaded(db)
	}
	return w, nil
}

// lastLoad is the newest database NewWatcher loaded, with the stamps its
// files had. Every reload prepares a new Watcher, and most reloads are
// for some other section: parsing a 400k-network database again would
// take seconds for the same result. A DB never changes after Load, so
// two Watchers may share it; the stamps (inode, size, mtime, ctime) tell
// a replaced or rewritten file.
var lastLoad loadCache

type loadCache struct {
	mu    sync.Mutex
	files Files
	stamp [2]stamp
	db    *DB
}

func (c *loadCache) get(f Files, st [2]stamp) (*DB, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.db == nil || c.files != f || c.stamp != st || st[0].unreadable || st[1].unreadable {
		return nil, false
	}
	return c.db, true
}

func (c *loadCache) put(f Files, st [2]stamp, db *DB) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files, c.stamp, c.db = f, st, db
}

// OnChange sets the function Run calls with each new snapshot, for a
// Watcher made before its consumer (the gateway loads databases while it
// compiles a configuration, and hands them to the firewall when it
// commits). Call it before Run.
func (w *Watcher) OnChange(f func(*DB) error) { w.onChange = f }

// Current returns the current snapshot.
func (w *Watcher) Current() *DB { return w.cur.Load() }

// Files returns the files the Watcher follows.
func (w *Watcher) Files() Files { return w.files }

// Stats returns how many snapshots were loaded and how many loads failed.
func (w *Watcher) Stats() (loads, failures uint64) { return w.loads.Load(), w.failures.Load() }

// LoadedAt returns when the current snapshot was loaded.
func (w *Watcher) LoadedAt() time.Time { return time.Unix(0, w.loadedAt.Load()) }

// Run polls the files every interval until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := w.Check(); err != nil {
				w.log.Error("geoip database changed but cannot be loaded; keeping the previous one", "err", err)
			}
		}
	}
}

// Check loads the files again if either changed since the current
// snapshot was loaded, makes the new snapshot current and calls onChange.
// It reports whether a new snapshot was loaded. Run calls it; it is not
// safe to call concurrently with Run.
func (w *Watcher) Check() (bool, error) {
	st := [2]stamp{statFile(w.files.Country), statFile(w.files.ASN)}
	if st == w.stamp {
		return false, nil
	}
	db, err := Load(w.files)
	if err != nil {
		w.failures.Add(1)
		return false, err
	}
	// A file that changed while it was read is read again at the next
	// poll: the stamp taken before the read no longer matches.
	w.stamp = st
	w.cur.Store(db)
	lastLoad.put(w.files, st, db)
	w.loads.Add(1)
	w.loadedAt.Store(time.Now().UnixNano())
	w.logLoaded(db)
	if w.onChange != nil {
		if err := w.onChange(db); err != nil {
			w.stamp = [2]stamp{} // try again at the next poll
			return true, fmt.Errorf("apply geoip database: %w", err)
		}
	}
	return true, nil
}

func (w *Watcher) logLoaded(db *DB) {
	total, skipped := db.Networks()
	w.log.Info("geoip database loaded", "country", w.files.Country, "asn", w.files.ASN,
		"networks", total, "without_data", skipped,
		"countries", len(db.countries), "as_numbers", len(db.asns))
}
