package store

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// Defaults of Options.
const (
	DefaultRetention = 7 * 24 * time.Hour
	DefaultMaxBytes  = 256 << 20
)

// entryBytes is what one rollup entry costs in memory, an estimate used
// for Options.MaxBytes: the key (two 24-byte addresses, the exporter's,
// three strings, ports and flags), the counters and Go's map overhead.
const entryBytes = 200

// Options configure a Store.
type Options struct {
	// Retention is how long a minute's rollup is kept; DefaultRetention.
	Retention time.Duration
	// MaxBytes bounds the rollups' memory (estimated at entryBytes an
	// entry); DefaultMaxBytes. Over it the oldest minutes are first rolled
	// up coarser (addresses to /24 or /64, ports from 1024 to 0), then
	// dropped, oldest first; a single minute over it rolls new entries up coarser (see
	// Stats.Coarsened), in up to a sixteenth more rows (at least one), and beyond that drops
	// them (Stats.Full).
	MaxBytes int64
	Now      func() time.Time // nil: time.Now
}

// key is one rollup row: the dimensions a query can filter and group on.
type key struct {
	exporter netip.Addr
	src, dst netip.Addr
	srcPort  uint16
	dstPort  uint16
	protocol uint8
	tcpFlags uint8
	source   string
	verdict  string
	tunnel   string
}

type counts struct{ packets, bytes uint64 }

// minute is one minute's rollup. Add changes rows with both the store's
// lock and mu held; Query reads them with mu alone, one minute at a time,
// so a long query never holds up the producers for more than a minute's
// rows.
//
// Once a minute is past, its rows are frozen into a slice, which a query
// scans several times faster than a map; flows that arrive late for it
// (an exporter's flow that ended then) go to rows again, which may then
// hold keys frozen also holds: queries add both.
type minute struct {
	start   time.Time // truncated to the minute, UTC
	mu      sync.Mutex
	rows    map[key]counts
	frozen  []row
	compact bool // rolled up coarser to make room (see compactKey)
	// ver counts the minute's changes (s.mu held): an hour summary
	// (hours.go) built from it is valid while its minutes' versions are.
	ver uint64
}

// row is one frozen rollup row.
type row struct {
	k key
	c counts
}

// count is the minute's number of rows. s.mu is held.
func (m *minute) count() int { return len(m.rows) + len(m.frozen) }

// freeze moves the rows into frozen. s.mu is held.
func (m *minute) freeze() {
	if len(m.rows) == 0 {
		return
	}
	f := make([]row, 0, len(m.frozen)+len(m.rows))
	f = append(f, m.frozen...)
	for k, c := range m.rows {
		f = append(f, row{k, c})
	}
	m.mu.Lock()
	m.frozen, m.rows = f, map[key]counts{}
	m.mu.Unlock()
	m.ver++
}

// Stats are a Store's counters since it was built, and its current size.
type Stats struct {
	Flows     uint64 // flows added to a rollup
	TooOld    uint64 // flows older than the retention, dropped
	Coarsened uint64 // flows rolled up with addresses cut to /24 or /64 and ports and flags dropped, because the minute was full
	Full      uint64 // flows dropped because even their coarse row did not fit
	Invalid   uint64 // records without addresses or time
	Evicted   uint64 // minutes dropped to stay under MaxBytes
	Compacted uint64 // minutes rolled up coarser to stay under MaxBytes
	Minutes   int    // minutes held
	Rows      int    // rollup rows held
	Bytes     int64  // estimated memory of the rows
}

// Store holds per-minute flow rollups. It is safe for concurrent use:
// Push and Add take a short lock and never wait on I/O; a query holds the
// store's lock only to list the minutes.
type Store struct {
	opts Options

	mu      sync.Mutex
	minutes []*minute // sorted by start, oldest first
	rows    int
	st      Stats
	// sums are past hours' rows summed by one dimension, built by the
	// queries that need them (hours.go).
	sums    map[hourKey]*hourSum
	sumRows int // entries of sums
}

// New returns an empty Store.
func New(opts Options) (*Store, error) {
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Retention < time.Minute {
		return nil, errors.New("flow store: retention must be at least a minute")
	}
	if opts.MaxBytes < entryBytes {
		return nil, errors.New("flow store: max bytes too small for one row")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{opts: opts}, nil
}

// Push adds a network_analytics_logs record (it implements logpush.Sink,
// so the store can sit beside Logpush on the gateway's record stream);
// other datasets are ignored.
func (s *Store) Push(dataset string, r logpush.Record) {
	if dataset != "network_analytics_logs" {
		return
	}
	f, ok := FromRecord(r)
	if !ok {
		s.mu.Lock()
		s.st.Invalid++
		s.mu.Unlock()
		return
	}
	s.Add(f)
}

// Add rolls a flow into its minute.
func (s *Store) Add(f Flow) {
	now := s.opts.Now()
	t := f.Time
	if t.After(now) {
		// A router's clock ahead of ours: count it now, not in a future
		// minute that queries up to now would miss.
		t = now
	}
	start := t.UTC().Truncate(time.Minute)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if !start.After(now.Add(-s.opts.Retention)) {
		s.st.TooOld++
		return
	}
	m := s.minute(start)
	k := key{exporter: f.Exporter, src: f.Src, dst: f.Dst, srcPort: f.SrcPort, dstPort: f.DstPort,
		protocol: f.Protocol, tcpFlags: f.TCPFlags, source: f.Source, verdict: f.Verdict, tunnel: f.Tunnel}
	c, ok := m.rows[k]
	if !ok && int64(s.rows+1)*entryBytes > s.opts.MaxBytes {
		s.evictFor(m)
		if int64(s.rows+1)*entryBytes > s.opts.MaxBytes {
			// This minute alone fills the budget (a scan or a flood of
			// forged sources): keep counting, coarser.
			k.src, k.dst = coarse(k.src), coarse(k.dst)
			k.srcPort, k.dstPort, k.tcpFlags = 0, 0, 0
			c, ok = m.rows[k]
			if !ok && int64(s.rows+1) > s.opts.MaxBytes/entryBytes+max(s.opts.MaxBytes/entryBytes/16, 1) {
				s.st.Full++
				return
			}
			s.st.Coarsened++
		}
	}
	if !ok {
		s.rows++
	}
	c.packets += f.Packets
	c.bytes += f.Bytes
	m.mu.Lock()
	m.rows[k] = c
	m.mu.Unlock()
	m.ver++
	s.st.Flows++
}

// coarse is an address cut to its /24 (IPv4) or /64 (IPv6).
func coarse(a netip.Addr) netip.Addr {
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.Addr()
}

// minute returns the rollup of the minute starting at start, creating it
// in order. s.mu is held.
func (s *Store) minute(start time.Time) *minute {
	i, found := slices.BinarySearchFunc(s.minutes, start, func(m *minute, t time.Time) int { return m.start.Compare(t) })
	if found {
		return s.minutes[i]
	}
	m := &minute{start: start, rows: map[key]counts{}}
	s.minutes = slices.Insert(s.minutes, i, m)
	// A new latest minute: the one before it is past.
	if i == len(s.minutes)-1 && i > 0 {
		s.minutes[i-1].freeze()
	}
	return m
}

// expire drops minutes past the retention. s.mu is held.
func (s *Store) expire(now time.Time) {
	cut := now.Add(-s.opts.Retention)
	n := 0
	for n < len(s.minutes) && !s.minutes[n].start.After(cut) {
		s.rows -= s.minutes[n].count()
		n++
	}
	if n > 0 {
		s.minutes = slices.Delete(s.minutes, 0, n)
	}
}

// evictFor makes room for one more row in keep: first it rolls the
// oldest full-detail minutes up coarser (compactKey), then, when every
// other minute is coarse already, drops the oldest. History thus
// outlives detail. s.mu is held.
func (s *Store) evictFor(keep *minute) {
	next := 0 // minutes before next are compact or keep
	for int64(s.rows+1)*entryBytes > s.opts.MaxBytes {
		for next < len(s.minutes) && (s.minutes[next].compact || s.minutes[next] == keep) {
			next++
		}
		if next < len(s.minutes) {
			s.compactMinute(s.minutes[next])
			continue
		}
		if len(s.minutes) == 0 || s.minutes[0] == keep {
			return
		}
		s.rows -= s.minutes[0].count()
		s.minutes = slices.Delete(s.minutes, 0, 1)
		s.st.Evicted++
	}
}

// compactMinute rolls m up by compactKey; a frozen minute stays frozen.
// s.mu is held.
func (s *Store) compactMinute(m *minute) {
	rows := make(map[key]counts, m.count()/4)
	add := func(k key, c counts) {
		ck := compactKey(k)
		a := rows[ck]
		a.packets += c.packets
		a.bytes += c.bytes
		rows[ck] = a
	}
	for k, c := range m.rows {
		add(k, c)
	}
	for i := range m.frozen {
		add(m.frozen[i].k, m.frozen[i].c)
	}
	s.rows += len(rows) - m.count()
	wasFrozen := len(m.frozen) > 0
	m.mu.Lock()
	m.rows, m.frozen, m.compact = rows, nil, true
	m.mu.Unlock()
	m.ver++
	if wasFrozen {
		m.freeze()
	}
	s.st.Compacted++
}

// compactKey is a row with addresses cut to their /24 (IPv4) or /64
// (IPv6) and ports from 1024 up (mostly ephemeral) as 0: what a compact
// minute keeps. Queries finer than that see those minutes coarse.
func compactKey(k key) key {
	k.src, k.dst = coarse(k.src), coarse(k.dst)
	if k.srcPort >= 1024 {
		k.srcPort = 0
	}
	if k.dstPort >= 1024 {
		k.dstPort = 0
	}
	return k
}

// Stats returns the counters and the current size.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Minutes, st.Rows, st.Bytes = len(s.minutes), s.rows, int64(s.rows)*entryBytes
	return st
}

// Options returns the options the store runs with, defaults filled.
func (s *Store) Options() Options { return s.opts }
