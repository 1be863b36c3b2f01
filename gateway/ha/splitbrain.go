package ha

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// A split brain is two active nodes: with the sync link cut, each stops
// hearing the other's adverts and VRRP makes both master, so both answer
// for the virtual addresses on the WAN and the LAN. VRRP itself cannot
// see it (its only path is the cut link), so the node looks where the
// addresses live: while master, it sends an ARP probe for its first
// virtual address every ProbeInterval; an answer from another hardware
// address, twice in a row, is a split brain (logged, counted, /readyz
// fails). Then one node yields: the one with the higher sync-link
// address, so both decide alike without talking. It raises keepalived's
// track file, which puts its instance in FAULT and drops the addresses.
// It stands down again when the peer's adverts reach the sync link (the
// link is back; keepalived follows the master as backup), or when nobody
// has answered for the addresses three probes in a row (the other node is
// gone; this one must take over).

// sbConfirm is how many probes in a row must see another holder.
const sbConfirm = 2

// sbQuiet is how many probes in a row must see no holder before a node
// that yielded takes the addresses again.
const sbQuiet = 3

// sbObs is one probe round.
type sbObs struct {
	master      bool // keepalived reports this node master
	others      int  // other hardware addresses that claimed the address
	peerAdverts bool // the peer's VRRP adverts reached the sync link
}

// sbState follows split brains across probe rounds.
type sbState struct {
	seen, quiet int
	yielded     bool
}

// sbStep is what a round decided.
type sbStep struct {
	splitBrain bool // confirmed now: another node answers while this one is master
	yield      bool // raise the track file
	standDown  bool // lower it
}

// step takes one round; yields tells whether this node is the one that
// gives way.
func (s *sbState) step(o sbObs, yields bool) sbStep {
	var r sbStep
	if s.yielded {
		switch {
		case o.peerAdverts:
			r.standDown = true
		case o.others == 0:
			s.quiet++
			r.standDown = s.quiet >= sbQuiet
		default:
			s.quiet = 0
		}
		if r.standDown {
			s.yielded, s.quiet, s.seen = false, 0, 0
		}
		return r
	}
	if !o.master || o.others == 0 {
		s.seen = 0
		return r
	}
	s.seen++
	if s.seen >= sbConfirm {
		r.splitBrain = true
		if yields {
			r.yield = true
			s.yielded, s.quiet = true, 0
		}
	}
	return r
}

// probeTarget is the virtual address the probe asks for and its link:
// the first IPv4 one, WAN before LAN (Validate requires one).
func (n *Node) probeTarget() (netip.Addr, string) {
	for _, p := range n.cfg.VirtualAddresses.WAN {
		if p.Addr().Is4() {
			return p.Addr(), n.opts.Links.WAN
		}
	}
	for _, p := range n.cfg.VirtualAddresses.LAN {
		if p.Addr().Is4() {
			return p.Addr(), n.opts.Links.LAN
		}
	}
	return netip.Addr{}, ""
}

// setYield writes keepalived's track file: "1" puts the instance in
// FAULT, "0" lets it run. Renamed into place, so keepalived never reads
// a half-written file.
func (n *Node) setYield(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	tmp := n.yieldFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(v), 0o600); err != nil {
		return fmt.Errorf("ha: yield file: %w", err)
	}
	if err := os.Rename(tmp, n.yieldFile); err != nil {
		return fmt.Errorf("ha: yield file: %w", err)
	}
	return nil
}

// watchSplitBrain probes every ProbeInterval until ctx ends. It is the
// Node's goroutine.
func (n *Node) watchSplitBrain(ctx context.Context, adverts *advertListener) {
	defer close(n.watched)
	defer adverts.close()
	ip, link := n.probeTarget()
	if !ip.IsValid() { // Validate requires an IPv4 virtual address
		n.log.Error("split brain: no IPv4 virtual address to probe for; not watching")
		return
	}
	var st sbState
	t := time.NewTicker(n.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		role, _ := n.Role()
		o := sbObs{master: role == RoleMaster, peerAdverts: adverts.fromPeer()}
		if !o.master && !st.yielded {
			st.step(o, n.yields) // a backup has nothing to probe
			n.setSplitBrain(false, nil)
			continue
		}
		var others []net.HardwareAddr
		err := n.opts.Enter(func() (err error) { others, err = othersHolding(link, ip, 200*time.Millisecond); return err })
		if err != nil {
			n.log.Warn("split-brain probe failed", "err", err)
			continue
		}
		o.others = len(others)
		r := st.step(o, n.yields)
		if n.setSplitBrain(r.splitBrain, others) {
			n.log.Error("split brain: another node answers for a virtual address while this one is master",
				"address", ip, "link", link, "others", macs(others), "this_node_yields", n.yields)
		}
		if r.yield || r.standDown {
			// Status first: keepalived acts on the file at once, and the
			// role it reports must not be seen beside a stale Yielded.
			n.mu.Lock()
			n.yielded = r.yield
			n.mu.Unlock()
			if err := n.setYield(r.yield); err != nil {
				n.log.Error("split brain: cannot change the track file", "err", err)
				n.mu.Lock()
				n.yielded = !r.yield
				n.mu.Unlock()
				st.yielded = !r.yield // try again next round
				continue
			}
			if r.yield {
				n.log.Warn("split brain: this node yields and gives up the virtual addresses (keepalived FAULT)")
			} else if o.peerAdverts {
				n.log.Info("split brain over: the peer's adverts reach the sync link again; keepalived follows them")
			} else {
				n.log.Warn("nobody answers for the virtual addresses any more: this node stands down from yielding and takes them")
			}
		}
	}
}

// setSplitBrain records a round's verdict and tells whether a new split
// brain began with it.
func (n *Node) setSplitBrain(on bool, others []net.HardwareAddr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	began := on && !n.splitBrain
	if began {
		n.splitBrains++
		now := time.Now()
		n.lastSplitBrain = &now
	}
	n.splitBrain = on
	if on {
		n.splitWith = macs(others)
	}
	return began
}

func macs(m []net.HardwareAddr) string {
	s := make([]string, len(m))
	for i, a := range m {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// Err is nil unless this node sees a split brain now: it is master and
// another node answers for the same virtual address. /readyz reports it.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.splitBrain {
		ip, _ := n.probeTarget()
		return fmt.Errorf("ha: split brain: this node is master and %s also answers for %v", n.splitWith, ip)
	}
	return nil
}
