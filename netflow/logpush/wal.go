package logpush

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Write-ahead segments close the crash window of the open batch: a batch
// used to live in memory until it was cut (up to max_upload_interval or
// max_upload_records), so kill -9 or a power cut lost it whole.
//
// Now the spooler compresses the open batch as it grows (one gzip stream,
// kept in memory: about 20 bytes a record) and, once per
// Options.SyncInterval, ends the stream's pending deflate block with a
// sync flush and appends the new compressed bytes as a frame to
// wal-<id>.<format> in the job's spool directory, then fsyncs it. A frame
// is
//
//	length uint32 | records uint32 | CRC-32C of records and payload | payload
//
// (big endian), so a frame cut short by kill -9 or garbage left by a power
// cut is recognised: recovery keeps the frames before it. A crash thus
// loses at most the records of the last interval. When the batch is cut,
// the closed stream is written to the spool as usual (fsync, rename) and
// the segment removed; a crash between the two sends that batch twice,
// which at-least-once delivery allows.
//
// At start, segments a crash left behind are decoded and spooled as
// batches (recoverSegments).

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
	id     uint64
	path   string
	f      *os.File     // nil until the first frame
	off    int64        // bytes of frames written to f
	stream bytes.Buffer // the batch's gzip stream so far
	framed int          // bytes of stream written as frames
	n      int          // records in the segment
	inF    int          // records in frames
	done   int          // records in frames written to f
	frame  []byte       // a frame not yet written (a failed write is retried)
	synced bool         // f has no unsynced frames
	ended  bool         // the gzip stream is closed: the batch is whole
}

// wal writes a job's batches ahead. It is owned by the spooler goroutine.
type wal struct {
	dir    string
	format string
	gz     *gzip.Writer // the open segment's stream
	segs   []*segment   // oldest first; only the last may be open
	nextID uint64
	last   int // compressed size of the last batch, to size the next
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
		s = &segment{id: w.nextID, path: filepath.Join(w.dir, walName(w.nextID, w.format)), synced: true}
		w.nextID++
		w.segs = append(w.segs, s)
		// Size the stream for a batch like the last one: growing a
		// megabyte buffer by doubling copies it over and over.
		s.stream.Grow(w.last + w.last/8 + 4096)
		w.gz.Reset(&s.stream)
		// The batch's start, in the gzip header (written with the
		// first bytes): s3 object names carry it.
		w.gz.ModTime = time.Now()
	}
	w.gz.Write(data) // into a bytes.Buffer: cannot fail
	s.n += n
}

// end closes the open segment's stream: its batch is complete.
func (w *wal) end() {
	if s := w.open(); s != nil {
		w.gz.Close()
		s.ended = true
		w.last = s.stream.Len()
	}
}

// buffered returns the compressed bytes held in memory for batches that
// are not in the spool yet.
func (w *wal) buffered() int {
	n := 0
	for _, s := range w.segs {
		n += s.stream.Len()
	}
	return n
}

// unwritten returns the records that are neither spooled nor in a
// segment file.
func (w *wal) unwritten() int {
	n := 0
	for _, s := range w.segs {
		n += s.n - s.done
	}
	return n
}

// frameHeader is the size of a frame's header.
const frameHeader = 12

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// flush spools ended segments (through spool, oldest first) and, with
// sync, writes the open segment's new records as a frame and fsyncs it.
// On an error the segments keep their state, and the next flush retries:
// a frame is written at its offset again, over any partial write.
func (w *wal) flush(sync bool, spool func(s *segment) error) error {
	for len(w.segs) > 0 {
		s := w.segs[0]
		if s.ended {
			if err := spool(s); err != nil {
				return err
			}
			s.done = s.n
			if s.f != nil {
				s.f.Close()
			}
			if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				// Recovery would spool its frames again: a duplicate,
				// which at-least-once allows; say so.
				w.segs = w.segs[1:]
				return fmt.Errorf("remove spooled write-ahead segment: %w", err)
			}
			w.segs = w.segs[1:]
			continue
		}
		if !sync {
			return nil
		}
		if s.n > s.inF {
			w.gz.Flush() // sync flush: the stream so far decodes whole
			payload := s.stream.Bytes()[s.framed:]
			// One frame per sync; a frame still unwritten grows by the
			// new one, so that the file only ever holds whole frames.
			s.frame = binary.BigEndian.AppendUint32(s.frame, uint32(len(payload)))
			s.frame = binary.BigEndian.AppendUint32(s.frame, uint32(s.n-s.inF))
			crc := crc32.Update(crc32.Checksum(s.frame[len(s.frame)-4:], castagnoli), castagnoli, payload)
			s.frame = binary.BigEndian.AppendUint32(s.frame, crc)
			s.frame = append(s.frame, payload...)
			s.framed, s.inF = s.stream.Len(), s.n
		}
		if len(s.frame) > 0 {
			if s.f == nil {
				f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return fmt.Errorf("write-ahead segment: %w", err)
				}
				s.f = f
			}
			if _, err := s.f.WriteAt(s.frame, s.off); err != nil {
				return fmt.Errorf("write-ahead segment %s: %w", filepath.Base(s.path), err)
			}
			s.off += int64(len(s.frame))
			s.frame = s.frame[:0]
			s.synced = false
		}
		if !s.synced {
			if err := s.f.Sync(); err != nil {
				return fmt.Errorf("write-ahead segment %s: fsync: %w", filepath.Base(s.path), err)
			}
			s.synced, s.done = true, s.inF
		}
		return nil
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
// write) left in dir, oldest first: each segment's whole frames are
// decoded and spooled as one batch. Records past the last whole frame
// were not durable and are lost: the caller cannot know how many.
// maxBytes bounds the decoded size of a segment (a batch is at most
// max_upload_bytes uncompressed). Segments that cannot be spooled stay for
// the next start.
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
		data, n := recoverSegment(raw, maxBytes)
		if n > 0 {
			var out bytes.Buffer
			gz, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
			gz.Write(data)
			gz.Close()
			d, err := sp.add(out.Bytes(), n, s.format)
			dropped = append(dropped, d...)
			if err != nil && !errors.Is(err, errDirSync) {
				errs = append(errs, fmt.Errorf("recover %s: %w", s.name, err))
				continue
			}
		}
		if err := os.Remove(path); err != nil {
			errs = append(errs, fmt.Errorf("recover %s: %w", s.name, err))
		}
		rec.records += n
	}
	return rec, dropped, errors.Join(errs...)
}

// recoverSegment decodes a segment's bytes, which may be cut off anywhere
// or end in garbage after a power cut. It returns the records of its whole
// frames (each a JSON value on its own line) and their count.
func recoverSegment(raw []byte, maxBytes int64) (data []byte, n int) {
	var stream []byte
	for len(raw) >= frameHeader {
		size := binary.BigEndian.Uint32(raw)
		if size == 0 || int64(size) > int64(len(raw)-frameHeader) {
			break
		}
		payload := raw[frameHeader : frameHeader+int(size)]
		crc := crc32.Update(crc32.Checksum(raw[4:8], castagnoli), castagnoli, payload)
		if crc != binary.BigEndian.Uint32(raw[8:]) {
			break
		}
		stream = append(stream, payload...)
		raw = raw[frameHeader+int(size):]
	}
	return decodeStream(stream, maxBytes)
}

// decodeStream decodes the start of a gzip stream that ends at a sync
// flush, and returns the whole, valid records it holds (each a JSON value
// on its own line) and their count. The frames' checksums already vouch
// for the bytes; the line check guards against a writer bug.
func decodeStream(stream []byte, maxBytes int64) (data []byte, n int) {
	zr, err := gzip.NewReader(bytes.NewReader(stream))
	if err != nil {
		return nil, 0
	}
	zr.Multistream(false)
	// The stream has no end: reading stops with io.ErrUnexpectedEOF after
	// the last flushed block.
	out, _ := io.ReadAll(io.LimitReader(zr, maxBytes))
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
	return out[:good], n
}
