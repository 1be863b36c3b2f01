package logpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// Write-ahead segments close the crash window of the open batch: a batch
// used to live in memory until it was cut (up to max_upload_interval or
// max_upload_records), so kill -9 or a power cut lost it whole.
//
// Now the open batch is written as it grows, as a gzip stream, to
// wal-<id>.<format> in the job's spool directory: the spooler appends the
// records producers queued, flushes the stream (a deflate sync flush ends
// on a byte boundary) and fsyncs the file once per Options.SyncInterval,
// so a crash loses at most the records of the last interval. When the
// batch is cut the stream is closed, fsynced and the file renamed to its
// spool name: the segment is the batch, compressed once and written once.
//
// At start, segments a crash left behind are decoded up to the last whole,
// valid record and spooled as batches (recoverSegments).

// walPrefix starts the name of a write-ahead segment.
const walPrefix = "wal-"

func walName(id uint64, format string) string {
	return fmt.Sprintf("%s%020d.%s", walPrefix, id, format)
}

func parseWALName(name string) (id uint64, format string, ok bool) {
	rest, ok := strings.CutPrefix(name, walPrefix)
	if !ok {
		return 0, "", false
	}
	num, format, ok := strings.Cut(rest, ".")
	if !ok || (format != formatHEC && format != formatNDJSON) {
		return 0, "", false
	}
	id, err := strconv.ParseUint(num, 10, 64)
	return id, format, err == nil
}

// segment is one batch being written ahead.
type segment struct {
	id      uint64
	path    string
	f       *os.File     // nil until the first write
	off     int64        // bytes written to f
	buf     bytes.Buffer // compressed bytes not yet written to f
	n       int          // records in the segment
	flushed int          // records whose compressed bytes are in buf or f
	durable int          // records whose bytes are in f
	dirty   bool         // records added since the last gzip flush
	ended   bool         // the gzip stream is closed: the batch is whole
	unsync  bool         // written since the last fsync
}

// wal writes a job's batches ahead. It is owned by the spooler goroutine.
type wal struct {
	dir    string
	format string
	gz     *gzip.Writer // the open segment's stream
	segs   []*segment   // oldest first; only the last may be open
	nextID uint64
}

func newWAL(dir, format string, nextID uint64) *wal {
	gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return &wal{dir: dir, format: format, gz: gz, nextID: max(nextID, 1)}
}

// open returns the segment records are appended to, or nil.
func (w *wal) open() *segment {
	if n := len(w.segs); n > 0 && !w.segs[n-1].ended {
		return w.segs[n-1]
	}
	return nil
}

// write appends n encoded records to the open segment, starting one if
// none is open. The bytes are compressed into memory; flush writes them.
func (w *wal) write(data []byte, n int) {
	if n == 0 {
		return
	}
	s := w.open()
	if s == nil {
		s = &segment{id: w.nextID, path: filepath.Join(w.dir, walName(w.nextID, w.format))}
		w.nextID++
		w.segs = append(w.segs, s)
		w.gz.Reset(&s.buf)
	}
	w.gz.Write(data) // into a bytes.Buffer: cannot fail
	s.n += n
	s.dirty = true
}

// end closes the open segment's stream: its batch is complete.
func (w *wal) end() {
	if s := w.open(); s != nil {
		w.gz.Close()
		s.flushed, s.dirty, s.ended = s.n, false, true
	}
}

// buffered returns the compressed bytes held in memory, not yet written.
func (w *wal) buffered() int {
	n := 0
	for _, s := range w.segs {
		n += s.buf.Len()
	}
	return n
}

// unwritten returns the records that are not in a segment file yet.
func (w *wal) unwritten() int {
	n := 0
	for _, s := range w.segs {
		n += s.n - s.durable
	}
	return n
}

// walWriteBytes is how much compressed data may wait in memory before it
// is written (without an fsync) between two syncs.
const walWriteBytes = 256 << 10

// flush writes what the segments hold in memory. With sync, the open
// segment's stream is flushed and every written segment fsynced. Ended
// segments are fsynced, closed and handed to commit (which renames them
// into the spool). On an error the segments keep their state, and the
// next flush retries from the last good offset.
func (w *wal) flush(sync bool, commit func(*segment) error) error {
	for len(w.segs) > 0 {
		s := w.segs[0]
		if sync && s.dirty {
			w.gz.Flush() // sync flush: the stream so far decodes whole
			s.flushed, s.dirty = s.n, false
		}
		if s.buf.Len() > 0 && (sync || s.ended || s.buf.Len() >= walWriteBytes) {
			if s.f == nil {
				f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return fmt.Errorf("write-ahead segment: %w", err)
				}
				s.f = f
			}
			// WriteAt: a failed, partial write is overwritten by the retry.
			if _, err := s.f.WriteAt(s.buf.Bytes(), s.off); err != nil {
				return fmt.Errorf("write-ahead segment %s: %w", filepath.Base(s.path), err)
			}
			s.off += int64(s.buf.Len())
			s.buf.Reset()
			s.durable, s.unsync = s.flushed, true
		}
		if s.unsync && (sync || s.ended) {
			if err := s.f.Sync(); err != nil {
				return fmt.Errorf("write-ahead segment %s: fsync: %w", filepath.Base(s.path), err)
			}
			s.unsync = false
		}
		if !s.ended {
			return nil // the open segment is last
		}
		if err := commit(s); err != nil {
			return err
		}
		s.f.Close()
		w.segs = w.segs[1:]
	}
	return nil
}

// close closes the segment files without finishing them: what they hold
// is recovered at the next start.
func (w *wal) close() {
	for _, s := range w.segs {
		if s.f != nil {
			s.f.Close()
		}
	}
	w.segs = nil
}

// recovery is what recoverSegments found.
type recovery struct {
	segments int    // segment files found
	records  int    // records recovered into the spool
	nextID   uint64 // the first free segment id
}

// recoverSegments spools the segments a crash (or a stop that could not
// write) left in dir, oldest first. A whole segment is renamed into the
// spool; a cut-off one is decoded up to its last whole, valid record and
// spooled anew. Records past that point were not durable and are lost:
// the caller cannot know how many. maxBytes bounds the decoded size of a
// segment (a batch is at most max_upload_bytes uncompressed). Segments
// that cannot be spooled stay for the next start.
func recoverSegments(dir string, sp *spool, maxBytes int64) (recovery, []spoolEntry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return recovery{}, nil, fmt.Errorf("recover write-ahead segments: %w", err)
	}
	type found struct {
		id     uint64
		format string
		name   string
	}
	var segs []found
	rec := recovery{nextID: 1}
	for _, de := range des {
		if id, format, ok := parseWALName(de.Name()); ok && de.Type().IsRegular() {
			segs = append(segs, found{id, format, de.Name()})
			rec.nextID = max(rec.nextID, id+1)
		}
	}
	slices.SortFunc(segs, func(a, b found) int { return cmpU64(a.id, b.id) })
	var dropped []spoolEntry
	var errs []error
	for _, s := range segs {
		rec.segments++
		path := filepath.Join(dir, s.name)
		raw, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("recover %s: %w", s.name, err))
			continue
		}
		data, n, whole := recoverStream(raw, maxBytes)
		var d []spoolEntry
		switch {
		case n == 0:
			err = os.Remove(path)
		case whole:
			if err = syncFile(path); err == nil {
				d, err = sp.adopt(path, n, s.format, int64(len(raw)))
			}
		default:
			var out bytes.Buffer
			gz, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
			gz.Write(data)
			gz.Close()
			if d, err = sp.add(out.Bytes(), n, s.format); err == nil {
				err = os.Remove(path)
			}
		}
		dropped = append(dropped, d...)
		if err != nil && !errors.Is(err, errDirSync) {
			errs = append(errs, fmt.Errorf("recover %s: %w", s.name, err))
			continue
		}
		rec.records += n
	}
	return rec, dropped, errors.Join(errs...)
}

// recoverStream decodes a segment: a gzip stream that may be cut off
// anywhere, or end in garbage after a power cut. It returns the whole,
// valid records it holds (each a JSON value on its own line), their
// count, and whether the stream was complete (a closed gzip stream that
// held only such records).
func recoverStream(raw []byte, maxBytes int64) (data []byte, n int, whole bool) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, 0, false
	}
	zr.Multistream(false)
	out, err := io.ReadAll(io.LimitReader(zr, maxBytes+1))
	whole = err == nil && int64(len(out)) <= maxBytes // the trailer's CRC was checked
	out = out[:min(int64(len(out)), maxBytes)]
	good := 0
	for rest := out; ; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 || !json.Valid(rest[:i]) {
			break
		}
		good += i + 1
		n++
		rest = rest[i+1:]
	}
	return out[:good], n, whole && good == len(out)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
