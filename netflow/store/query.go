package store

import (
	"cmp"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Dimension is a field a query groups by.
type Dimension string

// The dimensions, as named in /api/v1/flows.
const (
	DimExporter Dimension = "exporter"  // the router that exported the flow
	DimSource   Dimension = "source"    // nflog, netflow, ipfix, sflow
	DimSrc      Dimension = "src"       // source address, cut to Query.PrefixLen4/6
	DimDst      Dimension = "dst"       // destination address, likewise
	DimSrcPort  Dimension = "src_port"  //
	DimDstPort  Dimension = "dst_port"  //
	DimProtocol Dimension = "protocol"  // IP protocol number
	DimTCPFlags Dimension = "tcp_flags" // TCP flags byte
	DimVerdict  Dimension = "verdict"   // pass or drop (the gateway's own samples)
	DimTunnel   Dimension = "tunnel"    // the tunnel (the gateway's own samples)
)

// nDims is len(Dimensions).
const nDims = 10

// Dimensions lists every dimension.
var Dimensions = [nDims]Dimension{DimExporter, DimSource, DimSrc, DimDst, DimSrcPort, DimDstPort, DimProtocol, DimTCPFlags, DimVerdict, DimTunnel}

// Filter keeps the flows that match every non-empty field; a field with
// several values matches any of them.
type Filter struct {
	Exporter, Src, Dst []netip.Prefix
	SrcPort, DstPort   []uint16
	Protocol, TCPFlags []uint8
	Source, Verdict    []string
	Tunnel             []string
}

func anyPrefix(ps []netip.Prefix, a netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func anyOf[T comparable](vs []T, v T) bool { return len(vs) == 0 || slices.Contains(vs, v) }

// empty reports whether f keeps every flow.
func (f *Filter) empty() bool {
	return len(f.Exporter) == 0 && len(f.Src) == 0 && len(f.Dst) == 0 && len(f.SrcPort) == 0 && len(f.DstPort) == 0 &&
		len(f.Protocol) == 0 && len(f.TCPFlags) == 0 && len(f.Source) == 0 && len(f.Verdict) == 0 && len(f.Tunnel) == 0
}

func (f *Filter) match(k *key) bool {
	return anyPrefix(f.Exporter, k.exporter) && anyPrefix(f.Src, k.src) && anyPrefix(f.Dst, k.dst) &&
		anyOf(f.SrcPort, k.srcPort) && anyOf(f.DstPort, k.dstPort) && anyOf(f.Protocol, k.protocol) &&
		anyOf(f.TCPFlags, k.tcpFlags) && anyOf(f.Source, k.source) && anyOf(f.Verdict, k.verdict) && anyOf(f.Tunnel, k.tunnel)
}

// Metric orders groups for top-N.
type Metric string

// Metrics.
const (
	Bits    Metric = "bits"
	Packets Metric = "packets"
)

// MaxSteps bounds a series' points, so one query cannot allocate without
// limit.
const MaxSteps = 10080 // 7 days of minutes

// Query selects flows by time and filter, groups them and returns the top
// groups.
type Query struct {
	// From and To bound the minutes counted: those that start in [From, To).
	From, To time.Time
	Filter   Filter
	// GroupBy are the dimensions of each group; none: one group of all.
	GroupBy []Dimension
	// PrefixLen4 and PrefixLen6 cut addresses when grouping by src or
	// dst: 24 groups IPv4 addresses by /24. 0: whole addresses.
	PrefixLen4, PrefixLen6 int
	Top                    int    // the N largest groups; 0: all
	OrderBy                Metric // what "largest" means; "": Bits
	// Step > 0 adds a series of rates per Step (a multiple of a minute) to
	// each group.
	Step time.Duration
}

// Group is one group of a Result.
type Group struct {
	Key              map[Dimension]string `json:"key"`
	Packets          uint64               `json:"packets"`
	Bytes            uint64               `json:"bytes"`
	BitsPerSecond    float64              `json:"bits_per_second"` // average over the query's range
	PacketsPerSecond float64              `json:"packets_per_second"`
	Series           []Point              `json:"series,omitempty"`
}

// Point is the average rate over one step starting at Time.
type Point struct {
	Time             time.Time `json:"time"`
	BitsPerSecond    float64   `json:"bits_per_second"`
	PacketsPerSecond float64   `json:"packets_per_second"`
}

// Result answers a Query.
type Result struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Groups []Group   `json:"groups"`
}

// Validate checks a query and fills its defaults.
func (q *Query) Validate() error {
	if !q.To.After(q.From) {
		return fmt.Errorf("the time range is empty: to %v is not after from %v", q.To, q.From)
	}
	for _, d := range q.GroupBy {
		if !slices.Contains(Dimensions[:], d) {
			return fmt.Errorf("cannot group by %q: one of %v", d, Dimensions)
		}
	}
	if q.PrefixLen4 < 0 || q.PrefixLen4 > 32 {
		return fmt.Errorf("IPv4 prefix length %d: must be from 0 to 32", q.PrefixLen4)
	}
	if q.PrefixLen6 < 0 || q.PrefixLen6 > 128 {
		return fmt.Errorf("IPv6 prefix length %d: must be from 0 to 128", q.PrefixLen6)
	}
	if q.Top < 0 {
		return fmt.Errorf("top %d: must not be negative", q.Top)
	}
	if q.OrderBy == "" {
		q.OrderBy = Bits
	}
	if q.OrderBy != Bits && q.OrderBy != Packets {
		return fmt.Errorf("order by %q: bits or packets", q.OrderBy)
	}
	if q.Step < 0 || q.Step%time.Minute != 0 {
		return fmt.Errorf("step %v: must be a whole number of minutes", q.Step)
	}
	if q.Step > 0 && q.To.Sub(q.From)/q.Step > MaxSteps {
		return fmt.Errorf("step %v over %v is more than %d points", q.Step, q.To.Sub(q.From), MaxSteps)
	}
	return nil
}

// acc is a group being summed.
type acc struct {
	counts
	steps []counts
}

// Query runs q.
func (s *Store) Query(q Query) (Result, error) {
	if err := q.Validate(); err != nil {
		return Result{}, fmt.Errorf("flow query: %w", err)
	}
	var by [nDims]bool
	for _, d := range q.GroupBy {
		by[slices.Index(Dimensions[:], d)] = true
	}
	nsteps := 0
	if q.Step > 0 {
		nsteps = int((q.To.Sub(q.From) + q.Step - 1) / q.Step)
	}
	s.mu.Lock()
	lo, _ := slices.BinarySearchFunc(s.minutes, q.From, func(m *minute, t time.Time) int { return m.start.Compare(t) })
	hi, _ := slices.BinarySearchFunc(s.minutes, q.To, func(m *minute, t time.Time) int { return m.start.Compare(t) })
	// A copy: Add may insert or evict minutes while the query runs; an
	// evicted minute is still read whole.
	minutes := slices.Clone(s.minutes[lo:max(lo, hi)])
	sumDim := -1
	if len(q.GroupBy) == 1 {
		sumDim = slices.Index(Dimensions[:], q.GroupBy[0])
	}
	parts := s.planHours(&q, sumDim, minutes)
	s.mu.Unlock()

	// A long range is scanned in parallel, a share of the minutes per
	// core, and the shares merged: on a busy appliance each scanning
	// thread gets its own share of the CPU.
	nscan := min(runtime.GOMAXPROCS(0), maxScanners, max(len(minutes)/minutesPerScanner, 1), max(len(parts), 1))
	scans := make([]scan, nscan)
	var wg sync.WaitGroup
	for i := range scans {
		chunk := parts[i*len(parts)/nscan : (i+1)*len(parts)/nscan]
		wg.Add(1)
		go func() { // owned here: Query waits for it below
			defer wg.Done()
			scans[i] = scanParts(&q, &by, sumDim, nsteps, chunk)
		}()
	}
	wg.Wait()
	if sumDim >= 0 {
		s.keepSums(parts)
	}
	keys, accs := mergeScans(scans, nsteps)

	metric := func(i int) uint64 {
		if q.OrderBy == Packets {
			return accs[i].packets
		}
		return accs[i].bytes
	}
	// larger orders groups: bigger metric first, then by key so equal
	// groups come out in the same order every time.
	larger := func(i, j int) int {
		if c := cmp.Compare(metric(j), metric(i)); c != 0 {
			return c
		}
		return compareKeys(&keys[i], &keys[j])
	}
	top := selectTop(len(accs), q.Top, larger)
	secs := q.To.Sub(q.From).Seconds()
	res := Result{From: q.From, To: q.To, Groups: make([]Group, 0, len(top))}
	for _, idx := range top {
		a := &accs[idx]
		g := Group{Key: render(&keys[idx], q.GroupBy), Packets: a.packets, Bytes: a.bytes,
			BitsPerSecond: float64(a.bytes) * 8 / secs, PacketsPerSecond: float64(a.packets) / secs}
		for i, c := range a.steps {
			t := q.From.Add(time.Duration(i) * q.Step)
			d := min(q.Step, q.To.Sub(t)).Seconds()
			g.Series = append(g.Series, Point{Time: t, BitsPerSecond: float64(c.bytes) * 8 / d, PacketsPerSecond: float64(c.packets) / d})
		}
		res.Groups = append(res.Groups, g)
	}
	return res, nil
}

// Parallel scans: at most maxScanners goroutines, each with at least
// minutesPerScanner minutes (a short range is not worth a goroutine; a
// variable so that tests can split short ranges).
const maxScanners = 8

var minutesPerScanner = 360

// scan is one scanner's groups: gs.keys[i] and accs[i].
type scan struct {
	gs   *groups
	accs []acc
}

// scanParts sums the rows of minutes that pass q's filter by group, and
// the hours' summaries (building those not yet built; see hours.go).
// gs indexes accs: values, not pointers, so a query with a million groups
// makes a few large allocations, not a million.
func scanParts(q *Query, by *[nDims]bool, sumDim, nsteps int, parts []part) scan {
	gs := newGroups(*q, by)
	var accs []acc
	filtered := !q.Filter.empty()
	add := func(k *key, c counts, step int) {
		if filtered && !q.Filter.match(k) {
			return
		}
		i := gs.find(k)
		if i == len(accs) {
			a := acc{}
			if nsteps > 0 {
				a.steps = make([]counts, nsteps)
			}
			accs = append(accs, a)
		}
		a := &accs[i]
		a.packets += c.packets
		a.bytes += c.bytes
		if nsteps > 0 {
			a.steps[step].packets += c.packets
			a.steps[step].bytes += c.bytes
		}
	}
	stepOf := func(t time.Time) int {
		if nsteps == 0 {
			return 0
		}
		return int(t.Sub(q.From) / q.Step)
	}
	scanMinute := func(m *minute) {
		m.mu.Lock()
		step := stepOf(m.start)
		for i := range m.frozen {
			add(&m.frozen[i].k, m.frozen[i].c, step)
		}
		for k, c := range m.rows {
			add(&k, c, step)
		}
		m.mu.Unlock()
	}
	for _, p := range parts {
		if p.m != nil {
			scanMinute(p.m)
			continue
		}
		h := p.h
		sum := h.sum
		if sum == nil {
			sum = buildSum(h, sumDim)
			h.built = sum
		}
		if sum.worthless {
			for _, m := range h.minutes {
				scanMinute(m)
			}
			continue
		}
		step := stepOf(h.start)
		for i := range sum.keys {
			add(&sum.keys[i], sum.c[i], step)
		}
	}
	return scan{gs: gs, accs: accs}
}

// mergeScans adds the later scans' groups into the first's, through the
// first's index (a group key finds its own group).
func mergeScans(scans []scan, nsteps int) ([]key, []acc) {
	gs, accs := scans[0].gs, scans[0].accs
	for _, sc := range scans[1:] {
		for j := range sc.gs.keys {
			i := gs.find(&sc.gs.keys[j])
			if i == len(accs) {
				accs = append(accs, sc.accs[j])
				continue
			}
			a := &accs[i]
			a.packets += sc.accs[j].packets
			a.bytes += sc.accs[j].bytes
			for s := range nsteps {
				a.steps[s].packets += sc.accs[j].steps[s].packets
				a.steps[s].bytes += sc.accs[j].steps[s].bytes
			}
		}
	}
	return gs.keys, accs
}

// selectTop returns the indexes of the n first of count items in the
// order cmp gives (all of them for n 0), sorted: a bounded heap, so a
// top-10 of a million groups does not sort the million.
func selectTop(count, n int, cmp func(i, j int) int) []int {
	if n <= 0 || n >= count {
		all := make([]int, count)
		for i := range all {
			all[i] = i
		}
		slices.SortFunc(all, cmp)
		return all
	}
	// h is a heap whose root is the last of the n best so far.
	h := make([]int, 0, n)
	worse := func(a, b int) bool { return cmp(h[a], h[b]) > 0 }
	down := func(i int) {
		for {
			l, m := 2*i+1, i
			if l < len(h) && worse(l, m) {
				m = l
			}
			if r := l + 1; r < len(h) && worse(r, m) {
				m = r
			}
			if m == i {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for i := range count {
		if len(h) < n {
			h = append(h, i)
			for j := len(h) - 1; j > 0; {
				p := (j - 1) / 2
				if !worse(j, p) {
					break
				}
				h[j], h[p] = h[p], h[j]
				j = p
			}
			continue
		}
		if cmp(i, h[0]) < 0 {
			h[0] = i
			down(0)
		}
	}
	slices.SortFunc(h, cmp)
	return h
}

// groups finds the group of each row. Grouping by one dimension, the most
// common query (a top-N by destination, by port, by exporter), takes an
// index on that dimension alone: a small array for ports, protocols and
// flags, a map keyed by one address or string otherwise, which is several
// times cheaper than hashing a whole row key. Other groupings hash the
// row's key with the other dimensions zeroed.
type groups struct {
	mode         int // one of the group* constants
	by           *[nDims]bool
	bits4, bits6 int
	dim          int // the one dimension (groupAddr, groupString, groupSmall)

	keys  []key       // each group's key, by index
	all   map[key]int // groupKey
	addrs map[netip.Addr]int
	v4    map[uint32]int // IPv4 addresses, cut to bits4: a cheaper hash
	mask4 uint32
	strs  map[string]int
	small []int32 // index+1 by port, protocol or flags; 0: none yet
	// The last address and its group: rows of a minute often repeat it.
	last    netip.Addr
	lastIdx int
}

const (
	groupKey = iota
	groupNone
	groupAddr
	groupString
	groupSmall
)

func newGroups(q Query, by *[nDims]bool) *groups {
	g := &groups{mode: groupKey, by: by, bits4: q.PrefixLen4, bits6: q.PrefixLen6, lastIdx: -1}
	dims := 0
	for i, b := range by {
		if b {
			dims++
			g.dim = i
		}
	}
	switch {
	case dims == 0:
		g.mode = groupNone
	case dims > 1:
		g.all = map[key]int{}
	case g.dim == 0 || g.dim == 2 || g.dim == 3: // exporter, src, dst
		g.mode, g.addrs, g.v4 = groupAddr, map[netip.Addr]int{}, map[uint32]int{}
		g.mask4 = ^uint32(0)
		if g.dim != 0 && g.bits4 > 0 {
			g.mask4 = ^uint32(0) << (32 - g.bits4)
		}
	case g.dim == 1 || g.dim == 8 || g.dim == 9: // source, verdict, tunnel
		g.mode, g.strs = groupString, map[string]int{}
	case g.dim == 4 || g.dim == 5: // ports
		g.mode, g.small = groupSmall, make([]int32, 1<<16)
	default: // protocol, TCP flags
		g.mode, g.small = groupSmall, make([]int32, 1<<8)
	}
	return g
}

// find returns the index of k's group; len(g.keys)-1 after adding a new
// one, so the caller adds its accumulator when the index is new.
func (g *groups) find(k *key) int {
	switch g.mode {
	case groupNone:
		if len(g.keys) == 0 {
			g.keys = append(g.keys, key{})
		}
		return 0
	case groupAddr:
		a := k.exporter
		switch g.dim {
		case 2:
			a = k.src
		case 3:
			a = k.dst
		}
		if g.lastIdx >= 0 && a == g.last {
			return g.lastIdx
		}
		g.last = a
		if a.Is4() {
			b := a.As4()
			v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) & g.mask4
			i, ok := g.v4[v]
			if !ok {
				i = g.add(groupKeyOf(k, g.by, g.bits4, g.bits6))
				g.v4[v] = i
			}
			g.lastIdx = i
			return i
		}
		if g.dim != 0 {
			a = cut(a, g.bits4, g.bits6)
		}
		i, ok := g.addrs[a]
		if !ok {
			i = g.add(groupKeyOf(k, g.by, g.bits4, g.bits6))
			g.addrs[a] = i
		}
		g.lastIdx = i
		return i
	case groupString:
		v := k.source
		switch g.dim {
		case 8:
			v = k.verdict
		case 9:
			v = k.tunnel
		}
		i, ok := g.strs[v]
		if !ok {
			i = g.add(groupKeyOf(k, g.by, g.bits4, g.bits6))
			g.strs[v] = i
		}
		return i
	case groupSmall:
		var v int
		switch g.dim {
		case 4:
			v = int(k.srcPort)
		case 5:
			v = int(k.dstPort)
		case 6:
			v = int(k.protocol)
		default:
			v = int(k.tcpFlags)
		}
		if i := g.small[v]; i > 0 {
			return int(i - 1)
		}
		i := g.add(groupKeyOf(k, g.by, g.bits4, g.bits6))
		g.small[v] = int32(i + 1)
		return i
	}
	gk := groupKeyOf(k, g.by, g.bits4, g.bits6)
	i, ok := g.all[gk]
	if !ok {
		i = g.add(gk)
		g.all[gk] = i
	}
	return i
}

func (g *groups) add(k key) int {
	g.keys = append(g.keys, k)
	return len(g.keys) - 1
}

// groupKeyOf keeps the dimensions grouped by and zeroes the others.
func groupKeyOf(k *key, by *[nDims]bool, bits4, bits6 int) key {
	var g key
	if by[0] {
		g.exporter = k.exporter
	}
	if by[1] {
		g.source = k.source
	}
	if by[2] {
		g.src = cut(k.src, bits4, bits6)
	}
	if by[3] {
		g.dst = cut(k.dst, bits4, bits6)
	}
	if by[4] {
		g.srcPort = k.srcPort
	}
	if by[5] {
		g.dstPort = k.dstPort
	}
	if by[6] {
		g.protocol = k.protocol
	}
	if by[7] {
		g.tcpFlags = k.tcpFlags
	}
	if by[8] {
		g.verdict = k.verdict
	}
	if by[9] {
		g.tunnel = k.tunnel
	}
	return g
}

func cut(a netip.Addr, bits4, bits6 int) netip.Addr {
	bits := bits6
	if a.Is4() {
		bits = bits4
	}
	if bits == 0 {
		return a
	}
	p, _ := a.Prefix(bits)
	return p.Addr()
}

func compareKeys(x, y *key) int {
	return cmp.Or(x.exporter.Compare(y.exporter), x.src.Compare(y.src), x.dst.Compare(y.dst),
		cmp.Compare(x.srcPort, y.srcPort), cmp.Compare(x.dstPort, y.dstPort), cmp.Compare(x.protocol, y.protocol),
		cmp.Compare(x.tcpFlags, y.tcpFlags), cmp.Compare(x.source, y.source), cmp.Compare(x.verdict, y.verdict),
		cmp.Compare(x.tunnel, y.tunnel))
}

// render names a group's grouped dimensions.
func render(k *key, dims []Dimension) map[Dimension]string {
	m := make(map[Dimension]string, len(dims))
	addr := func(a netip.Addr) string {
		if !a.IsValid() {
			return ""
		}
		return a.String()
	}
	for _, d := range dims {
		var v string
		switch d {
		case DimExporter:
			v = addr(k.exporter)
		case DimSource:
			v = k.source
		case DimSrc:
			v = addr(k.src)
		case DimDst:
			v = addr(k.dst)
		case DimSrcPort:
			v = strconv.Itoa(int(k.srcPort))
		case DimDstPort:
			v = strconv.Itoa(int(k.dstPort))
		case DimProtocol:
			v = strconv.Itoa(int(k.protocol))
		case DimTCPFlags:
			v = strconv.Itoa(int(k.tcpFlags))
		case DimVerdict:
			v = k.verdict
		case DimTunnel:
			v = k.tunnel
		}
		m[d] = v
	}
	return m
}
