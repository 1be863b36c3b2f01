package ipsec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strongswan/govici/vici"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// LibipsecMTU is the MTU kernel-libipsec gives its TUN device, and the
// largest that works with it.
const LibipsecMTU = 1400

// Options are an engine's collaborators.
type Options struct {
	Logger *slog.Logger // nil discards
	// Dir holds charon's strongswan.conf, VICI socket and pid file
	// (<state_dir>/ipsec); created 0700 if missing.
	Dir string
	// Charon is the charon binary; "" is DefaultCharon.
	Charon string
	// OnChange is called, from the engine's goroutine and never with its
	// lock held, when a tunnel's SA comes up or goes down (name set), or
	// when the dataplane device was recreated after a charon restart
	// (name ""), so that routes through it are put back.
	OnChange func(name string, up bool)
	// CookieThreshold and BlockThreshold are charon's half-open IKE SA
	// limits (defaults 10 and 5).
	CookieThreshold, BlockThreshold int
	// Backend is the ESP dataplane: BackendKernel, BackendLibipsec, or ""
	// for [DefaultBackend] (the kernel where it has ESP and xfrm
	// interfaces). BackendKernel on a kernel without them fails New.
	Backend string
}

// Engine runs edgegw's charon and the IPsec tunnels in it.
//
// With the kernel backend, ESP runs in the kernel's xfrm layer and the
// tunnels are route-based: each tunnel has an xfrm interface named after
// it (made by the engine, carrying the tunnel address and MTU), its
// child SA's states and policies carry that interface's if_id, and its
// selectors are any-to-any. A packet enters a tunnel by being routed into
// its interface; two IPsec tunnels can share a prefix (ECMP, backups)
// like GRE tunnels. Charon (kernel-netlink) installs SAs and policies but
// no routes.
//
// With the userspace backend (kernel-libipsec), charon creates one TUN
// device, ipsec0 (what [Engine.Device] gives for every tunnel), and every
// tunnel's ESP goes through it. A packet routed into it is matched
// against the child SAs' traffic selectors, so each tunnel's remote
// selectors are exactly its routed prefixes and the far end of its tunnel
// address ([Tunnel.RemoteTS]), except for a tunnel that carries BGP
// ([Tunnel.Wide]: 0.0.0.0/0, taking what no narrower selector holds);
// the tunnel addresses are on the device.
// Routes "via" an IPsec tunnel are routes through the device, and the
// route manager's priorities and health penalties decide whether the
// device (and so this tunnel's SA) or another tunnel carries a prefix. Two IPsec tunnels can therefore not
// carry the same prefix at once (no ECMP between IPsec tunnels on this
// backend); IPsec and GRE can.
//
// Methods are safe for concurrent use. Charon runs in the network
// namespace of the thread that called New.
type Engine struct {
	log     *slog.Logger
	charLog *slog.Logger
	opts    Options
	conf    string
	socket  string
	pidFile string
	nsFD    int
	nl      *netlink.Handle
	probe   *prober

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  chan error // the first start's outcome

	backend string
	// devs maps each tunnel to the device that carries it, published
	// whenever it changes so that lookups on the route and probe paths
	// take no lock.
	devs atomic.Pointer[map[string]string]
	// devIndex maps each tunnel to its device's interface index, published
	// with devs: health-check answers count only if they arrived there.
	devIndex atomic.Pointer[map[string]int]

	mu       sync.Mutex
	closed   bool
	want     map[string]*wanted // by tunnel name
	loaded   map[string]string  // conn text loaded into the running charon
	state    map[string]*tstate
	sess     *vici.Session // nil while charon is down
	lister   *saLister     // its own VICI session for list-sas; nil while charon is down
	device   string        // kernel-libipsec: the TUN's name, "" while charon is down
	addrs    map[netip.Prefix]bool
	ifIDs    map[string]uint32 // kernel: each wanted tunnel's if_id, kept while it is wanted
	links    map[string]bool   // kernel: the xfrm interfaces the engine made, by tunnel
	ikeIDs   map[string]string // IKE SA unique id → tunnel, for unnamed log lines
	offers   map[string]string // IKE SA unique id → the peer's last proposals
	restarts uint64
	started  time.Time
}

type wanted struct {
	t      Tunnel
	conn   *vici.Message
	secret *vici.Message
	text   string // conn and secret rendered, to see changes
	err    error  // rendering or PSK error: not loaded
}

// New writes charon's configuration, removes a charon a crashed edgegw
// left behind, starts charon and waits until it answers on VICI. The
// engine supervises it until ctx ends or Close.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Charon == "" {
		opts.Charon = DefaultCharon
	}
	if opts.CookieThreshold == 0 {
		opts.CookieThreshold = 10
	}
	if opts.BlockThreshold == 0 {
		opts.BlockThreshold = 5
	}
	if opts.Dir == "" {
		return nil, errors.New("ipsec: no state directory")
	}
	switch opts.Backend {
	case "":
		opts.Backend = DefaultBackend()
	case BackendLibipsec:
	case BackendKernel:
		if !KernelESP() || !kernelModule("xfrm_interface", "net/xfrm") {
			return nil, errors.New("ipsec: backend kernel: this kernel has no ESP (esp4) or no xfrm interfaces (xfrm_interface)")
		}
	default:
		return nil, fmt.Errorf("ipsec: unknown backend %q (want %s or %s)", opts.Backend, BackendKernel, BackendLibipsec)
	}
	if _, err := os.Stat(opts.Charon); err != nil {
		return nil, fmt.Errorf("ipsec: charon: %w (install charon-systemd)", err)
	}
	if err := checkPlugins(opts.Backend); err != nil {
		return nil, fmt.Errorf("ipsec: %w", err)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipsec: %w", err)
	}
	e := &Engine{
		log: opts.Logger.With("component", "ipsec"), charLog: opts.Logger.With("component", "charon"),
		opts: opts, conf: filepath.Join(opts.Dir, "strongswan.conf"), socket: filepath.Join(opts.Dir, "charon.vici"),
		pidFile: filepath.Join(opts.Dir, "charon.pid"), ready: make(chan error, 1),
		want: map[string]*wanted{}, loaded: map[string]string{}, state: map[string]*tstate{},
		addrs: map[netip.Prefix]bool{}, ikeIDs: map[string]string{}, offers: map[string]string{},
		backend: opts.Backend, ifIDs: map[string]uint32{}, links: map[string]bool{},
	}
	e.devs.Store(&map[string]string{})
	if killed, err := tunnel.KillLeftover(e.pidFile, opts.Charon); err != nil {
		return nil, fmt.Errorf("ipsec: %w", err)
	} else if killed {
		e.log.Warn("stopped a charon left by an earlier edgegw", "pid_file", e.pidFile)
	}
	os.Remove(e.socket)
	if err := writeConf(e.conf, confParams{Plugins: pluginList(opts.Backend), Backend: opts.Backend, Socket: e.socket, Cookie: opts.CookieThreshold, Block: opts.BlockThreshold, Table: charonTable}); err != nil {
		return nil, fmt.Errorf("ipsec: write %s: %w", e.conf, err)
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ipsec: network namespace: %w", err)
	}
	e.nsFD = fd
	undo := func() { unix.Close(fd) }
	if e.nl, err = netlink.NewHandle(); err != nil {
		undo()
		return nil, fmt.Errorf("ipsec: netlink: %w", err)
	}
	undo = func() { e.nl.Close(); unix.Close(fd) }
	if e.backend == BackendKernel {
		// A crashed edgegw's charon may have left SAs, policies and xfrm
		// interfaces; the leftover charon is gone by now.
		if n, err := sweepXfrm(e.nl, true); err != nil {
			undo()
			return nil, fmt.Errorf("ipsec: remove leftovers: %w", err)
		} else if n > 0 {
			e.log.Warn("removed xfrm interfaces, states and policies left by an earlier edgegw", "count", n)
		}
	}
	if e.probe, err = newProber(e.log, e.deviceIndex); err != nil {
		undo()
		return nil, fmt.Errorf("ipsec: %w", err)
	}
	e.log.Info("starting charon", "binary", opts.Charon, "backend", e.backend, "kernel_esp", KernelESP(), "dir", opts.Dir)
	e.ctx, e.cancel = context.WithCancel(ctx)
	e.wg.Go(e.probe.run)
	e.wg.Go(e.supervise)
	select {
	case err = <-e.ready:
	case <-time.After(20 * time.Second):
		err = errors.New("charon did not answer on VICI within 20s")
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("ipsec: %w", err)
	}
	return e, nil
}

// Backend is the ESP dataplane in use: BackendKernel or BackendLibipsec.
func (e *Engine) Backend() string { return e.backend }

// Device is the network device that carries the named tunnel, where
// routes through it go: with the kernel backend its own xfrm interface
// (named after it), with kernel-libipsec the shared TUN. It is "" for an
// unknown tunnel, while its interface could not be made, or while
// charon's TUN is being recreated. It takes no lock.
func (e *Engine) Device(name string) string { return (*e.devs.Load())[name] }

// publishDevsLocked publishes the tunnel → device map.
func (e *Engine) publishDevsLocked() {
	m := map[string]string{}
	for name := range e.want {
		switch {
		case e.backend == BackendKernel && e.links[name]:
			m[name] = name
		case e.backend == BackendLibipsec && e.device != "":
			m[name] = e.device
		}
	}
	idx, byDev := map[string]int{}, map[string]int{}
	for name, dev := range m {
		i, ok := byDev[dev]
		if !ok {
			if l, err := e.nl.LinkByName(dev); err == nil {
				i = l.Attrs().Index
			}
			byDev[dev] = i
		}
		if i != 0 {
			idx[name] = i
		}
	}
	e.devIndex.Store(&idx)
	e.devs.Store(&m)
}

// deviceIndex is the interface index of the device that carries the
// named tunnel, 0 if none.
func (e *Engine) deviceIndex(name string) int {
	if m := e.devIndex.Load(); m != nil {
		return (*m)[name]
	}
	return 0
}

// Up reports whether the tunnel's IKE SA is established and its child SA
// installed.
func (e *Engine) Up(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state[name]
	return st != nil && st.up
}

// Set makes charon's connections and secrets match tunnels: new and
// changed ones are loaded first, then removed ones unloaded (their SAs
// closed), so an unchanged tunnel never drops. A tunnel whose PSK cannot
// be read is not loaded and its error returned; the others still are.
func (e *Engine) Set(tunnels []Tunnel) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("ipsec: closed")
	}
	var errs error
	want := map[string]*wanted{}
	for name := range e.ifIDs {
		if !slices.ContainsFunc(tunnels, func(t Tunnel) bool { return t.Name == name }) {
			delete(e.ifIDs, name)
		}
	}
	for _, t := range tunnels {
		w := &wanted{t: t}
		want[t.Name] = w
		var ifID uint32
		if e.backend == BackendKernel {
			if e.ifIDs[t.Name] == 0 {
				taken := map[uint32]bool{}
				for _, id := range e.ifIDs {
					taken[id] = true
				}
				e.ifIDs[t.Name] = allocIfID(t.Name, taken)
			}
			ifID = e.ifIDs[t.Name]
		}
		psk, err := t.ReadPSK()
		if err == nil {
			w.conn, err = connMessage(t, ifID)
		}
		if err == nil {
			w.secret, err = sharedMessage(t, psk)
		}
		if err != nil {
			w.err = err
			errs = errors.Join(errs, err)
			continue
		}
		w.text = w.conn.String() + "\x00" + w.secret.String()
		if e.state[t.Name] == nil {
			e.state[t.Name] = newTState(t.Name)
		}
	}
	e.want = want
	for name := range e.state {
		if want[name] == nil {
			delete(e.state, name)
		}
	}
	errs = errors.Join(errs, e.syncLocked())
	return errs
}

// syncLocked brings the running charon and the devices to e.want.
func (e *Engine) syncLocked() error {
	if e.sess == nil {
		// charon is restarting; it loads e.want when up. The xfrm
		// interfaces (and the routes through them) stay meanwhile:
		// without SAs and policies, packets routed into them are dropped.
		var err error
		if e.backend == BackendKernel {
			err = e.syncXfrmLinksLocked()
		}
		e.publishDevsLocked()
		return err
	}
	var errs error
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	for _, name := range slices.Sorted(maps.Keys(e.want)) {
		w := e.want[name]
		if w.err != nil || e.loaded[name] == w.text {
			continue
		}
		_, changed := e.loaded[name]
		if err := e.call(ctx, "load-shared", w.secret); err != nil {
			errs = errors.Join(errs, fmt.Errorf("tunnel %q: load secret: %w", name, err))
			continue
		}
		if err := e.call(ctx, "load-conn", w.conn); err != nil {
			errs = errors.Join(errs, fmt.Errorf("tunnel %q: load connection: %w", name, err))
			continue
		}
		e.loaded[name] = w.text
		sel := any(w.t.RemoteTS())
		if e.backend == BackendKernel {
			sel = "route-based, if_id " + fmt.Sprint(e.ifIDs[name])
		}
		e.log.Info("ipsec tunnel loaded", "tunnel", name, "remote", w.t.Remote, "initiator", w.t.Initiator,
			"remote_ts", sel, "reloaded", changed)
		if changed {
			// SAs keep the old proposals and selectors until they are
			// renegotiated; close them so the new ones apply now.
			e.terminate(ctx, name)
			if w.t.Initiator {
				e.initiate(name)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(e.loaded)) {
		if w := e.want[name]; w != nil && w.err == nil {
			continue
		}
		if err := e.unload(ctx, name); err != nil {
			errs = errors.Join(errs, err)
		}
		delete(e.loaded, name)
		e.log.Info("ipsec tunnel removed", "tunnel", name)
	}
	if e.backend == BackendKernel {
		errs = errors.Join(errs, e.syncXfrmLinksLocked())
	} else {
		errs = errors.Join(errs, e.syncDeviceLocked())
	}
	e.publishDevsLocked()
	return errs
}

func (e *Engine) unload(ctx context.Context, name string) error {
	var errs error
	if err := e.call(ctx, "unload-conn", msg("name", name)); err != nil {
		errs = fmt.Errorf("tunnel %q: unload connection: %w", name, err)
	}
	e.terminate(ctx, name)
	if err := e.call(ctx, "unload-shared", msg("id", secretID(name))); err != nil {
		errs = errors.Join(errs, fmt.Errorf("tunnel %q: unload secret: %w", name, err))
	}
	return errs
}

// terminate closes the tunnel's IKE SAs (and so its child SAs). It is a
// plain call, not govici's CallStreaming with control-log: that call can
// leave a log event queued where the session's next call takes it for
// its response (see saLister).
func (e *Engine) terminate(ctx context.Context, name string) {
	m := msg("ike", name)
	m.Set("force", "yes")
	m.Set("timeout", "-1") // do not wait for the peer
	if err := e.call(ctx, "terminate", m); err != nil && !strings.Contains(err.Error(), "no matching SAs") {
		e.log.Debug("terminate", "tunnel", name, "err", err)
	}
}

// initiate starts the tunnel's child SA without waiting for it: the
// outcome arrives as SA events and log lines.
func (e *Engine) initiate(name string) {
	m := msg("child", name)
	m.Set("ike", name)
	m.Set("timeout", "-1")
	e.call(e.ctx, "initiate", m)
}

// syncDeviceLocked puts the tunnel addresses on the TUN device and sets
// its MTU to the smallest tunnel MTU (one device carries all tunnels).
func (e *Engine) syncDeviceLocked() error {
	if e.device == "" {
		return nil
	}
	link, err := e.nl.LinkByName(e.device)
	if err != nil {
		return fmt.Errorf("ipsec device %s: %w", e.device, err)
	}
	var errs error
	want := map[netip.Prefix]bool{}
	// kernel-libipsec reads packets from its TUN into buffers of the MTU
	// it created the device with (1400): a larger device MTU would
	// truncate packets, so tunnels may only lower it.
	mtu := LibipsecMTU
	for _, w := range e.want {
		want[w.t.Address] = true
		if w.t.MTU < mtu {
			mtu = w.t.MTU
		}
	}
	for p := range want {
		if e.addrs[p] {
			continue
		}
		a := &netlink.Addr{IPNet: tunnel.IPNet(p)}
		if err := e.nl.AddrReplace(link, a); err != nil {
			errs = errors.Join(errs, fmt.Errorf("address %s on %s: %w", p, e.device, err))
			continue
		}
		e.addrs[p] = true
	}
	for p := range e.addrs {
		if want[p] {
			continue
		}
		if err := e.nl.AddrDel(link, &netlink.Addr{IPNet: tunnel.IPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = errors.Join(errs, fmt.Errorf("remove address %s from %s: %w", p, e.device, err))
		}
		delete(e.addrs, p)
	}
	if link.Attrs().MTU != mtu {
		if err := e.nl.LinkSetMTU(link, mtu); err != nil {
			errs = errors.Join(errs, fmt.Errorf("mtu %d on %s: %w", mtu, e.device, err))
		}
	}
	if link.Attrs().Flags&unix.IFF_UP == 0 {
		errs = errors.Join(errs, e.nl.LinkSetUp(link))
	}
	return errs
}

func (e *Engine) call(ctx context.Context, cmd string, m *vici.Message) error {
	_, err := e.sess.Call(ctx, cmd, m)
	return err
}

func msg(k string, v any) *vici.Message {
	m := vici.NewMessage()
	m.Set(k, v)
	return m
}

// supervise starts charon, serves it until it exits, and starts it again
// (backing off while it keeps failing) until the engine closes.
func (e *Engine) supervise() {
	backoff := time.Second
	first := true
	for {
		start := time.Now()
		err := e.runOnce(first)
		first = false
		if e.ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		e.log.Error("charon exited; restarting", "err", err, "in", backoff)
		e.mu.Lock()
		e.restarts++
		e.mu.Unlock()
		select {
		case <-e.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// runOnce runs one charon from start to exit.
func (e *Engine) runOnce(first bool) (err error) {
	report := func(err error) {
		if first {
			e.ready <- err
			first = false
		}
	}
	defer func() { report(err) }()
	before := tunLinks(e.nl)
	proc, err := startCharon(e.opts.Charon, e.conf, e.pidFile, e.nsFD, func(line string) {
		e.charLog.Info(line)
	})
	if err != nil {
		return err
	}
	defer func() {
		proc.stop(5 * time.Second)
		os.Remove(e.pidFile)
		if e.backend == BackendKernel {
			// A charon that was killed could not delete its SAs and
			// policies; the xfrm interfaces stay for the next one.
			if n, err := sweepXfrm(e.nl, false); err != nil {
				e.log.Error("remove charon's xfrm states and policies", "err", err)
			} else if n > 0 {
				e.log.Info("removed xfrm states and policies of the charon that exited", "count", n)
			}
		}
		e.down()
	}()
	sess, err := e.connect(proc)
	if err != nil {
		return err
	}
	defer sess.Close()
	lister, err := newSALister(e.socket)
	if err != nil {
		return err
	}
	defer lister.close()
	// Log lines come in bursts (a flood of junk IKE packets logs a line
	// each); up-down events dropped on a full channel are caught up by
	// the next listing.
	events := make(chan vici.Event, 1024)
	if err := sess.Subscribe("ike-updown", "child-updown", "ike-rekey", "child-rekey", "log"); err != nil {
		return fmt.Errorf("subscribe to charon's events: %w", err)
	}
	sess.NotifyEvents(events)
	dev := ""
	if e.backend == BackendLibipsec {
		if dev, err = e.waitDevice(proc, before); err != nil {
			return err
		}
	}
	if err := e.dropCharonRules(); err != nil {
		return err
	}
	e.mu.Lock()
	e.sess, e.lister, e.device, e.loaded, e.addrs, e.started = sess, lister, dev, map[string]string{}, map[netip.Prefix]bool{}, time.Now()
	e.probe.setUp(true)
	serr := e.syncLocked()
	e.mu.Unlock()
	e.log.Info("charon running", "pid", proc.cmd.Process.Pid, "backend", e.backend, "device", dev, "vici", e.socket)
	if serr != nil {
		e.log.Error("load tunnels into charon", "err", serr)
	}
	report(nil)
	if e.opts.OnChange != nil {
		e.opts.OnChange("", false) // the device is (re)created: re-plan routes
	}
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return nil
		case <-proc.done:
			return fmt.Errorf("charon: %v", proc.err)
		case ev, ok := <-events:
			if !ok {
				// The VICI session ended: charon is going away.
				select {
				case <-proc.done:
				case <-time.After(5 * time.Second):
				}
				return fmt.Errorf("charon closed its VICI socket (%v)", proc.err)
			}
			e.event(ev)
		case <-poll.C:
			e.refresh()
		}
	}
}

// connect waits for charon's VICI socket.
func (e *Engine) connect(proc *charonProc) (*vici.Session, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := vici.NewSession(vici.WithSocketPath(e.socket))
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to charon at %s: %w", e.socket, err)
		}
		select {
		case <-proc.done:
			return nil, fmt.Errorf("charon exited at start: %v", proc.err)
		case <-e.ctx.Done():
			return nil, e.ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tunLinks lists the kernel-libipsec devices (ipsecN) that exist.
func tunLinks(nl *netlink.Handle) map[string]bool {
	out := map[string]bool{}
	links, _ := nl.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "ipsec") && l.Type() == "tuntap" {
			out[l.Attrs().Name] = true
		}
	}
	return out
}

// waitDevice finds the TUN device charon created.
func (e *Engine) waitDevice(proc *charonProc, before map[string]bool) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		for name := range tunLinks(e.nl) {
			if !before[name] {
				return name, nil
			}
		}
		if time.Now().After(deadline) {
			return "", errors.New("charon created no ipsecN TUN device (is kernel-libipsec installed? package libcharon-extra-plugins)")
		}
		select {
		case <-proc.done:
			return "", fmt.Errorf("charon exited at start: %v", proc.err)
		case <-e.ctx.Done():
			return "", e.ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dropCharonRules deletes the policy rules that send traffic to charon's
// routing table, so that only edgegw's routes steer packets into tunnels.
func (e *Engine) dropCharonRules() error {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := e.nl.RuleList(family)
		if err != nil {
			return fmt.Errorf("list policy rules: %w", err)
		}
		for _, r := range rules {
			if r.Table != charonTable {
				continue
			}
			if err := e.nl.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete charon's policy rule to table %d: %w", charonTable, err)
			}
		}
	}
	return nil
}

// down marks every tunnel down after charon went away.
func (e *Engine) down() {
	e.probe.setUp(false)
	e.mu.Lock()
	e.sess, e.lister, e.device = nil, nil, ""
	e.loaded, e.addrs, e.ikeIDs, e.offers = map[string]string{}, map[netip.Prefix]bool{}, map[string]string{}, map[string]string{}
	e.publishDevsLocked()
	var changed []string
	for name, st := range e.state {
		if st.up {
			changed = append(changed, name)
		}
		st.setDown()
	}
	e.mu.Unlock()
	e.notify(changed, false)
}

func (e *Engine) notify(names []string, up bool) {
	if e.opts.OnChange == nil {
		return
	}
	for _, n := range names {
		e.opts.OnChange(n, up)
	}
}

// Close stops charon (which deletes its SAs and TUN device), removes the
// xfrm interfaces, states and policies left with edgegw's if_ids (kernel
// backend), and waits for the engine's goroutines. It is idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.probe.close()
	e.wg.Wait()
	var err error
	if e.backend == BackendKernel {
		if _, err = sweepXfrm(e.nl, true); err != nil {
			err = fmt.Errorf("ipsec: %w", err)
		}
		e.mu.Lock()
		e.links = map[string]bool{}
		e.publishDevsLocked()
		e.mu.Unlock()
	}
	e.nl.Close()
	unix.Close(e.nsFD)
	os.Remove(e.socket)
	return err
}
