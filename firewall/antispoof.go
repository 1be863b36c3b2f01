package firewall

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Anti-spoofing
//
// A tunnel owns source addresses: the WireGuard interface its prefix and
// every peer's allowed IPs (the addresses wireguard-go authenticated), a
// GRE or IPsec tunnel its tunnel subnet and the prefixes routed through
// it. A packet whose source lies in a tunnel's addresses but that arrived
// on any other interface is forged: it is dropped at the top of the rules
// chain (prerouting, priority raw, before conntrack and before any
// firewall rule or identity set sees it) and counted per owner.
//
// The ranges of every tunnel are cut into disjoint intervals, each with
// the interfaces that own it (a prefix routed through two GRE tunnels, for
// ECMP or as a backup, is owned by both), and placed in one interval
// verdict map per family, spoof4 and spoof6: a packet pays one lookup,
// however many tunnels and prefixes there are. An element jumps to the
// chain of its owners, spoof_<k>, which returns when the input interface
// is one of them and otherwise counts the packet in the named counter
// spoof_<k> and drops it.
//
// Since identity sets hold only addresses of the WireGuard interface,
// this is also what binds an identity to its tunnel: a packet matches
// identity.email or identity.groups only if it came through the tunnel
// that authenticated it.

// TunnelSources is a tunnel interface and the source addresses that may
// arrive only through it.
type TunnelSources struct {
	// Interface is the interface name; a name ending in "*" stands for
	// every interface whose name starts with what comes before it (charon's
	// kernel-libipsec device, ipsecN).
	Interface string
	// Prefixes are the source addresses it owns. A prefix of length 0 is
	// ignored: a tunnel that may carry any source owns none exclusively.
	Prefixes []netip.Prefix
}

// SpoofCounter names the counter of one group of owners.
type SpoofCounter struct {
	// Counter is the name of the named counter object.
	Counter string
	// Interface is the owners' interface names joined with ",": the
	// interface label of edgegw_firewall_spoofed_packets_total.
	Interface string
}

// Names of the anti-spoofing maps; the chains and counters are
// spoofChain(k).
const (
	spoofMap4 = "spoof4"
	spoofMap6 = "spoof6"
)

func spoofChain(k int) string { return fmt.Sprintf("spoof_%d", k) }

// segment is a disjoint range of addresses with its owners.
type segment struct {
	lo, hi netip.Addr
	owners string // sorted interface names joined with ","
}

// ownedSegments cuts the tunnels' prefixes of one family into disjoint,
// sorted ranges, each with the set of interfaces whose prefixes cover it;
// neighbouring ranges with the same owners are merged.
func ownedSegments(ts []TunnelSources, v6 bool) []segment {
	type owned struct {
		lo, hi netip.Addr
		ifc    string
	}
	var rs []owned
	var bounds []netip.Addr
	for _, t := range ts {
		for _, p := range t.Prefixes {
			if !p.IsValid() || p.Addr().Is6() != v6 || p.Bits() == 0 || t.Interface == "" {
				continue
			}
			p = p.Masked()
			r := owned{p.Addr(), lastAddr(p), t.Interface}
			rs = append(rs, r)
			bounds = append(bounds, r.lo)
			if nx := r.hi.Next(); nx.IsValid() {
				bounds = append(bounds, nx)
			}
		}
	}
	slices.SortFunc(bounds, netip.Addr.Compare)
	bounds = slices.Compact(bounds)
	var out []segment
	for i, lo := range bounds {
		var hi netip.Addr
		if i+1 < len(bounds) {
			hi = bounds[i+1].Prev()
		} else {
			hi = lastAddr(netip.PrefixFrom(lo, 0).Masked()) // the family's last address
		}
		var ifs []string
		for _, r := range rs {
			if r.lo.Compare(lo) <= 0 && lo.Compare(r.hi) <= 0 {
				ifs = append(ifs, r.ifc)
			}
		}
		if len(ifs) == 0 {
			continue
		}
		slices.Sort(ifs)
		key := strings.Join(slices.Compact(ifs), ",")
		if n := len(out); n > 0 && out[n-1].owners == key && out[n-1].hi.Next() == lo {
			out[n-1].hi = hi
			continue
		}
		out = append(out, segment{lo, hi, key})
	}
	return out
}

// antispoof returns the base-chain rules of the anti-spoofing stage, the
// chains and maps they use and their counters; nothing without tunnels.
func (s *Spec) antispoof() (base [][]expr.Any, chains []Chain, sets []Set, ctrs []SpoofCounter) {
	seg4, seg6 := ownedSegments(s.Tunnels, false), ownedSegments(s.Tunnels, true)
	if len(seg4)+len(seg6) == 0 {
		return nil, nil, nil, nil
	}
	chainOf := map[string]string{}
	for _, sg := range slices.Concat(seg4, seg6) {
		if _, ok := chainOf[sg.owners]; ok {
			continue
		}
		name := spoofChain(len(ctrs))
		chainOf[sg.owners] = name
		ctrs = append(ctrs, SpoofCounter{Counter: name, Interface: sg.owners})
		ch := Chain{Name: name}
		for _, ifc := range strings.Split(sg.owners, ",") {
			ch.Rules = append(ch.Rules, []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnamePattern(ifc)},
				verdict(expr.VerdictReturn, ""),
			})
		}
		ch.Rules = append(ch.Rules, []expr.Any{
			&expr.Objref{Type: objCounter, Name: name},
			verdict(expr.VerdictDrop, ""),
		})
		chains = append(chains, ch)
	}
	for _, f := range []struct {
		segs []segment
		v6   bool
		name string
	}{{seg4, false, spoofMap4}, {seg6, true, spoofMap6}} {
		if len(f.segs) == 0 {
			continue
		}
		set := Set{Name: f.name, Key: addrKey(f.v6), Interval: true, Map: true, V6: f.v6}
		for _, sg := range f.segs {
			set.Elements = append(set.Elements, nftables.SetElement{Key: sg.lo.AsSlice(),
				VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chainOf[sg.owners]}})
			// Every interval has its end, even where the next one
			// starts: the kernel takes a start with no end before the
			// next start for an overlap.
			if nx := sg.hi.Next(); nx.IsValid() {
				set.Elements = append(set.Elements, nftables.SetElement{Key: nx.AsSlice(), IntervalEnd: true})
			}
		}
		sets = append(sets, set)
		a := alt{nfproto: family(!f.v6), l4proto: -1}
		l := addrLoad("ip.src", !f.v6)
		base = append(base, append(a.lower(),
			&expr.Payload{DestRegister: 1, Base: l.base, Offset: l.off, Len: l.len},
			&expr.Lookup{SourceRegister: 1, SetName: f.name, IsDestRegSet: true, DestRegister: 0}))
	}
	return base, chains, sets, ctrs
}

// ifnamePattern is the comparison data for an interface name: the name
// NUL-padded to IFNAMSIZ, or for "prefix*" only the prefix's bytes, which
// the kernel compares as a prefix (as nft does for iifname "ipsec*").
func ifnamePattern(n string) []byte {
	if p, ok := strings.CutSuffix(n, "*"); ok && p != "" {
		return []byte(p)
	}
	return ifname(n)
}

// identityScope returns the addresses that s.IdentityInterface alone owns,
// per family, or nil without an identity interface.
func (s *Spec) identityScope() *[2][]interval {
	if s.IdentityInterface == "" {
		return nil
	}
	var scope [2][]interval
	for i, v6 := range []bool{false, true} {
		for _, sg := range ownedSegments(s.Tunnels, v6) {
			if sg.owners == s.IdentityInterface {
				scope[i] = append(scope[i], interval{sg.lo.AsSlice(), sg.hi.AsSlice()})
			}
		}
	}
	return &scope
}

// intersectIntervals returns the parts of a that lie in b; both are sorted
// and merged.
func intersectIntervals(a, b []interval) []interval {
	var out []interval
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := a[i].lo, a[i].hi
		if bytes.Compare(b[j].lo, lo) > 0 {
			lo = b[j].lo
		}
		if bytes.Compare(b[j].hi, hi) < 0 {
			hi = b[j].hi
		}
		if bytes.Compare(lo, hi) <= 0 {
			out = append(out, interval{lo, hi})
		}
		if bytes.Compare(a[i].hi, b[j].hi) < 0 {
			i++
		} else {
			j++
		}
	}
	return out
}
