package logpush

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Batch file formats: what the bytes are, so that a job whose destination
// changed kind does not send another kind's batches.
const (
	formatHEC    = "hec"    // gzip of concatenated HEC event envelopes
	formatNDJSON = "ndjson" // gzip of ndjson lines
)

// spoolEntry is one batch file: <seq>.<records>.<format>.gz.
type spoolEntry struct {
	seq     uint64
	records int
	format  string
	size    int64
	closed  time.Time // when the batch was closed: the file's modification time
}

func (e spoolEntry) name() string {
	return fmt.Sprintf("%020d.%d.%s.gz", e.seq, e.records, e.format)
}

func parseEntryName(name string) (spoolEntry, bool) {
	base, ok := strings.CutSuffix(name, ".gz")
	parts := strings.Split(base, ".")
	if !ok || len(parts) != 3 {
		return spoolEntry{}, false
	}
	seq, err1 := strconv.ParseUint(parts[0], 10, 64)
	n, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || n < 0 {
		return spoolEntry{}, false
	}
	return spoolEntry{seq: seq, records: n, format: parts[2]}, true
}

// spool is a job's on-disk queue of batches, oldest first. A batch is
// written to a temporary file (or a write-ahead segment, see wal.go),
// fsynced, renamed to its final name and the directory fsynced, so a crash
// leaves either the whole batch or a file that the next open removes or
// recovers.
//
// The spool holds at most limit bytes, and never leaves less than reserve
// bytes free on its filesystem: past either, its oldest batches that are
// not being sent are deleted (the caller counts them as dropped).
type spool struct {
	dir   string
	space func(dir string) (fsSpace, error) // statSpace; tests may replace it

	mu      sync.Mutex
	limit   int64
	reserve int64
	entries []spoolEntry // ascending seq
	bytes   int64
	next    uint64
	busy    map[uint64]bool // being sent or awaiting an ack: never dropped
	notify  chan struct{}   // a batch was added (cap 1)
}

func openSpool(dir string, limit int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &spool{dir: dir, space: statSpace, limit: limit, next: 1, busy: map[uint64]bool{}, notify: make(chan struct{}, 1)}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, de.Name())) // an interrupted write
			continue
		}
		e, ok := parseEntryName(de.Name())
		if !ok || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		e.size, e.closed = fi.Size(), fi.ModTime()
		s.entries = append(s.entries, e)
		s.bytes += e.size
		s.next = max(s.next, e.seq+1)
	}
	slices.SortFunc(s.entries, func(a, b spoolEntry) int { return cmpU64(a.seq, b.seq) })
	return s, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// setBudget changes the limit and the free-space reserve; the next commit
// applies them.
func (s *spool) setBudget(limit, reserve int64) {
	s.mu.Lock()
	s.limit, s.reserve = limit, reserve
	s.mu.Unlock()
}

// budget returns the limit and reserve in force.
func (s *spool) budget() (limit, reserve int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit, s.reserve
}

// add writes a batch durably, then drops the oldest idle batches while the
// spool is over its limit or its filesystem below the reserve, and returns
// those.
func (s *spool) add(data []byte, records int, format string) (dropped []spoolEntry, err error) {
	e := s.newEntry(records, format, int64(len(data)))
	tmp := filepath.Join(s.dir, ".tmp-"+e.name())
	if err := writeSync(tmp, data); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("spool: %w", err)
	}
	return s.commit(tmp, e)
}

func (s *spool) newEntry(records int, format string, size int64) spoolEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := spoolEntry{seq: s.next, records: records, format: format, size: size}
	s.next++
	return e
}

// commit renames the durable file src to e's name, syncs the directory and
// enforces the limit and the reserve.
func (s *spool) commit(src string, e spoolEntry) (dropped []spoolEntry, err error) {
	// The file's time, as openSpool will read it after a restart, so a
	// destination naming objects by it names a batch the same way.
	if fi, err := os.Stat(src); err == nil {
		e.closed = fi.ModTime()
	}
	if err := os.Rename(src, filepath.Join(s.dir, e.name())); err != nil {
		if strings.HasPrefix(filepath.Base(src), ".tmp-") {
			os.Remove(src)
		}
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The batch is in place: a failed directory sync puts only its name at
	// risk on a power cut, so it is registered (and the error reported)
	// rather than written again, which would duplicate it.
	dirErr := syncDir(s.dir)
	// Free space is judged now, with the new batch on disk: the filesystem
	// is shared (device registry, keys, other jobs), so a limit alone
	// cannot keep the reserve.
	var short int64
	s.mu.Lock()
	reserve := s.reserve
	s.mu.Unlock()
	if reserve > 0 {
		if fs, err := s.space(s.dir); err == nil && fs.avail < reserve {
			short = reserve - fs.avail
		}
	}

	s.mu.Lock()
	s.entries = append(s.entries, e)
	s.bytes += e.size
	for i := 0; (s.bytes > s.limit || short > 0) && i < len(s.entries)-1; {
		old := s.entries[i]
		if s.busy[old.seq] {
			i++
			continue
		}
		s.entries = slices.Delete(s.entries, i, i+1)
		s.bytes -= old.size
		short -= old.size
		dropped = append(dropped, old)
	}
	s.mu.Unlock()
	for _, old := range dropped {
		os.Remove(filepath.Join(s.dir, old.name()))
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	if dirErr != nil {
		return dropped, fmt.Errorf("spool: %w: %w", errDirSync, dirErr)
	}
	return dropped, nil
}

// errDirSync reports a batch that was spooled but whose directory could
// not be fsynced.
var errDirSync = errors.New("batch spooled, but the directory was not synced")

// nextAfter returns the oldest batch with a sequence number above seq and
// marks it busy.
func (s *spool) nextAfter(seq uint64) (spoolEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.entries, seq+1, func(e spoolEntry, t uint64) int { return cmpU64(e.seq, t) })
	if i == len(s.entries) {
		return spoolEntry{}, false
	}
	s.busy[s.entries[i].seq] = true
	return s.entries[i], true
}

// release makes a batch droppable again.
func (s *spool) release(seq uint64) {
	s.mu.Lock()
	delete(s.busy, seq)
	s.mu.Unlock()
}

// releaseAll makes every batch droppable (the sender stopped).
func (s *spool) releaseAll() {
	s.mu.Lock()
	clear(s.busy)
	s.mu.Unlock()
}

func (s *spool) read(e spoolEntry) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, e.name()))
}

// remove deletes a delivered (or undeliverable) batch.
func (s *spool) remove(seq uint64) error {
	s.mu.Lock()
	i, found := slices.BinarySearchFunc(s.entries, seq, func(e spoolEntry, t uint64) int { return cmpU64(e.seq, t) })
	var e spoolEntry
	if found {
		e = s.entries[i]
		s.entries = slices.Delete(s.entries, i, i+1)
		s.bytes -= e.size
	}
	delete(s.busy, seq)
	s.mu.Unlock()
	if !found {
		return nil
	}
	err := os.Remove(filepath.Join(s.dir, e.name()))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return err
}

// usage returns the batches and bytes held.
func (s *spool) usage() (batches int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries), s.bytes
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
