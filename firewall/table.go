package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// Identity is a user and the source addresses their traffic comes from
// (a WireGuard peer's allowed IPs, an enrolled device's address). It is
// what identity.email, identity.groups and device.posture.* match on.
type Identity struct {
	Email  string
	Groups []string
	Addrs  []netip.Prefix
	// Posture is the enrolled device's posture; the zero Posture (a
	// static peer, a device without a current report) has every
	// device.posture.* field absent.
	Posture rules.Posture
}

// fill sets the identity fields of rec (reset by the caller) from id.
func (id Identity) fill(rec *rules.Record) {
	if id.Email != "" {
		_ = rec.Set("identity.email", rules.StringValue(id.Email))
	}
	_ = rec.Set("identity.groups", rules.StringsValue(id.Groups...))
	rec.SetPosture(id.Posture)
}

// Counter is a rule's packet and byte count since the last Apply.
type Counter struct {
	Packets, Bytes uint64
}

// Table applies Programs to the kernel. It is safe for concurrent use; calls
// are serialized.
type Table struct {
	log *slog.Logger

	mu       sync.Mutex
	applied  *Program // nil until an Apply succeeds
	setState map[string][]interval
	mapState map[string][]mapElem // the identity maps' elements (egress.go)
	// egressCarry holds, by policy id, the counts of identity-map elements
	// that UpdateIdentities removed since the last Apply: the policy's
	// connections did not go away with them.
	egressCarry map[string]Counter
	identities  []Identity
	geo         *geo.DB // the GeoIP snapshot for geo sets (geo.go)
	closed      bool
}

// New returns a Table that has not touched the kernel yet.
func New(log *slog.Logger) *Table {
	return &Table{log: log.With("component", "firewall")}
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func nftSet(s *Set) *nftables.Set {
	ns := &nftables.Set{
		Table: table(), Name: s.Name, KeyType: s.Key, Interval: s.Interval,
		KeyByteOrder: binaryutil.BigEndian,
	}
	if s.Key.Name == nftables.TypeIFName.Name {
		ns.KeyByteOrder = binaryutil.NativeEndian // strings are shown in host order
	}
	if s.Dynamic {
		ns.Dynamic, ns.HasTimeout, ns.Timeout, ns.Size = true, true, meterTimeout, meterSize
		if s.Size > 0 {
			ns.Size = s.Size
		}
	}
	if s.Map {
		ns.IsMap, ns.DataType = true, nftables.TypeVerdict
	}
	if s.egressMap != nil {
		// client address → egress address, each element counting the
		// connections it sends out (Table.EgressCounts).
		ns.IsMap, ns.DataType, ns.Counter = true, s.Key, true
	}
	return ns
}

// Apply replaces the whole table with p in one netlink transaction: the
// table is added (a no-op if present), deleted and created afresh in the
// same batch, so there is no moment with a partial ruleset and a failure
// leaves the previous table in place. Identity sets are filled from the
// last UpdateIdentities, geo sets from the last UpdateGeo; list sets get the Program's elements (from the
// Config), replacing any UpdateList since the last Apply. Counters start
// from zero.
func (t *Table) Apply(p *Program) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("firewall: table is closed")
	}
	c, err := newBatch()
	if err != nil {
		return err
	}
	tb := table()
	c.AddTable(tb)
	c.DelTable(tb)
	c.AddTable(tb)
	for _, name := range p.Counters {
		c.AddObj(&nftables.CounterObj{Table: tb, Name: name})
	}
	// Chains first: verdict maps and rules name them. Then sets, which
	// rules look up.
	chains := make([]*nftables.Chain, len(p.Chains))
	for i, ch := range p.Chains {
		chains[i] = c.AddChain(&nftables.Chain{
			Name: ch.Name, Table: tb, Type: ch.Type, Hooknum: ch.Hook, Priority: ch.Priority, Policy: ch.Policy,
		})
	}
	state := make(map[string][]interval)
	mstate := make(map[string][]mapElem)
	for i := range p.Sets {
		s := &p.Sets[i]
		elems := s.Elements
		switch {
		case s.egressMap != nil:
			es := p.egressMapElements(s, t.identities)
			mstate[s.Name], elems = es, nftElements(es)
		case s.Identity != nil:
			rs := p.identityIntervals(s, t.identities)
			state[s.Name], elems = rs, intervalElements(rs)
		case s.Geo != nil:
			rs := geoIntervals(s, t.geo)
			state[s.Name], elems = rs, intervalElements(rs)
		case s.List != "":
			state[s.Name] = elementIntervals(s.Elements)
		}
		ns := nftSet(s)
		if err := c.AddSet(ns, nil); err != nil {
			return fmt.Errorf("firewall: set %s: %w", s.Name, err)
		}
		if err := chunked(elems, func(es []nftables.SetElement) error { return c.SetAddElements(ns, es) }); err != nil {
			return fmt.Errorf("firewall: set %s: %w", s.Name, err)
		}
	}
	for i, ch := range p.Chains {
		for _, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: tb, Chain: chains[i], Exprs: r})
		}
	}
	if err := c.commit(); err != nil {
		return fmt.Errorf("firewall: apply table inet %s: %w", TableName, err)
	}
	t.applied, t.setState, t.mapState, t.egressCarry = p, state, mstate, map[string]Counter{}
	return nil
}

// elemChunk bounds the elements of one netlink message: their attribute
// length is 16 bits (google/nftables#303), and an IPv6 interval element
// takes about 50 bytes. Chunks stay in the same batch.
const elemChunk = 512

// chunked calls add on es in chunks of at most elemChunk, keeping interval
// start and end elements together.
func chunked(es []nftables.SetElement, add func([]nftables.SetElement) error) error {
	for len(es) > 0 {
		n := min(len(es), elemChunk)
		if n < len(es) && es[n].IntervalEnd {
			n++
		}
		if err := add(es[:n]); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

// elementIntervals reads back the intervals of interval-set elements made
// by intervalElements.
func elementIntervals(es []nftables.SetElement) []interval {
	var out []interval
	for i := 0; i < len(es); i++ {
		lo := es[i].Key
		hi := make([]byte, len(lo))
		for j := range hi {
			hi[j] = 0xff
		}
		if i+1 < len(es) && es[i+1].IntervalEnd {
			hi = prev(es[i+1].Key)
			i++
		}
		out = append(out, interval{lo, hi})
	}
	return out
}

// prev returns b-1; b is not zero.
func prev(b []byte) []byte {
	n := append([]byte(nil), b...)
	for i := len(n) - 1; i >= 0; i-- {
		n[i]--
		if n[i] != 0xff {
			break
		}
	}
	return n
}

// identityIntervals returns the contents of identity set s: the
// addresses of the users for whom its condition holds, within the
// program's identity scope.
func (p *Program) identityIntervals(s *Set, ids []Identity) []interval {
	rs := identityIntervals(s.Identity, s.V6, ids)
	if p.identityScope == nil {
		return rs
	}
	fam := 0
	if s.V6 {
		fam = 1
	}
	return intersectIntervals(rs, p.identityScope[fam])
}

// egressMapElements returns the contents of identity map s, within the
// program's identity scope.
func (p *Program) egressMapElements(s *Set, ids []Identity) []mapElem {
	if p.identityScope == nil {
		return s.egressMap.elements(s.V6, ids, nil, false)
	}
	fam := 0
	if s.V6 {
		fam = 1
	}
	return s.egressMap.elements(s.V6, ids, p.identityScope[fam], true)
}

// identityIntervals returns the source addresses of family v6 of the users
// for whom cond holds.
func identityIntervals(cond *rules.Program, v6 bool, ids []Identity) []interval {
	rec := rules.NewRecord(rules.FirewallSchema())
	var ps []netip.Prefix
	for _, id := range ids {
		rec.Reset()
		id.fill(rec)
		if cond.Eval(rec) {
			ps = append(ps, id.Addrs...)
		}
	}
	v4s, v6s := prefixIntervals(ps)
	if v6 {
		return v6s
	}
	return v4s
}

// UpdateList replaces the contents of list name in place: one batch that
// deletes and adds only the elements that differ, without touching chains
// or rules. The list must exist in the applied Program.
func (t *Table) UpdateList(name string, items []netip.Prefix) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.applied == nil {
		return errors.New("firewall: update list: no ruleset applied")
	}
	v4, v6 := prefixIntervals(items)
	want := map[string][]interval{listSetName(name, true): v4, listSetName(name, false): v6}
	var sets []*Set
	for i := range t.applied.Sets {
		if s := &t.applied.Sets[i]; s.List == name {
			sets = append(sets, s)
		}
	}
	if len(sets) == 0 {
		return fmt.Errorf("firewall: update list: no list %q", name)
	}
	return t.updateSets(sets, want)
}

// UpdateIdentities replaces the snapshot of users and their addresses and
// updates every identity set and identity map in place, in one batch.
// Apply uses the last snapshot. An address should belong to one
// identity; one that belongs to several matches a condition if any of
// them does.
func (t *Table) UpdateIdentities(ids []Identity) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.identities = cloneIdentities(ids)
	if t.applied == nil {
		return nil
	}
	var sets, maps []*Set
	want := map[string][]interval{}
	wantMap := map[string][]mapElem{}
	for i := range t.applied.Sets {
		switch s := &t.applied.Sets[i]; {
		case s.egressMap != nil:
			maps = append(maps, s)
			wantMap[s.Name] = t.applied.egressMapElements(s, t.identities)
		case s.Identity != nil:
			sets = append(sets, s)
			want[s.Name] = t.applied.identityIntervals(s, t.identities)
		}
	}
	c, err := newBatch()
	if err != nil {
		return err
	}
	changed, err := t.addSetDiffs(c, sets, want)
	if err != nil {
		return err
	}
	gone := map[*Set][]mapElem{}
	for _, s := range maps {
		ch, g, err := t.addMapDiff(c, s, wantMap[s.Name])
		if err != nil {
			return err
		}
		changed = changed || ch
		if len(g) > 0 {
			gone[s] = g
		}
	}
	if !changed {
		return nil
	}
	// The counters of the elements about to go are read just before the
	// batch: a connection in between is not counted.
	carry := t.goneCounts(gone)
	if err := c.commit(); err != nil {
		return fmt.Errorf("firewall: update identities: %w", err)
	}
	for _, s := range sets {
		t.setState[s.Name] = want[s.Name]
	}
	for _, s := range maps {
		t.mapState[s.Name] = wantMap[s.Name]
	}
	for id, n := range carry {
		c := t.egressCarry[id]
		c.Packets += n.Packets
		c.Bytes += n.Bytes
		t.egressCarry[id] = c
	}
	return nil
}

// addMapDiff adds to c what changes identity map s from its applied
// elements to want, and returns whether anything does and the start
// elements removed. It works on whole intervals, a start with its end:
// an interval that changes in any way (its end, address or policy) is
// removed and added again, so its counter starts afresh. (Single
// elements would not do: the kernel checks each element as it is
// inserted, and refuses an end whose next element is an end left behind
// by a removed start.)
func (t *Table) addMapDiff(c *batch, s *Set, want []mapElem) (bool, []mapElem, error) {
	old := mapIntervals(t.mapState[s.Name])
	cur := mapIntervals(want)
	var del, add []mapElem
	var gone []mapElem
	for k, iv := range old {
		if _, ok := cur[k]; !ok {
			del = append(del, iv...)
			gone = append(gone, iv[0])
		}
	}
	for _, iv := range mapIntervalList(want) {
		if _, ok := old[mapIntervalKey(iv)]; !ok {
			add = append(add, iv...)
		}
	}
	ns := nftSet(s)
	if len(del) > 0 {
		if err := chunked(nftElements(del), func(es []nftables.SetElement) error { return c.SetDeleteElements(ns, es) }); err != nil {
			return false, nil, fmt.Errorf("firewall: map %s: %w", s.Name, err)
		}
	}
	if len(add) > 0 {
		if err := chunked(nftElements(add), func(es []nftables.SetElement) error { return c.SetAddElements(ns, es) }); err != nil {
			return false, nil, fmt.Errorf("firewall: map %s: %w", s.Name, err)
		}
	}
	return len(del)+len(add) > 0, gone, nil
}

// mapIntervalList splits identity-map elements, as egressMap.elements
// orders them, into intervals: a start, and its end unless it runs to
// the end of the address space.
func mapIntervalList(es []mapElem) [][]mapElem {
	var out [][]mapElem
	for i := 0; i < len(es); i++ {
		n := 1
		if i+1 < len(es) && es[i+1].end {
			n = 2
		}
		out = append(out, es[i:i+n])
		i += n - 1
	}
	return out
}

// mapIntervals indexes the intervals of es by mapIntervalKey.
func mapIntervals(es []mapElem) map[string][]mapElem {
	ivs := mapIntervalList(es)
	out := make(map[string][]mapElem, len(ivs))
	for _, iv := range ivs {
		out[mapIntervalKey(iv)] = iv
	}
	return out
}

// mapIntervalKey is all an interval is: its bounds, address and policy.
func mapIntervalKey(iv []mapElem) string {
	k := string(iv[0].key) + "\x00" + string(iv[0].val) + "\x00" + iv[0].policy
	if len(iv) == 2 {
		k += "\x00" + string(iv[1].key)
	}
	return k
}

// goneCounts reads the counters of the identity-map elements gone, by
// the policy that owns them, asking the kernel for those elements only
// (elemCounters). A map that cannot be read is logged: its elements'
// connections are then not carried over.
func (t *Table) goneCounts(gone map[*Set][]mapElem) map[string]Counter {
	out := map[string]Counter{}
	for s, es := range gone {
		keys := make([][]byte, len(es))
		for i, e := range es {
			keys[i] = e.key
		}
		cs, err := elemCounters(s.Name, keys, false)
		if err != nil {
			t.log.Warn("egress counters of removed map elements lost", "map", s.Name, "err", err)
			continue
		}
		for _, e := range es {
			if k, ok := cs[string(e.key)]; ok {
				c := out[e.policy]
				c.Packets += k.Packets
				c.Bytes += k.Bytes
				out[e.policy] = c
			}
		}
	}
	return out
}

func cloneIdentities(ids []Identity) []Identity {
	out := make([]Identity, len(ids))
	for i, id := range ids {
		out[i] = Identity{Email: id.Email, Posture: id.Posture,
			Groups: append([]string(nil), id.Groups...), Addrs: append([]netip.Prefix(nil), id.Addrs...)}
	}
	return out
}

// updateSets changes the interval sets to want in one batch.
func (t *Table) updateSets(sets []*Set, want map[string][]interval) error {
	c, err := newBatch()
	if err != nil {
		return err
	}
	changed, err := t.addSetDiffs(c, sets, want)
	if err != nil {
		return err
	}
	if !changed {
		return nil
	}
	if err := c.commit(); err != nil {
		return fmt.Errorf("firewall: update sets: %w", err)
	}
	for _, s := range sets {
		t.setState[s.Name] = want[s.Name]
	}
	return nil
}

// addSetDiffs adds to c what changes the interval sets to want, and
// returns whether anything does.
func (t *Table) addSetDiffs(c *batch, sets []*Set, want map[string][]interval) (bool, error) {
	changed := false
	for _, s := range sets {
		del, add := diffIntervals(t.setState[s.Name], want[s.Name])
		ns := nftSet(s)
		if len(del) > 0 {
			changed = true
			if err := chunked(intervalElements(del), func(es []nftables.SetElement) error { return c.SetDeleteElements(ns, es) }); err != nil {
				return false, fmt.Errorf("firewall: set %s: %w", s.Name, err)
			}
		}
		if len(add) > 0 {
			changed = true
			if err := chunked(intervalElements(add), func(es []nftables.SetElement) error { return c.SetAddElements(ns, es) }); err != nil {
				return false, fmt.Errorf("firewall: set %s: %w", s.Name, err)
			}
		}
	}
	return changed, nil
}

// Counts are the counters of the applied table, read at one time.
type Counts struct {
	// Rules are the rules' counters by rule id.
	Rules map[string]Counter
	// Spoofed are the packets dropped by the anti-spoofing stage, by the
	// interfaces that own the forged source (SpoofCounter.Interface).
	Spoofed map[string]Counter
	// RateDropped are the packets rate_limit rules dropped (over the
	// rate, or the meter full), by rule id.
	RateDropped map[string]Counter
	// Egress are the connections each egress policy gave its address
	// (the NAT chain sees a connection's first packet only), by policy id:
	// a policy compiled to rules counts with its named counter, an
	// identity-only one with the counters of the identity-map elements it
	// owns, plus those of elements removed since the last Apply.
	Egress map[string]Counter
}

// Counters reads every rule's counter from the kernel, by rule id.
func (t *Table) Counters() (map[string]Counter, error) {
	cs, err := t.ReadCounts()
	return cs.Rules, err
}

// ReadCounts reads every counter of the table from the kernel in one dump.
func (t *Table) ReadCounts() (Counts, error) {
	// The lock is held throughout: the identity maps' counters, their
	// elements' owners and the counts carried over must be of one
	// moment, or an identity update in between would make a policy's
	// count dip, which Prometheus reads as a counter reset.
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.applied
	out := Counts{Rules: map[string]Counter{}, Spoofed: map[string]Counter{}, RateDropped: map[string]Counter{},
		Egress: map[string]Counter{}}
	if p == nil {
		return out, nil
	}
	type dest struct {
		m   map[string]Counter
		key string
	}
	byName := make(map[string]dest, len(p.Rules)+len(p.Spoof))
	for _, r := range p.Rules {
		byName[r.Counter] = dest{out.Rules, r.ID}
		if r.Action == "rate_limit" {
			byName[rateDropCounter(r.Counter)] = dest{out.RateDropped, r.ID}
		}
	}
	for _, sc := range p.Spoof {
		byName[sc.Counter] = dest{out.Spoofed, sc.Interface}
	}
	if p.egress != nil {
		for _, pol := range p.egress.policies {
			byName[pol.counter] = dest{out.Egress, pol.id}
		}
	}
	c, err := nftables.New()
	if err != nil {
		return out, fmt.Errorf("firewall: netlink: %w", err)
	}
	objs, err := c.GetObjects(table())
	if err != nil {
		return out, fmt.Errorf("firewall: read counters: %w", err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			if d, ok := byName[co.Name]; ok {
				d.m[d.key] = Counter{Packets: co.Packets, Bytes: co.Bytes}
			}
		}
	}
	add := func(id string, pk, by uint64) {
		n := out.Egress[id]
		n.Packets += pk
		n.Bytes += by
		out.Egress[id] = n
	}
	for i := range p.Sets {
		s := &p.Sets[i]
		if s.egressMap == nil {
			continue
		}
		for _, id := range s.egressMap.policies {
			add(id, 0, 0) // a policy nobody used yet counts zero
		}
		// A dump read by elemCounters, not by google/nftables: its
		// generic decoder spends most of a scrape on 10,000 elements.
		cs, err := elemCounters(s.Name, nil, true)
		if err != nil {
			return out, fmt.Errorf("firewall: read egress map %s: %w", s.Name, err)
		}
		for _, e := range t.mapState[s.Name] {
			if n, ok := cs[string(e.key)]; ok && !e.end {
				add(e.policy, n.Packets, n.Bytes)
			}
		}
	}
	for id, n := range t.egressCarry {
		add(id, n.Packets, n.Bytes)
	}
	return out, nil
}

// Close deletes the table. It is idempotent.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.applied == nil {
		return nil
	}
	return RemoveTable()
}

// RemoveTable deletes edgegw's table if it exists: at shutdown, and at start
// to clear what a crashed edgegw left behind.
func RemoveTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: netlink: %w", err)
	}
	tb := table()
	// Add-then-delete in one batch deletes the table whether or not it
	// exists, without a racy list first.
	c.AddTable(tb)
	c.DelTable(tb)
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("firewall: delete table inet %s: %w", TableName, err)
	}
	return nil
}
