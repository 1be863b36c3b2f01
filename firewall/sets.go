package firewall

import (
	"bytes"
	"net/netip"
	"slices"

	"github.com/google/nftables"
)

// interval is an inclusive range of big-endian keys of one width.
type interval struct{ lo, hi []byte }

// next returns b+1 and false if b is the largest key of its width.
func next(b []byte) ([]byte, bool) {
	n := slices.Clone(b)
	for i := len(n) - 1; i >= 0; i-- {
		n[i]++
		if n[i] != 0 {
			return n, true
		}
	}
	return nil, false
}

// mergeIntervals sorts rs and merges overlapping and adjacent intervals,
// so that the result can be inserted into an nft interval set (which
// rejects overlaps).
func mergeIntervals(rs []interval) []interval {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b interval) int { return bytes.Compare(a.lo, b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			nx, ok := next(last.hi)
			if !ok || bytes.Compare(r.lo, nx) <= 0 {
				if bytes.Compare(r.hi, last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// singletons reports whether every interval is one key.
func singletons(rs []interval) bool {
	for _, r := range rs {
		if !bytes.Equal(r.lo, r.hi) {
			return false
		}
	}
	return true
}

// intervalElements encodes merged intervals as nft interval-set elements:
// a start key, and an end key one past the last (exclusive) flagged
// IntervalEnd, omitted when the interval runs to the largest key.
func intervalElements(rs []interval) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.lo})
		if end, ok := next(r.hi); ok {
			out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return out
}

// prefixIntervals splits prefixes by family and merges them.
func prefixIntervals(ps []netip.Prefix) (v4, v6 []interval) {
	type rng struct{ lo, hi netip.Addr }
	rs := make([]rng, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		rs = append(rs, rng{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b rng) int { return a.lo.Compare(b.lo) })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 && merged[n-1].lo.Is4() == r.lo.Is4() {
			last := &merged[n-1]
			if nx := last.hi.Next(); !nx.IsValid() || r.lo.Compare(nx) <= 0 {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	for _, r := range merged {
		iv := interval{r.lo.AsSlice(), r.hi.AsSlice()}
		if r.lo.Is4() {
			v4 = append(v4, iv)
		} else {
			v6 = append(v6, iv)
		}
	}
	return v4, v6
}

// lastAddr is the last address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	if p.Addr().Is4() {
		b := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(b)
	}
	b := p.Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

// diffIntervals returns the intervals of old that are not in cur and those
// of cur that are not in old. Both are sorted, as mergeIntervals returns
// them.
func diffIntervals(old, cur []interval) (del, add []interval) {
	i, j := 0, 0
	for i < len(old) && j < len(cur) {
		c := bytes.Compare(old[i].lo, cur[j].lo)
		if c == 0 {
			c = bytes.Compare(old[i].hi, cur[j].hi)
		}
		switch {
		case c == 0:
			i++
			j++
		case c < 0:
			del = append(del, old[i])
			i++
		default:
			add = append(add, cur[j])
			j++
		}
	}
	return append(del, old[i:]...), append(add, cur[j:]...)
}
