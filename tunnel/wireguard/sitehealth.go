package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/health"
)

// Site-to-site peers' health and quality
//
// A static peer with a health_check is a branch router, and is checked as
// a GRE or IPsec tunnel is: tunnel/health's checker sends ICMP probes
// from the device's address to the peer's tunnel address (Target, by
// default the peer's single allowed address inside the device's prefix)
// and keeps healthy/degraded/down, and its quality probes give latency,
// jitter, loss, latency under load and AIM-style grades. They show in the
// peer's Status (Health) and in the device's metrics as
// edgegw_tunnel_*{tunnel="<interface>/<peer>"}.
//
// Probes go through the kernel, as IPsec's do: a raw IP socket bound to
// the device's interface (SO_BINDTODEVICE) sends them, so they are
// routed to the peer by its allowed prefixes and encrypted by the device;
// answers, decrypted by the device (which has checked they come from
// that peer's allowed addresses), are read from a raw ICMP socket bound
// to the same interface, which sees only packets that arrived through it.
// The sockets exist while at least one peer is checked.
//
// Latency under load is measured while the interface as a whole carries
// LoadedBitrate: the device's peers share one uplink, which is what a
// load fills, and reading one peer's counters would cost an IpcGet of
// every peer each 100 ms.

// validateHealthCheck checks p's health_check; fields are relative to it.
func (c *Config) validateHealthCheck(p Peer, report func(field, msg string)) {
	hc := p.HealthCheck
	hc.Validate(report)
	if hc.Type == "reply" {
		report("type", "reply-style probes cannot cross a WireGuard tunnel from edgegw (addressed to the gateway itself, "+
			"they would be delivered locally); use request, the default")
	}
	if c.Address.IsValid() && !c.Address.Addr().Is4() {
		report("", "health checks need an IPv4 device address (probes are ICMPv4 from it)")
		return
	}
	if !hc.Target.IsValid() {
		if _, ok := c.healthTarget(p); !ok {
			report("target", fmt.Sprintf("missing: none of the peer's allowed_ips is a single IPv4 address inside %s; "+
				"name the peer's tunnel address that answers ping", c.Address.Masked()))
		}
		return
	}
	switch {
	case !hc.Target.Is4():
		report("target", fmt.Sprintf("%s: expected an IPv4 address (probes are ICMPv4)", hc.Target))
	case !containsAddr(p.AllowedIPs, hc.Target):
		report("target", fmt.Sprintf("%s is not in the peer's allowed_ips: its answers would not come through this peer", hc.Target))
	}
}

// healthTarget is where p's probes go: its Target, else its first single
// IPv4 allowed address inside the device's prefix.
func (c *Config) healthTarget(p Peer) (netip.Addr, bool) {
	if p.HealthCheck != nil && p.HealthCheck.Target.IsValid() {
		return p.HealthCheck.Target, true
	}
	for _, a := range p.AllowedIPs {
		if a.IsSingleIP() && a.Addr().Is4() && c.Address.Contains(a.Addr()) {
			return a.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// siteChecks runs the health checks of a device's site-to-site peers. It
// owns their goroutines (stop waits for them) and the probe sockets.
type siteChecks struct {
	log     *slog.Logger
	ifname  string
	ifindex int
	netns   int // the device's namespace, where the sockets are made

	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	prober  *wgProber // nil while no peer is checked
	running map[string]*siteCheck
}

// siteCheck is one peer's running check and what it was started from.
type siteCheck struct {
	key     Key
	cfg     tunnel.HealthCheck
	address netip.Prefix
	checker *health.Checker
	stop    context.CancelFunc
	done    chan struct{}
}

func newSiteChecks(log *slog.Logger, ifname string, ifindex, netns int) *siteChecks {
	// The device has no context of its own (its owner stops it with
	// Close); the checks' context is this one, which stop cancels.
	ctx, cancel := context.WithCancel(context.Background())
	return &siteChecks{log: log, ifname: ifname, ifindex: ifindex, netns: netns, ctx: ctx, cancel: cancel,
		running: map[string]*siteCheck{}}
}

// set starts, restarts and stops checks so that exactly c's peers with a
// health_check are checked; an unchanged peer's check keeps its history.
// c has had its defaults applied and passed validation.
func (s *siteChecks) set(c *Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	want := map[string]siteCheck{}
	for _, p := range c.Peers {
		if p.HealthCheck == nil || (p.HealthCheck.Enabled != nil && !*p.HealthCheck.Enabled) {
			continue
		}
		hc := *p.HealthCheck
		hc.Target, _ = c.healthTarget(p)
		want[p.Name] = siteCheck{key: p.PublicKey, cfg: hc, address: c.Address}
	}
	for name, r := range s.running {
		if w, ok := want[name]; !ok || !sameCheck(*r, w) {
			s.stopOne(name, r)
		}
	}
	if len(want) == 0 {
		s.closeProber()
		return nil
	}
	if s.prober == nil {
		p, err := newWGProber(s.log, s.ifname, s.ifindex, s.netns)
		if err != nil {
			return err
		}
		s.prober = p
		s.wg.Go(p.run)
	}
	for name, w := range want {
		if _, ok := s.running[name]; ok {
			continue
		}
		s.start(name, w)
	}
	return nil
}

func sameCheck(a, b siteCheck) bool {
	return a.key == b.key && a.address == b.address && reflect.DeepEqual(a.cfg, b.cfg)
}

// start runs name's check; s.mu is held.
func (s *siteChecks) start(name string, w siteCheck) {
	label := s.ifname + "/" + name
	r := &w
	r.checker = health.New(label, w.cfg, w.address, &wgPath{p: s.prober, name: name}, health.Options{
		Logger: s.log,
		Load:   s.prober.load,
	})
	ctx, cancel := context.WithCancel(s.ctx)
	r.stop, r.done = cancel, make(chan struct{})
	s.running[name] = r
	s.wg.Go(func() {
		defer close(r.done)
		r.checker.Run(ctx)
	})
	s.log.Info("site peer health check started", "peer", name, "target", w.cfg.Target, "rate", w.cfg.Rate)
}

// stopOne stops name's check and waits for it; s.mu is held.
func (s *siteChecks) stopOne(name string, r *siteCheck) {
	r.stop()
	<-r.done
	delete(s.running, name)
}

func (s *siteChecks) closeProber() {
	if s.prober != nil {
		s.prober.close()
		s.prober = nil
	}
}

// stop ends every check and closes the sockets; it waits for every
// goroutine and may be called more than once.
func (s *siteChecks) stop() {
	s.mu.Lock()
	s.cancel()
	for name, r := range s.running {
		s.stopOne(name, r)
	}
	s.closeProber()
	s.mu.Unlock()
	s.wg.Wait()
}

// status is the named peer's check, if it has one.
func (s *siteChecks) status(name string) (health.Status, bool) {
	s.mu.Lock()
	r, ok := s.running[name]
	s.mu.Unlock()
	if !ok {
		return health.Status{}, false
	}
	return r.checker.Status(), true
}

// HealthCollector exports the site peers' health checks as
// edgegw_tunnel_*{tunnel="<interface>/<peer>"}, the metrics of GRE and
// IPsec tunnels' checks. It is unchecked (describes nothing): the set of
// checked peers changes with the configuration.
func (d *Device) HealthCollector() prometheus.Collector { return healthCollector{d.checks} }

type healthCollector struct{ s *siteChecks }

func (healthCollector) Describe(chan<- *prometheus.Desc) {}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) { c.s.collect(ch) }

// collect sends every check's metrics.
func (s *siteChecks) collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	cs := make([]*health.Checker, 0, len(s.running))
	for _, r := range s.running {
		cs = append(cs, r.checker)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.Collect(ch)
	}
}

// wgProber carries the probes of every checked peer of one device: a raw
// IP socket (IP_HDRINCL) and a raw ICMP socket, both bound to the
// device's interface, and a reader that hands each ICMP packet to the
// peers' handlers until one takes it.
type wgProber struct {
	log    *slog.Logger
	send   int
	recv   *os.File
	stats  *netlink.Handle // the interface's counters, for the load
	index  int
	closed atomic.Bool

	mu       sync.Mutex
	handlers map[string]func([]byte) bool
}

func newWGProber(log *slog.Logger, ifname string, ifindex, netns int) (*wgProber, error) {
	p := &wgProber{log: log, send: -1, index: ifindex, handlers: map[string]func([]byte) bool{}}
	err := inNetns(netns, func() error {
		var err error
		if p.send, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		r, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		p.recv = os.NewFile(uintptr(r), "wireguard-icmp")
		for _, fd := range []int{p.send, r} {
			// Probes leave only through the tunnel, never in the clear by
			// another route; answers count only if they came through it.
			if err := unix.BindToDevice(fd, ifname); err != nil {
				return fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, err)
			}
		}
		p.stats, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		p.close()
		return nil, fmt.Errorf("health-check sockets on %s: %w", ifname, err)
	}
	return p, nil
}

// run reads ICMP until close.
func (p *wgProber) run() {
	if err := tunnel.ReadProbes(p.recv, p.dispatch); err != nil {
		p.log.Error("health-check socket", "err", err)
	}
}

func (p *wgProber) dispatch(pkt []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.handlers {
		if h(pkt) {
			return
		}
	}
}

// load is the bytes the interface has carried both ways: the checks'
// health.Options.Load.
func (p *wgProber) load() uint64 {
	if p.closed.Load() {
		return 0
	}
	l, err := p.stats.LinkByIndex(p.index)
	if err != nil || l.Attrs().Statistics == nil {
		return 0
	}
	st := l.Attrs().Statistics
	return st.RxBytes + st.TxBytes
}

func (p *wgProber) close() {
	if p.closed.Swap(true) {
		return
	}
	if p.recv != nil {
		p.recv.Close()
	}
	if p.send >= 0 {
		unix.Close(p.send)
	}
	if p.stats != nil {
		p.stats.Close()
	}
}

// wgPath is one peer's health.Path.
type wgPath struct {
	p    *wgProber
	name string
}

// Inject sends an IPv4 probe to its destination through the interface.
func (w *wgPath) Inject(pkt []byte) error {
	if w.p.closed.Load() {
		return errors.New("health-check sockets closed")
	}
	if len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[0]&0x0f != 5 {
		return fmt.Errorf("peer %q: not an IPv4 packet without options", w.name)
	}
	if pkt[9] == unix.IPPROTO_ICMP && pkt[20] == 0 {
		// An echo reply to this end would be delivered locally: a probe
		// that never crossed the tunnel must not count as its health.
		return fmt.Errorf("peer %q: reply-style probes cannot cross the tunnel", w.name)
	}
	sa := &unix.SockaddrInet4{Addr: [4]byte(pkt[16:20])}
	if err := unix.Sendto(w.p.send, pkt, 0, sa); err != nil {
		return fmt.Errorf("peer %q: send probe to %v: %w", w.name, netip.AddrFrom4(sa.Addr), err)
	}
	return nil
}

// SetProbeHandler installs f for ICMP packets arriving through the
// interface; nil removes it.
func (w *wgPath) SetProbeHandler(f func(pkt []byte) bool) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if f == nil {
		delete(w.p.handlers, w.name)
		return
	}
	w.p.handlers[w.name] = f
}
