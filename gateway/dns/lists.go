package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/maphash"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// domainSet is an immutable set of domain names built for memory: the names
// sit back to back in one byte slice (a length byte, then the name), and an
// open-addressing table of 32-bit offsets finds them. A million names of
// twenty bytes take about 21 MB of names and 8–16 MB of table, against
// roughly 100 MB for a map[string]struct{}.
//
// Beside the table, a byte per slot holds a tag of the name's hash (0:
// empty). Most names a resolver asks about are in no list: looking one
// up reads the tags (a probe sequence is one cache line of them) and
// only on a matching tag the slot and the name, where the table alone
// read the name of every slot it probed: about one cache miss a lookup
// rather than two or three. The tags take 2–4 MB a million names.
type domainSet struct {
	seed  maphash.Seed
	blob  []byte
	slots []uint32 // offset+1 into blob; 0 is empty
	tags  []uint8  // by slot: 1 + the hash's top byte mod 255; 0 is empty
	n     int
}

var emptySet = newDomainSet(0)

func newDomainSet(hint int) *domainSet {
	size := 16
	for size < hint*2 {
		size <<= 1
	}
	return &domainSet{seed: maphash.MakeSeed(), slots: make([]uint32, size), tags: make([]uint8, size)}
}

// Len returns the number of names.
func (s *domainSet) Len() int { return s.n }

func (s *domainSet) name(off uint32) []byte {
	l := uint32(s.blob[off-1])
	return s.blob[off : off+l]
}

func tagOf(h uint64) uint8 { return uint8(1 + (h>>56)%255) }

// has reports whether name, canonical, is in the set.
func (s *domainSet) has(name string) bool {
	if s.n == 0 {
		return false
	}
	h := maphash.String(s.seed, name)
	tag, mask := tagOf(h), uint64(len(s.slots)-1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.tags[i] {
		case 0:
			return false
		case tag:
			if string(s.name(s.slots[i])) == name {
				return true
			}
		}
	}
}

// add inserts a canonical name of at most 255 bytes; false if it was there.
func (s *domainSet) add(name []byte) bool {
	if (s.n+1)*2 > len(s.slots) {
		s.grow()
	}
	h := maphash.Bytes(s.seed, name)
	tag, mask := tagOf(h), uint64(len(s.slots)-1)
	i := h & mask
	for ; s.tags[i] != 0; i = (i + 1) & mask {
		if s.tags[i] == tag && bytes.Equal(s.name(s.slots[i]), name) {
			return false
		}
	}
	s.blob = append(s.blob, byte(len(name)))
	s.slots[i] = uint32(len(s.blob))
	s.tags[i] = tag
	s.blob = append(s.blob, name...)
	s.n++
	return true
}

func (s *domainSet) grow() {
	old := s.slots
	s.slots = make([]uint32, len(old)*2)
	s.tags = make([]uint8, len(old)*2)
	mask := uint64(len(s.slots) - 1)
	for _, o := range old {
		if o == 0 {
			continue
		}
		h := maphash.Bytes(s.seed, s.name(o))
		i := h & mask
		for s.tags[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i], s.tags[i] = o, tagOf(h)
	}
}

// parseList reads a domain list: one entry a line, in any mix of
//
//	example.com                 plain (a leading "*." or "." is dropped)
//	0.0.0.0 a.example b.example hosts format (the address is ignored)
//	||ads.example^              adblock style, with or without $options
//
// Blank lines, "#" comments (also at the end of a line), adblock "!"
// comments and "[Adblock …]" headers are skipped, as are exception rules
// (@@), hosts-file names such as localhost, and lines that hold no valid
// name. bad counts the lines skipped for being invalid.
func parseList(r io.Reader) (set *domainSet, bad int, err error) {
	set = newDomainSet(0)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	buf := make([]byte, 0, 256)
	for sc.Scan() {
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '!' || line[0] == '[' {
			continue
		}
		if bytes.HasPrefix(line, []byte("@@")) {
			continue
		}
		if bytes.HasPrefix(line, []byte("||")) {
			name, rest, _ := bytes.Cut(line[2:], []byte("^"))
			if len(rest) > 0 && rest[0] != '$' {
				bad++
				continue
			}
			if !addTo(set, &buf, name) {
				bad++
			}
			continue
		}
		first, rest, _ := bytes.Cut(line, []byte{' '})
		if len(rest) == 0 {
			first, rest, _ = bytes.Cut(line, []byte{'\t'})
		}
		if _, perr := netip.ParseAddr(string(first)); perr == nil {
			ok := false
			for _, f := range bytes.Fields(rest) {
				if hostsName(f) {
					ok = true
					continue
				}
				if addTo(set, &buf, f) {
					ok = true
				}
			}
			if !ok && len(bytes.Fields(rest)) > 0 {
				bad++
			}
			continue
		}
		if len(rest) > 0 {
			bad++
			continue
		}
		name := bytes.TrimPrefix(first, []byte("*."))
		name = bytes.TrimPrefix(name, []byte("."))
		if !addTo(set, &buf, name) {
			bad++
		}
	}
	if err := sc.Err(); err != nil {
		return nil, bad, err
	}
	return set, bad, nil
}

// addTo adds name to set if it is valid, using *buf as scratch space.
func addTo(set *domainSet, buf *[]byte, name []byte) bool {
	d := appendDomain((*buf)[:0], name)
	if d == nil {
		return false
	}
	*buf = d
	set.add(d)
	return true
}

// hostsName reports the names of a stock hosts file that are not domains
// to block.
func hostsName(f []byte) bool {
	switch string(f) {
	case "localhost", "localhost.localdomain", "local", "broadcasthost",
		"ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
		"ip6-allnodes", "ip6-allrouters", "ip6-allhosts", "0.0.0.0":
		return true
	}
	return false
}

// appendDomain appends name lowercased, without a final dot, if it is a
// valid domain name (letters, digits, '-', '_', labels of 1–63 bytes, at
// most 253 bytes); otherwise it returns nil.
func appendDomain(dst, name []byte) []byte {
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if len(name) == 0 || len(name) > 253 {
		return nil
	}
	label := 0
	for _, c := range name {
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			if label == 0 {
				return nil
			}
			label = -1
		default:
			return nil
		}
		label++
		if label > 63 {
			return nil
		}
		dst = append(dst, c)
	}
	if label == 0 {
		return nil
	}
	return dst
}

// domainList is a named list of domains, a [rules.List] of strings whose
// contents are swapped atomically on refresh: compiled policies keep it and
// always see the latest good copy.
type domainList struct {
	name string
	set  atomic.Pointer[domainSet]

	mu      sync.Mutex // guards the fields below
	file    string
	refresh time.Duration
	loaded  time.Time // last good load
	next    time.Time // next refresh due; zero: never
	lastErr error
}

func newDomainList(name string) *domainList {
	l := &domainList{name: name}
	l.set.Store(emptySet)
	return l
}

// ElemType implements [rules.List].
func (l *domainList) ElemType() rules.Type { return rules.TypeString }

// Contains implements [rules.List].
func (l *domainList) Contains(v rules.Value) bool {
	return v.Type == rules.TypeString && l.set.Load().has(v.Str)
}

// Len returns the number of names in the current copy.
func (l *domainList) Len() int { return l.set.Load().Len() }

// load reads the list's file and swaps it in. On failure the last good copy
// stays and the error is returned (and kept for Status).
func (l *domainList) load(now time.Time) (n, bad int, err error) {
	l.mu.Lock()
	file := l.file
	if l.refresh > 0 {
		l.next = now.Add(l.refresh)
	}
	l.mu.Unlock()
	set, bad, err := readList(file)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastErr = err
	if err != nil {
		return l.set.Load().Len(), bad, err
	}
	l.set.Store(set)
	l.loaded = now
	return set.Len(), bad, nil
}

func readList(file string) (*domainSet, int, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	set, bad, err := parseList(f)
	if err != nil {
		return nil, bad, fmt.Errorf("read %s: %w", file, err)
	}
	return set, bad, nil
}
