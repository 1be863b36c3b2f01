package wireguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TakeoverConfig is what Takeover follows.
type TakeoverConfig struct {
	// VIP is the HA pair's WAN virtual IPv4 address that peers send to;
	// its arrival and departure are what the Takeover follows.
	VIP netip.Addr
	// VIP6, when valid, is the pair's WAN virtual IPv6 address: peers
	// that reach the gateway over IPv6 send to it. keepalived moves it
	// with VIP (one VRRP instance), so it is taken over with VIP.
	VIP6 netip.Addr
	// Lookup finds the peer whose tunnel address is a: a configured peer
	// or an enrolled device. It must be safe for concurrent use.
	Lookup func(a netip.Addr) (Peer, bool)
	// MarkEvery is how often the node that holds VIP records its peers
	// in conntrack (2 s when zero); Poll how often it looks whether it
	// holds VIP (100 ms when zero).
	MarkEvery, Poll time.Duration
}

// Takeover brings a device's remote users back at once after an HA
// failover. Their sessions were with the other node, and a stock client
// waits about 15 s before it starts a new handshake by itself.
//
// While this node holds the virtual address it writes, every MarkEvery,
// each peer's tunnel address into the conntrack mark of the peer's
// session (endpoint → VIP:port). conntrackd copies sessions and marks to
// the other node. When the virtual address arrives on this node (keepalived
// made it active), it reads those sessions back, finds each peer by its
// tunnel address, and initiates a handshake to the endpoint from the
// virtual address (Device.Initiate). When the address leaves this node,
// the device drops every session and endpoint (configured peers are made
// again, empty): otherwise wireguard-go would go on retrying handshakes
// with its peers from this node's own address, and a peer that answers
// moves its endpoint to the standby.
//
// Sessions to VIP6 (peers on IPv6 outer addresses) are marked and taken
// over the same way, from VIP6. A mark holds an IPv4 address, so peers
// are found by their first single IPv4 allowed (tunnel) address,
// whatever the family of the endpoint; peers without one are left to
// reconnect by themselves.
type Takeover struct {
	d    *Device
	cfg  TakeoverConfig
	port uint16
	nl   *netlink.Handle

	quit chan struct{}
	done chan struct{}
	once sync.Once

	takeovers, released, initiated, marked, errs atomic.Uint64
	mu                                           sync.Mutex
	last                                         TakeoverResult
}

// TakeoverResult is what the last takeover did.
type TakeoverResult struct {
	At        time.Time     `json:"at"`
	Sessions  int           `json:"sessions"`  // marked sessions found in conntrack
	Initiated int           `json:"initiated"` // handshake initiations sent
	Took      time.Duration `json:"took"`
	Err       string        `json:"error,omitempty"`
}

// TakeoverStats counts what a Takeover did.
type TakeoverStats struct {
	Takeovers uint64          `json:"takeovers"` // times the virtual address arrived
	Released  uint64          `json:"released"`  // times it left, and the sessions were dropped
	Initiated uint64          `json:"initiated"` // handshake initiations sent on takeovers
	Marked    uint64          `json:"marked"`    // conntrack sessions marked
	Errors    uint64          `json:"errors"`    // conntrack reads and writes that failed
	Last      *TakeoverResult `json:"last,omitempty"`
}

// FollowTakeover starts a Takeover for the device. The caller owns it and
// stops it with Close, before closing the device.
func (d *Device) FollowTakeover(cfg TakeoverConfig) (*Takeover, error) {
	if !cfg.VIP.Is4() {
		return nil, fmt.Errorf("takeover: the virtual address %v is not IPv4", cfg.VIP)
	}
	if cfg.VIP6.IsValid() && (!cfg.VIP6.Is6() || cfg.VIP6.Is4In6()) {
		return nil, fmt.Errorf("takeover: the virtual address %v is not IPv6", cfg.VIP6)
	}
	if cfg.Lookup == nil {
		return nil, fmt.Errorf("takeover: no peer lookup")
	}
	if cfg.MarkEvery <= 0 {
		cfg.MarkEvery = 2 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	d.mu.Lock()
	closed, nsfd := d.closed, d.netns
	var h *netlink.Handle
	var err error
	if !closed {
		// The device's namespace, wherever the caller runs.
		h, err = netlink.NewHandleAt(netns.NsHandle(nsfd), unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	}
	d.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("takeover: netlink: %w", err)
	}
	t := &Takeover{d: d, cfg: cfg, port: uint16(d.snap.Load().cfg.ListenPort), nl: h,
		quit: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t, nil
}

// Close stops the Takeover and waits for it; it is idempotent.
func (t *Takeover) Close() {
	t.once.Do(func() {
		close(t.quit)
		<-t.done
		t.d.setDefaultSource(netip.Addr{}, netip.Addr{})
		t.nl.Close()
	})
}

// Stats returns the counters and the last takeover.
func (t *Takeover) Stats() TakeoverStats {
	s := TakeoverStats{Takeovers: t.takeovers.Load(), Released: t.released.Load(), Initiated: t.initiated.Load(), Marked: t.marked.Load(), Errors: t.errs.Load()}
	t.mu.Lock()
	if !t.last.At.IsZero() {
		l := t.last
		s.Last = &l
	}
	t.mu.Unlock()
	return s
}

func (t *Takeover) run() {
	defer close(t.done)
	poll := time.NewTicker(t.cfg.Poll)
	defer poll.Stop()
	// Each address is followed on its own: keepalived adds them one by
	// one, so VIP6 may arrive a poll after VIP, and a handshake sent
	// from an address not yet on the node fails (EINVAL).
	var held, held6 bool
	var lastMark time.Time
	for {
		has, has6, err := t.holdsVIP()
		if err != nil {
			t.errs.Add(1)
			t.d.log.Warn("takeover: read addresses", "err", err)
		}
		switch {
		case has && !held:
			t.takeovers.Add(1)
			var vips []netip.Addr
			if has6 {
				vips = []netip.Addr{t.cfg.VIP6}
			}
			t.d.setDefaultSource(t.cfg.VIP, ifValid(has6, t.cfg.VIP6))
			t.takeover(append([]netip.Addr{t.cfg.VIP}, vips...), false)
			lastMark = time.Time{} // mark at once: the sessions are ours now
		case has && has6 && !held6:
			// VIP6 after VIP: its sessions too, counted in the same takeover.
			t.d.setDefaultSource(t.cfg.VIP, t.cfg.VIP6)
			t.takeover([]netip.Addr{t.cfg.VIP6}, true)
			lastMark = time.Time{}
		}
		if held && !has && err == nil {
			t.released.Add(1)
			t.d.setDefaultSource(netip.Addr{}, netip.Addr{})
			if err := t.d.dropSessions(); err != nil {
				t.errs.Add(1)
				t.d.log.Error("takeover: drop sessions after the virtual address left", "err", err)
			} else {
				t.d.log.Info("the virtual address left: sessions dropped", "vip", t.cfg.VIP)
			}
		} else if held6 && !has6 && has && err == nil {
			t.d.setDefaultSource(t.cfg.VIP, netip.Addr{})
		}
		if err == nil {
			held, held6 = has, has && has6
		}
		if held && time.Since(lastMark) >= t.cfg.MarkEvery {
			t.mark(held6)
			lastMark = time.Now()
		}
		select {
		case <-t.quit:
			return
		case <-poll.C:
		}
	}
}

// holdsVIP tells whether VIP, and VIP6 when set, are on one of this
// node's interfaces (VIP6 only once usable: not tentative).
func (t *Takeover) holdsVIP() (has, has6 bool, err error) {
	family := netlink.FAMILY_V4
	if t.cfg.VIP6.IsValid() {
		family = netlink.FAMILY_ALL
	}
	addrs, err := t.nl.AddrList(nil, family)
	if err != nil {
		return false, false, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		switch {
		case !ok:
		case ip.Unmap() == t.cfg.VIP:
			has = true
		case t.cfg.VIP6.IsValid() && ip == t.cfg.VIP6 && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0:
			has6 = true
		}
	}
	return has, has6, nil
}

// ifValid is a when ok, else the invalid address.
func ifValid(ok bool, a netip.Addr) netip.Addr {
	if ok {
		return a
	}
	return netip.Addr{}
}

// vips are the virtual addresses the node holds: VIP, and VIP6 when
// held6.
func (t *Takeover) vips(held6 bool) []netip.Addr {
	if held6 {
		return []netip.Addr{t.cfg.VIP, t.cfg.VIP6}
	}
	return []netip.Addr{t.cfg.VIP}
}

// family is vip's conntrack address family.
func family(vip netip.Addr) netlink.InetFamily {
	if vip.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// sessions lists the UDP sessions from peers to vip:port.
func (t *Takeover) sessions(vip netip.Addr) ([]*netlink.ConntrackFlow, error) {
	flows, err := t.nl.ConntrackTableList(netlink.ConntrackTable, family(vip))
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	ip := net.IP(vip.AsSlice())
	out := flows[:0]
	for _, f := range flows {
		if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == t.port && f.Forward.DstIP.Equal(ip) {
			out = append(out, f)
		}
	}
	return out, nil
}

// takeover initiates handshakes, from each of vips, to the peers named by
// the marked sessions to it. merge adds the outcome to the last
// takeover's (VIP6 arriving a poll after VIP) instead of replacing it.
func (t *Takeover) takeover(vips []netip.Addr, merge bool) {
	start := time.Now()
	res := TakeoverResult{At: start}
	defer func() {
		res.Took = time.Since(start)
		t.mu.Lock()
		if merge && !t.last.At.IsZero() {
			t.last.Sessions += res.Sessions
			t.last.Initiated += res.Initiated
			t.last.Took = time.Since(t.last.At)
			if res.Err != "" {
				t.last.Err = strings.TrimPrefix(t.last.Err+"; "+res.Err, "; ")
			}
		} else {
			t.last = res
		}
		t.mu.Unlock()
		t.d.log.Info("took over the virtual address: handshakes initiated to remote users",
			"vips", vips, "sessions", res.Sessions, "initiated", res.Initiated, "took", res.Took, "err", res.Err)
	}()
	var errs []error
	seen := map[Key]bool{}
	for _, vip := range vips {
		flows, err := t.sessions(vip)
		if err != nil {
			t.errs.Add(1)
			errs = append(errs, err)
			continue
		}
		var targets []Target
		for _, f := range flows {
			if f.Mark == 0 {
				continue
			}
			res.Sessions++
			p, ok := t.cfg.Lookup(markAddr(f.Mark))
			if !ok || seen[p.PublicKey] {
				continue // revoked meanwhile, or a second session of one peer
			}
			src, ok := netip.AddrFromSlice(f.Forward.SrcIP)
			if !ok {
				continue
			}
			seen[p.PublicKey] = true
			targets = append(targets, Target{Peer: p, Endpoint: netip.AddrPortFrom(src.Unmap(), f.Forward.SrcPort)})
		}
		n, err := t.d.Initiate(vip, targets)
		res.Initiated += n
		t.initiated.Add(uint64(n))
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		res.Err = err.Error()
	}
}

// mark writes each connected peer's tunnel address into the mark of its
// session to the virtual address, where it differs. It lists the whole
// conntrack table every MarkEvery: a few milliseconds for the tens of
// thousands of sessions of an office gateway.
func (t *Takeover) mark(held6 bool) {
	want := map[netip.AddrPort]uint32{}
	for _, p := range t.d.Status().Peers {
		ep, err := netip.ParseAddrPort(p.Endpoint)
		if err != nil || p.LastHandshake.IsZero() {
			continue
		}
		if m, ok := peerMark(p.AllowedIPs); ok {
			want[netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())] = m
		}
	}
	if len(want) == 0 {
		return
	}
	for _, vip := range t.vips(held6) {
		flows, err := t.sessions(vip)
		if err != nil {
			t.errs.Add(1)
			t.d.log.Warn("takeover: mark sessions", "vip", vip, "err", err)
			continue
		}
		for _, f := range flows {
			src, ok := netip.AddrFromSlice(f.Forward.SrcIP)
			if !ok {
				continue
			}
			m, ok := want[netip.AddrPortFrom(src.Unmap(), f.Forward.SrcPort)]
			if !ok || f.Mark == m {
				continue
			}
			f.Mark = m
			if err := t.nl.ConntrackUpdate(netlink.ConntrackTable, family(vip), f); err != nil {
				t.errs.Add(1)
				t.d.log.Warn("takeover: mark a session", "session", f.String(), "err", err)
				continue
			}
			t.marked.Add(1)
		}
	}
}

// peerMark is the mark naming a peer: its first single IPv4 address.
func peerMark(allowed []netip.Prefix) (uint32, bool) {
	for _, p := range allowed {
		if p.Addr().Is4() && p.IsSingleIP() {
			return binary.BigEndian.Uint32(p.Addr().AsSlice()), true
		}
	}
	return 0, false
}

func markAddr(m uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], m)
	return netip.AddrFrom4(b)
}

// dropSessions removes every peer, with its session and endpoint, and
// makes the configured ones again.
func (d *Device) dropSessions() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	text, err := d.wg.IpcGet()
	var cur wgState
	if err == nil {
		cur, err = parseIpcGet(text)
	}
	if err != nil {
		d.mu.Unlock()
		return fmt.Errorf("read state: %w", err)
	}
	var b strings.Builder
	for k := range cur.peers {
		b.WriteString("public_key=" + k.Hex() + "\nremove=true\n")
	}
	if b.Len() > 0 {
		if err := d.wg.IpcSet(b.String()); err != nil {
			d.mu.Unlock()
			return fmt.Errorf("remove peers: %w", err)
		}
	}
	d.od.mu.Lock()
	clear(d.od.active)
	d.od.mu.Unlock()
	cfg := *d.snap.Load().cfg
	d.mu.Unlock()
	// Set finds the configured peers missing and adds them.
	return d.Set(cfg)
}
