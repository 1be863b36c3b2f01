package wireguard

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// PeerSource holds peers that the device creates only when they talk: the
// enrolled devices of a registry, thousands of which are idle at any time.
// wireguard-go precomputes a Diffie-Hellman secret and allocates queues for
// every peer it holds (about 0.2 ms and 40 KB each), so holding 10,000
// idle devices would cost seconds at start and hundreds of megabytes. An
// on-demand peer is created when its first handshake initiation arrives,
// before wireguard-go reads that initiation, and removed once it has been
// idle for idleAfter; this is the shape of Tailscale's lazy peers.
//
// OnDemandPeer must be fast and safe for concurrent use: it runs on the
// receive path, once per handshake initiation from a peer the device does
// not hold.
type PeerSource interface {
	OnDemandPeer(k Key) (Peer, bool)
}

const (
	// idleAfter is when wireguard-go itself gives up an idle peer's keys
	// (Reject-After-Time × 3, the whitepaper's 540 s): a peer that has
	// not completed a handshake for that long has no session left.
	idleAfter = 540 * time.Second
	// reapEvery is how often idle on-demand peers are looked for.
	reapEvery = 30 * time.Second
)

// onDemand owns the device's on-demand peers and the goroutine that adds
// and reaps them.
type onDemand struct {
	d         *Device
	src       atomic.Pointer[sourceBox]
	resp      atomic.Pointer[responder]
	static    atomic.Pointer[map[Key]bool] // the configured peers: never on demand
	idleAfter time.Duration
	reapEvery time.Duration

	reqs chan odRequest
	quit chan struct{}
	done chan struct{}

	// budget bounds the lookups (budget.go); send writes a cookie reply
	// (the device's bind; tests replace it).
	budget *lookupBudget
	send   func(b []byte, ep conn.Endpoint) error

	mu     sync.Mutex
	active map[Key]odPeer // what wireguard-go holds on demand

	created, idle, revoked                      atomic.Uint64
	lookups, unknown, queueFull                 atomic.Uint64
	limitedSource, limitedGlobal                atomic.Uint64
	cookies, cookieErrors, invalidMAC1UnderLoad atomic.Uint64
}

type sourceBox struct{ PeerSource }

type odPeer struct {
	peer  Peer
	added time.Time
}

type odRequest struct {
	key  Key
	peer Peer
	msg  []byte
	ep   conn.Endpoint
}

func newOnDemand(d *Device) *onDemand {
	o := &onDemand{
		d: d, idleAfter: idleAfter, reapEvery: reapEvery,
		reqs: make(chan odRequest, 256), quit: make(chan struct{}), done: make(chan struct{}),
		active: map[Key]odPeer{}, budget: newLookupBudget(nil),
	}
	o.send = func(b []byte, ep conn.Endpoint) error { return o.d.bind.Send([][]byte{b}, ep) }
	return o
}

// setKeys follows the device's private key and configured peers.
func (o *onDemand) setKeys(priv Key, cfg *Config) error {
	r, err := newResponder(priv)
	if err != nil {
		return err
	}
	static := make(map[Key]bool, len(cfg.Peers))
	for _, p := range cfg.Peers {
		static[p.PublicKey] = true
	}
	o.resp.Store(r)
	o.static.Store(&static)
	return nil
}

// divert runs on wireguard-go's receive path for every well-formed
// handshake initiation. It returns true if it took msg: its sender may
// connect on demand and is not yet a peer (the worker then creates the
// peer and hands msg back to wireguard-go through the bind), or the device
// is under load and msg gets no further (see budget.go).
//
// Under load, whatever is not looked up is dropped here rather than
// passed on: wireguard-go's handshake queue then holds only initiations
// with a valid mac2 of ours, so wireguard-go itself does not go under load
// and ask for a cookie of its own, which would never agree with ours.
// Out of load, an initiation over its budget still goes to wireguard-go:
// a configured peer, or one created on demand before, is answered there.
func (o *onDemand) divert(msg []byte, ep conn.Endpoint) bool {
	src := o.src.Load()
	r := o.resp.Load()
	if src == nil || r == nil {
		return false
	}
	under := o.budget.underLoad()
	if !r.validMAC1(msg) {
		if under {
			o.invalidMAC1UnderLoad.Add(1) // wireguard-go would drop it too
		}
		return under
	}
	var addr []byte // the sender's address and port, what cookies are for
	proven := false
	if under {
		addr = ep.DstToBytes()
		proven = r.validMAC2(msg, addr)
	}
	switch o.budget.admit(ep.DstIP(), under, proven) {
	case needCookie:
		o.sendCookie(r, msg, ep, addr)
		return true
	case limitedSource:
		o.limitedSource.Add(1)
		return under
	case limitedGlobal:
		o.limitedGlobal.Add(1)
		return under
	}
	o.lookups.Add(1)
	k, ok := r.initiator(msg)
	if !ok || (*o.static.Load())[k] {
		return false
	}
	o.mu.Lock()
	_, held := o.active[k]
	o.mu.Unlock()
	if held {
		return false
	}
	p, ok := src.OnDemandPeer(k)
	if !ok {
		o.unknown.Add(1)
		return false
	}
	select {
	case o.reqs <- odRequest{key: k, peer: p, msg: slices.Clone(msg), ep: ep}:
		return true
	default:
		o.queueFull.Add(1)
		return false // the worker is behind: the peer retries in 5 s
	}
}

// sendCookie answers initiation msg from ep (whose address and port are
// addr) with a cookie reply. The sender's next initiation, 5 seconds
// later for wireguard-go, carries a mac2 made with it.
func (o *onDemand) sendCookie(r *responder, msg []byte, ep conn.Endpoint, addr []byte) {
	o.cookies.Add(1)
	b, err := r.cookieReply(msg, addr)
	if err == nil {
		err = o.send(b, ep)
	}
	if err != nil {
		o.cookieErrors.Add(1)
	}
}

// run is the worker: it creates requested peers and reaps idle ones until
// stop.
func (o *onDemand) run() {
	defer close(o.done)
	tick := time.NewTicker(o.reapEvery)
	defer tick.Stop()
	for {
		select {
		case <-o.quit:
			return
		case r := <-o.reqs:
			if o.add(r) {
				o.d.bind.inject(r.msg, r.ep)
			}
		case <-tick.C:
			o.reap()
		}
	}
}

func (o *onDemand) stop() {
	select {
	case <-o.quit:
	default:
		close(o.quit)
	}
	<-o.done
}

// add makes r's sender a peer, unless it already is one. It holds the
// device's lock, so Set and reaping see either no peer or a recorded one.
func (o *onDemand) add(r odRequest) bool {
	d := o.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	o.mu.Lock()
	_, held := o.active[r.key]
	o.mu.Unlock()
	if held || (*o.static.Load())[r.key] {
		return true
	}
	var b strings.Builder
	writePeer(&b, r.key, onDemandState(r.peer))
	if err := d.wg.IpcSet(b.String()); err != nil {
		d.log.Error("create on-demand peer", "peer", r.peer.Name, "err", err)
		return false
	}
	o.mu.Lock()
	o.active[r.key] = odPeer{peer: r.peer, added: time.Now()}
	o.mu.Unlock()
	o.created.Add(1)
	d.log.Debug("on-demand peer created", "peer", r.peer.Name, "public_key", r.key)
	return true
}

// setSource replaces the source and removes the on-demand peers it no
// longer has (revoked or expired devices) or has with other settings.
func (o *onDemand) setSource(src PeerSource) {
	d := o.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if src == nil {
		o.src.Store(nil)
	} else {
		o.src.Store(&sourceBox{src})
	}
	var gone []Key
	o.mu.Lock()
	static := *o.static.Load()
	for k, a := range o.active {
		if static[k] {
			delete(o.active, k) // configured now: Set manages it
			continue
		}
		p, ok := Peer{}, false
		if src != nil {
			p, ok = src.OnDemandPeer(k)
		}
		if !ok || !samePeer(p, a.peer) {
			gone = append(gone, k)
		}
	}
	o.mu.Unlock()
	o.remove(gone, &o.revoked)
	if len(gone) > 0 {
		d.log.Info("on-demand peers removed: no longer in the registry, or changed there", "count", len(gone))
	}
}

// reap removes the on-demand peers idle for idleAfter: no handshake for
// that long, or none at all since they were created that long ago.
func (o *onDemand) reap() {
	d := o.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	o.mu.Lock()
	n := len(o.active)
	o.mu.Unlock()
	if n == 0 {
		return
	}
	text, err := d.wg.IpcGet()
	if err != nil {
		return
	}
	cur, err := parseIpcGet(text)
	if err != nil {
		return
	}
	now := time.Now()
	var gone []Key
	o.mu.Lock()
	for k, a := range o.active {
		last := a.added
		if p, ok := cur.peers[k]; ok && p.lastHandshake.After(last) {
			last = p.lastHandshake
		}
		if (*o.static.Load())[k] {
			delete(o.active, k) // configured now: Set manages it
		} else if now.Sub(last) >= o.idleAfter {
			gone = append(gone, k)
		}
	}
	o.mu.Unlock()
	o.remove(gone, &o.idle)
	if len(gone) > 0 {
		d.log.Debug("idle on-demand peers removed", "count", len(gone), "idle_after", o.idleAfter)
	}
}

// remove takes keys out of wireguard-go and the active set; d.mu is held.
func (o *onDemand) remove(keys []Key, counter *atomic.Uint64) {
	if len(keys) == 0 || o.d.closed {
		return
	}
	var b strings.Builder
	for _, k := range keys {
		b.WriteString("public_key=" + k.Hex() + "\nremove=true\n")
	}
	if err := o.d.wg.IpcSet(b.String()); err != nil {
		o.d.log.Error("remove on-demand peers", "count", len(keys), "err", err)
		return
	}
	o.mu.Lock()
	for _, k := range keys {
		delete(o.active, k)
	}
	o.mu.Unlock()
	counter.Add(uint64(len(keys)))
}

// held returns the on-demand peers wireguard-go holds now.
func (o *onDemand) held() map[Key]odPeer {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.active)
}

// forget drops keys that became configured peers (Set manages them now).
func (o *onDemand) forget(static map[Key]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range o.active {
		if static[k] {
			delete(o.active, k)
		}
	}
}

// onDemandState is what wireguard-go should hold for on-demand peer p. Its
// PresharedKeyFile is not read: the source's peers (enrolled devices) have
// no preshared key, and the receive path reads no files.
func onDemandState(p Peer) *wgPeer {
	return &wgPeer{keepalive: int(p.PersistentKeepalive / time.Second), allowedIPs: sortedPrefixes(p.AllowedIPs)}
}

func samePeer(a, b Peer) bool {
	pa, pb := onDemandState(a), onDemandState(b)
	return pa.psk == pb.psk && pa.keepalive == pb.keepalive && slices.Equal(pa.allowedIPs, pb.allowedIPs)
}

// writePeer writes the configuration-protocol lines that create peer k.
func writePeer(b *strings.Builder, k Key, w *wgPeer) {
	b.WriteString("public_key=" + k.Hex() + "\n")
	if !w.psk.IsZero() {
		b.WriteString("preshared_key=" + w.psk.Hex() + "\n")
	}
	if w.keepalive != 0 {
		b.WriteString("persistent_keepalive_interval=" + strconv.Itoa(w.keepalive) + "\n")
	}
	for _, p := range w.allowedIPs {
		b.WriteString("allowed_ip=" + p.String() + "\n")
	}
}

// OnDemandStats counts on-demand peers for metrics and tests.
type OnDemandStats struct {
	Held    int    `json:"held"`    // peers wireguard-go holds on demand now
	Created uint64 `json:"created"` // created on a first initiation
	Idle    uint64 `json:"idle"`    // removed after idleAfter without a handshake
	Revoked uint64 `json:"revoked"` // removed because the source dropped or changed them
	// LookedUp counts initiations from keys the device does not hold
	// whose sender was looked up (one X25519 each).
	LookedUp uint64 `json:"looked_up"`
	Unknown  uint64 `json:"unknown"` // looked up, neither configured nor in the source
	// Initiations not looked up, by reason: their source used its budget,
	// all sources together did, or the device was under load and they
	// had no valid mac2 (they got a cookie reply: Cookies, of which
	// CookieErrors could not be sent) or no valid mac1; or the worker
	// was behind.
	LimitedSource uint64 `json:"limited_source"`
	LimitedGlobal uint64 `json:"limited_global"`
	Cookies       uint64 `json:"cookie_replies"`
	CookieErrors  uint64 `json:"cookie_reply_errors"`
	InvalidMAC1   uint64 `json:"invalid_mac1_under_load"`
	QueueFull     uint64 `json:"queue_full"`
	UnderLoad     bool   `json:"under_load"` // initiations need a valid mac2 now
}

func (o *onDemand) stats() OnDemandStats {
	if o == nil {
		return OnDemandStats{}
	}
	o.mu.Lock()
	n := len(o.active)
	o.mu.Unlock()
	return OnDemandStats{Held: n, Created: o.created.Load(), Idle: o.idle.Load(), Revoked: o.revoked.Load(),
		LookedUp: o.lookups.Load(), Unknown: o.unknown.Load(),
		LimitedSource: o.limitedSource.Load(), LimitedGlobal: o.limitedGlobal.Load(),
		Cookies: o.cookies.Load(), CookieErrors: o.cookieErrors.Load(), InvalidMAC1: o.invalidMAC1UnderLoad.Load(),
		QueueFull: o.queueFull.Load(), UnderLoad: o.budget.underLoad()}
}

func (s OnDemandStats) String() string {
	return fmt.Sprintf("held %d, created %d, idle %d, revoked %d, looked up %d, unknown %d, limited by source %d, "+
		"limited globally %d, cookie replies %d (%d failed), invalid mac1 under load %d, queue full %d, under load %v",
		s.Held, s.Created, s.Idle, s.Revoked, s.LookedUp, s.Unknown, s.LimitedSource, s.LimitedGlobal,
		s.Cookies, s.CookieErrors, s.InvalidMAC1, s.QueueFull, s.UnderLoad)
}
