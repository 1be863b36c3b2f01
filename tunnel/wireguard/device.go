package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/edgegw/edgegw/tunnel"
)

// Options are what the owner provides besides the configuration.
type Options struct {
	Logger   *slog.Logger // nil: discard
	StateDir string       // the default private key lives in <StateDir>/wireguard/
	// UAPI opens /var/run/wireguard/<interface>.sock so that stock `wg show`
	// and `wg set` work. The path is the same in every network namespace:
	// devices in different namespaces need different interface names.
	UAPI bool
	// KeepSource makes every reply leave from the address the peer's
	// datagram was sent to, which an HA pair's virtual address needs (see
	// sticky.go); it turns UDP GRO off on the device's sockets.
	KeepSource bool
}

var (
	// ErrRecreate is returned by Set for a change it cannot apply to a
	// running device (the interface name): close it and create a new one.
	ErrRecreate = errors.New("change needs a new wireguard device")
	// ErrClosed is returned by Set after Close.
	ErrClosed = errors.New("wireguard device is closed")
)

// Device is a running WireGuard interface.
type Device struct {
	log      *slog.Logger
	stateDir string
	name     string
	index    int // interface index
	netns    int // fd of the network namespace the device lives in
	nl       *netlink.Handle
	routes   *tunnel.RouteManager // the allowed prefixes' routes; nil until the link is set up
	tun      tun.Device           // until wg owns it
	ntun     *nsTUN
	bind     *checkedBind
	wg       *device.Device
	drops    drops
	od       *onDemand
	// keptPort is the port registered for KeepSource (0: none).
	keptPort int

	uapi      net.Listener
	uapiWG    sync.WaitGroup
	uapiMu    sync.Mutex
	uapiConns map[net.Conn]struct{} // nil once closing

	mu     sync.Mutex // serializes Set, Close and the readers of kernel state
	closed bool
	snap   atomic.Pointer[snapshot]
	// checks are the site-to-site peers' health checks (sitehealth.go).
	checks *siteChecks
}

// snapshot is the applied configuration, read without locks by Status.
type snapshot struct {
	cfg *Config
	pub Key
}

// New creates the TUN device, starts wireguard-go on it with cfg and
// configures the interface: address, MTU, link up, routes. The device lives
// in the network namespace of the calling thread (lock the goroutine to a
// thread that has entered another namespace to put it there); later rebinds
// stay in that namespace. On failure New undoes what it did.
func New(cfg Config, opts Options) (_ *Device, err error) {
	c, err := cfg.check()
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "wireguard", "interface", c.Interface)
	want, err := loadState(c, opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("wireguard %s: %w", c.Interface, err)
	}

	// Everything that binds to a network namespace happens on this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	d := &Device{log: log, stateDir: opts.StateDir, name: c.Interface, netns: -1, uapiConns: map[net.Conn]struct{}{}}
	defer func() {
		if err != nil {
			d.teardown()
			err = fmt.Errorf("wireguard %s: %w", c.Interface, err)
		}
	}()
	if d.netns, err = openNetns(); err != nil {
		return nil, err
	}
	if d.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	if d.tun, err = tun.CreateTUN(c.Interface, c.MTU); err != nil {
		return nil, fmt.Errorf("create TUN: %w", err)
	}
	link, err := d.nl.LinkByName(c.Interface)
	if err != nil {
		return nil, fmt.Errorf("find the new TUN: %w", err)
	}
	d.index = link.Attrs().Index

	d.od = newOnDemand(d)
	if err := d.od.setKeys(want.privateKey, c); err != nil {
		return nil, err
	}
	d.bind = &checkedBind{Bind: conn.NewDefaultBind(), netns: d.netns, malformed: &d.drops.malformed,
		divert: d.od.divert, injected: make(chan injected, 16)}
	d.ntun = &nsTUN{Device: d.tun, nl: d.nl, index: d.index, mtu: c.MTU}
	if opts.KeepSource {
		// Before the first bind: wireguard-go may bring the device up
		// as soon as the link is.
		keepSource(c.ListenPort, true)
		d.keptPort = c.ListenPort
	}
	d.wg = device.NewDevice(d.ntun, d.bind, newLogger(log, &d.drops))
	d.tun = nil // closed by d.wg from now on
	if err := d.wg.IpcSet(uapiDiff(wgState{}, want)); err != nil {
		return nil, fmt.Errorf("configure wireguard-go: %w", err)
	}
	if err := d.syncLink(c); err != nil {
		return nil, err
	}
	// Setting the link up has made wireguard-go's TUN event goroutine bring
	// the device up too, perhaps first. If that failed, wireguard-go forgot
	// the port, and this Up bound a random one: check.
	if err := d.wg.Up(); err != nil {
		return nil, fmt.Errorf("listen on UDP port %d: %w", c.ListenPort, err)
	}
	if err := d.checkPort(c.ListenPort); err != nil {
		return nil, err
	}
	if opts.UAPI {
		if err := d.startUAPI(); err != nil {
			return nil, err
		}
	}
	pub := want.privateKey.PublicKey()
	d.snap.Store(&snapshot{cfg: c, pub: pub})
	d.checks = newSiteChecks(log, c.Interface, d.index, d.netns)
	if err := d.checks.set(c); err != nil {
		return nil, err
	}
	go d.od.run()
	log.Info("wireguard device up", "listen_port", c.ListenPort, "address", c.Address, "public_key", pub, "peers", len(c.Peers))
	return d, nil
}

// nsTUN answers MTU through the device's netlink handle. wireguard-go's own
// TUN asks with an ioctl on a socket it opens in the calling thread's network
// namespace, which is wrong when the device lives in another one.
type nsTUN struct {
	tun.Device
	index int
	mu    sync.Mutex
	nl    *netlink.Handle // nil after detach
	mtu   int             // last known
}

func (t *nsTUN) MTU() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nl == nil {
		return t.mtu, nil // closing: the interface is going away
	}
	l, err := t.nl.LinkByIndex(t.index)
	if err != nil {
		return 0, err
	}
	t.mtu = l.Attrs().MTU
	return t.mtu, nil
}

// detach stops MTU from using the netlink handle. wireguard-go's TUN event
// goroutine, which asks for the MTU, may outlive Device.Close.
func (t *nsTUN) detach() {
	t.mu.Lock()
	t.nl = nil
	t.mu.Unlock()
}

// Set applies cfg to the running device, changing only what differs: peers
// are added, removed or updated one by one and the other peers' sessions
// are left alone; listen port, address, MTU and routes change in place.
// A Set that changes nothing does nothing. A change of interface name
// returns ErrRecreate and applies nothing. Set compares with the device's
// actual state, so after a failed Set, calling Set again (with the new or
// the old config) converges.
func (d *Device) Set(cfg Config) error {
	c, err := cfg.check()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if c.Interface != d.name {
		return fmt.Errorf("%w: interface %s renamed to %s", ErrRecreate, d.name, c.Interface)
	}
	want, err := loadState(c, d.stateDir)
	if err != nil {
		return fmt.Errorf("wireguard %s: %w", d.name, err)
	}
	text, err := d.wg.IpcGet()
	if err != nil {
		return fmt.Errorf("wireguard %s: read state: %w", d.name, err)
	}
	cur, err := parseIpcGet(text)
	if err != nil {
		return fmt.Errorf("wireguard %s: read state: %w", d.name, err)
	}
	// On-demand peers stay unless they became configured ones. The new
	// keys apply to initiations from now on; if Set fails they are put back.
	prev := d.snap.Load()
	if err := d.od.setKeys(want.privateKey, c); err != nil {
		return fmt.Errorf("wireguard %s: %w", d.name, err)
	}
	applied := false
	defer func() {
		if !applied {
			if err := d.od.setKeys(cur.privateKey, prev.cfg); err != nil {
				d.log.Error("restore on-demand keys", "err", err)
			}
		}
	}()
	d.od.forget(*d.od.static.Load())
	for k := range d.od.held() {
		if p, ok := cur.peers[k]; ok {
			want.peers[k] = p
		}
	}
	// Peers and key first, the port last, on its own: a failed rebind
	// leaves wireguard-go without sockets, so it is undone.
	wantPort := want.listenPort
	want.listenPort = cur.listenPort
	if diff := uapiDiff(cur, want); diff != "" {
		if err := d.wg.IpcSet(diff); err != nil {
			return fmt.Errorf("wireguard %s: configure wireguard-go: %w", d.name, err)
		}
		d.log.Info("wireguard configuration changed", "peers", len(want.peers),
			"added", countMissing(want.peers, cur.peers), "removed", countMissing(cur.peers, want.peers))
	}
	if wantPort != cur.listenPort {
		if d.keptPort != 0 {
			keepSource(wantPort, true)
		}
		err := d.wg.IpcSet(fmt.Sprintf("listen_port=%d\n", wantPort))
		if err == nil {
			err = d.checkPort(wantPort)
		}
		if d.keptPort != 0 {
			if err == nil {
				keepSource(d.keptPort, false)
				d.keptPort = wantPort
			} else {
				keepSource(wantPort, false)
			}
		}
		if err != nil {
			if rerr := d.wg.IpcSet(fmt.Sprintf("listen_port=%d\n", cur.listenPort)); rerr != nil {
				d.log.Error("restore listen port", "port", cur.listenPort, "err", rerr)
			}
			return fmt.Errorf("wireguard %s: %w", d.name, err)
		}
		d.log.Info("listen port changed", "listen_port", wantPort)
	}
	if err := d.syncLink(c); err != nil {
		return fmt.Errorf("wireguard %s: %w", d.name, err)
	}
	d.snap.Store(&snapshot{cfg: c, pub: want.privateKey.PublicKey()})
	applied = true
	if err := d.checks.set(c); err != nil {
		return fmt.Errorf("wireguard %s: site peers' health checks: %w", d.name, err)
	}
	return nil
}

// SetPeerSource sets where peers that are created on demand come from (nil:
// nowhere) and removes the on-demand peers that src no longer has or has
// with other settings, such as a revoked device. See PeerSource.
func (d *Device) SetPeerSource(src PeerSource) { d.od.setSource(src) }

// OnDemandStats counts the device's on-demand peers.
func (d *Device) OnDemandStats() OnDemandStats { return d.od.stats() }

// checkPort verifies that wireguard-go listens on port.
func (d *Device) checkPort(port int) error {
	text, err := d.wg.IpcGet()
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	st, err := parseIpcGet(text)
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if st.listenPort != port {
		cause := d.bind.lastOpenError()
		if cause == nil {
			cause = fmt.Errorf("bound port %d instead", st.listenPort)
		}
		return fmt.Errorf("listen on UDP port %d: %w", port, cause)
	}
	return nil
}

func countMissing(a, b map[Key]*wgPeer) int {
	n := 0
	for k := range a {
		if _, ok := b[k]; !ok {
			n++
		}
	}
	return n
}

// Close stops the device, removes its routes and its interface, and with
// it the interface's addresses. It waits for wireguard-go to stop and
// may be called more than once.
func (d *Device) Close() error {
	d.od.stop() // before d.mu: the worker takes it
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	d.teardown()
	d.log.Info("wireguard device closed")
	return nil
}

// teardown releases whatever New got as far as creating.
func (d *Device) teardown() {
	if d.checks != nil {
		d.checks.stop() // first: its sockets live in d.netns
	}
	d.stopUAPI()
	if d.routes != nil {
		// Before the interface goes: the unreachable fallbacks have no
		// device to vanish with.
		if err := d.routes.Close(); err != nil {
			d.log.Warn("remove routes", "err", err)
		}
		d.routes = nil
	}
	if d.wg != nil {
		d.wg.Close() // closes bind and TUN; waits for its goroutines
	}
	if d.tun != nil {
		d.tun.Close()
	}
	if d.keptPort != 0 {
		keepSource(d.keptPort, false)
		d.keptPort = 0
	}
	// Closing the TUN's last file descriptor unregisters the interface. Make
	// sure of it: an interface left behind would keep its routes.
	if d.nl != nil && d.index != 0 {
		if l, err := d.nl.LinkByIndex(d.index); err == nil && l.Attrs().Name == d.name {
			if err := d.nl.LinkDel(l); err != nil {
				d.log.Warn("remove interface", "err", err)
			}
		}
	}
	if d.ntun != nil {
		d.ntun.detach()
	}
	if d.nl != nil {
		d.nl.Close()
	}
	if d.netns >= 0 {
		unix.Close(d.netns)
		d.netns = -1
	}
}

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// PublicKey is the device's public key, what peers configure.
func (d *Device) PublicKey() Key { return d.snap.Load().pub }
