// Package site runs edgegw's site-to-site tunnels as one subsystem: the
// GRE and IPsec tunnels, a health check per tunnel, and the route manager
// that the checks steer. The gateway hands it the whole desired configuration with
// [Manager.Set] at start and on every reload; it computes the difference
// itself (unchanged tunnels keep running, their checks keep their state).
//
// Health-state changes re-plan the routes at once, so traffic leaves a
// degraded or down tunnel for the next priority, and comes back when the
// tunnel is healthy again, without restarting anything. An IPsec tunnel
// whose SA is not up is down, whatever its probes say.
//
// Prefixes whose routes say steering: quality are steered by the
// tunnels' quality probes as well ([tunnel.Steerer]): every 100 ms the
// manager compares each tunnel's loss and latency over the last 2 s with
// the thresholds, and re-plans the routes when the chosen tunnel changes,
// so new flows leave a lossy tunnel within seconds, long before its
// health check calls it degraded or down (5 % loss: median 1.3 s, worst
// 1.9 s over 10 impairments, BenchmarkQualitySteering).
// The tunnels such a prefix uses probe every 10 ms instead of 100 ms.
//
// IPsec tunnels run in one charon ([ipsec.Engine]), started with the
// first IPsec tunnel and stopped with the last. The route manager sees
// each IPsec tunnel's name resolve to the device that carries it
// ([ipsec.Engine.Device]). With kernel ESP that is the tunnel's own xfrm
// interface, of the tunnel's name, and IPsec routes behave as GRE's do.
// With charon's userspace ESP every IPsec tunnel shares its TUN device,
// and the routes through a tunnel become its child SA's remote traffic
// selectors, except for a tunnel that carries BGP (Config.Wide), whose
// selectors are 0.0.0.0/0 ([CheckWideIPsec] keeps that unambiguous).
package site

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/gre"
	"github.com/edgegw/edgegw/tunnel/health"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// Config is the site-to-site part of edgegw's configuration:
// tunnels.gre, tunnels.ipsec and routes. Defaults must be applied and
// each part validated (gre.Config.Validate, gre.ValidateList,
// ipsec.Config.Validate, ipsec.ValidateList, tunnel.Route.Validate,
// tunnel.CheckRoutes) before Set.
type Config struct {
	GRE    []gre.Config
	IPsec  []ipsec.Config
	Routes []tunnel.Route
	// Wide names the IPsec tunnels that carry BGP: their child SAs are
	// route-based (selectors 0.0.0.0/0 both ways) with userspace ESP too,
	// since learned prefixes are not known when SAs are negotiated (see
	// [ipsec.Tunnel.Wide] and [CheckWideIPsec]). Kernel ESP is always so.
	Wide []string
}

// Options are the manager's collaborators.
type Options struct {
	Logger *slog.Logger // nil discards
	// Netlink is where routes go; nil opens a handle in the calling
	// thread's network namespace (closed by Close).
	Netlink tunnel.Netlink
	// Sysctl is passed to the route manager (nil: /proc/sys).
	Sysctl func(key, value string) (restore func() error, err error)
	// StateDir is edgegw's state directory; charon's private
	// configuration, VICI socket and pid file go to StateDir/ipsec.
	// Required for IPsec tunnels.
	StateDir string
	// Charon is the charon binary ("" is ipsec.DefaultCharon).
	Charon string
	// IPsecBackend forces the ESP dataplane (ipsec.BackendKernel or
	// ipsec.BackendLibipsec); "" is ipsec.DefaultBackend().
	IPsecBackend string
	// Steer are quality steering's thresholds and hold time (zero fields:
	// tunnel.DefaultSteerOptions).
	Steer tunnel.SteerOptions
}

// Manager owns the tunnels, their checks and the route manager. Its
// methods are safe for concurrent use. Tunnels are created in the network
// namespace of the thread that calls New or Set.
type Manager struct {
	ctx    context.Context
	log    *slog.Logger
	eps    *gre.Endpoints
	rm     *tunnel.RouteManager
	ownNL  *netlink.Handle
	wg     sync.WaitGroup // checkers, the applier and the steering loop
	cancel context.CancelFunc
	kick   chan struct{}
	now    func() time.Time

	opts Options

	mu      sync.Mutex // held by Set and Close; routes are applied under it
	closed  bool
	cfg     Config
	tunnels map[string]*running
	ipsec   *ipsec.Engine // nil without IPsec tunnels
	secure  map[string]*running
	steerer *tunnel.Steerer
	steer   tunnel.Steering // the choice the routes were last applied with
	// steerMoves counts, per quality-steered prefix, the times steering
	// moved it to another tunnel.
	steerMoves map[netip.Prefix]uint64
	learned    tunnel.Learned // from BGP (tunnel/bgp), planned with cfg.Routes
}

var (
	steeringViaDesc = prometheus.NewDesc("edgegw_route_steering_via",
		"1 for the tunnel quality steering chose for a quality-steered prefix (none while no tunnel of the prefix is healthy).",
		[]string{"prefix", "via"}, nil)
	steeringMovesDesc = prometheus.NewDesc("edgegw_route_steering_moves_total",
		"Times quality steering moved a prefix to another tunnel.", []string{"prefix"}, nil)
)

type running struct {
	cfg      gre.Config
	ipsecCfg ipsec.Config // IPsec tunnels: tun is nil
	tun      *gre.Tunnel
	checker  *health.Checker // nil if checks are disabled
	stop     context.CancelFunc
	done     chan struct{}
}

// New returns a manager with no tunnels. Health checks run until ctx ends
// or Close.
func New(ctx context.Context, opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{log: log.With("component", "site"), eps: gre.NewEndpoints(log), tunnels: map[string]*running{},
		secure: map[string]*running{}, opts: opts, now: time.Now, steerer: tunnel.NewSteerer(opts.Steer),
		steerMoves: map[netip.Prefix]uint64{}}
	nl := opts.Netlink
	if nl == nil {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("site-to-site: netlink: %w", err)
		}
		m.ownNL, nl = h, h
	}
	rm, err := tunnel.NewRouteManager(&ipsecLinks{Netlink: nl, m: m}, tunnel.RouteOptions{Logger: log, Sysctl: opts.Sysctl})
	if err != nil {
		if m.ownNL != nil {
			m.ownNL.Close()
		}
		return nil, fmt.Errorf("site-to-site: %w", err)
	}
	m.rm = rm
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.kick = make(chan struct{}, 1)
	m.wg.Go(m.applier)
	m.wg.Go(m.steerLoop)
	return m, nil
}

// Set makes the running tunnels, checks and routes match cfg. Tunnels
// whose configuration is unchanged are left alone; changed ones are
// closed and reopened; removed ones closed. Errors opening one tunnel do
// not stop the others; all are returned.
func (m *Manager) Set(cfg Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("site-to-site: closed")
	}
	var errs error
	want := map[string]gre.Config{}
	for _, c := range cfg.GRE {
		want[c.Name] = c
	}
	// Close removed and changed tunnels first: a changed tunnel may
	// keep its name, local and remote.
	for _, name := range slices.Sorted(maps.Keys(m.tunnels)) {
		r := m.tunnels[name]
		if c, ok := want[name]; ok && c.Equal(r.cfg) {
			continue
		}
		errs = errors.Join(errs, m.stop(r))
		delete(m.tunnels, name)
	}
	for _, c := range cfg.GRE {
		if _, ok := m.tunnels[c.Name]; ok {
			continue
		}
		r, err := m.start(c)
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		m.tunnels[c.Name] = r
	}
	m.cfg = Config{GRE: slices.Clone(cfg.GRE), IPsec: slices.Clone(cfg.IPsec), Routes: slices.Clone(cfg.Routes), Wide: slices.Clone(cfg.Wide)}
	errs = errors.Join(errs, m.setIPsec(cfg))
	m.setQualityIntervals()
	return errors.Join(errs, m.applyRoutes())
}

func (m *Manager) start(c gre.Config) (*running, error) {
	t, err := gre.New(c, gre.Options{Logger: m.log, Endpoints: m.eps})
	if err != nil {
		return nil, err
	}
	r := &running{cfg: c, tun: t, done: make(chan struct{})}
	if c.HealthCheck.Enabled == nil || *c.HealthCheck.Enabled {
		r.checker = health.New(c.Name, c.HealthCheck, c.Address, t, health.Options{
			Logger:   m.log,
			OnChange: func(string, tunnel.State) { m.healthChanged() },
			Load: func() uint64 {
				st := t.Status()
				return st.RxBytes + st.TxBytes
			},
		})
		ctx, cancel := context.WithCancel(m.ctx)
		r.stop = cancel
		m.wg.Go(func() {
			defer close(r.done)
			r.checker.Run(ctx)
		})
	} else {
		close(r.done)
	}
	return r, nil
}

func (m *Manager) stop(r *running) error {
	if r.stop != nil {
		r.stop()
	}
	<-r.done
	return r.tun.Close()
}

// healthChanged asks the route applier to re-plan; it runs on a
// checker's goroutine and never blocks, so that Set and Close, which wait
// for checkers while holding the lock, cannot deadlock with it.
func (m *Manager) healthChanged() {
	select {
	case m.kick <- struct{}{}:
	default: // a re-plan is pending already and will see this state
	}
}

// applier re-plans the routes after health changes until kick closes.
func (m *Manager) applier() {
	for range m.kick {
		m.mu.Lock()
		if !m.closed {
			if err := m.applyRoutes(); err != nil {
				m.log.Error("apply routes after health change", "err", err)
			}
		}
		m.mu.Unlock()
	}
}

func (m *Manager) states() map[string]tunnel.State {
	s := map[string]tunnel.State{}
	for name, r := range m.tunnels {
		if r.checker != nil {
			s[name] = r.checker.State()
		}
	}
	for name, r := range m.secure {
		switch {
		case !m.ipsec.Up(name):
			s[name] = tunnel.Down
		case r.checker != nil:
			s[name] = r.checker.State()
		}
	}
	return s
}

// applyRoutes re-plans the routes from the current health and quality.
// Called with m.mu held.
func (m *Manager) applyRoutes() error {
	states := m.states()
	return m.applySteered(states, m.steerer.Choose(m.routes(), states, m.qualities(), m.now()))
}

// routes are the configured routes and those learned from BGP. Called
// with m.mu held.
func (m *Manager) routes() []tunnel.Route { return m.learned.Merge(m.cfg.Routes) }

// Learn replaces the routes source (a BGP neighbor) learned and re-plans
// at once when they changed: they go through their tunnels with the
// same health penalties as configured routes.
func (m *Manager) Learn(source string, routes []tunnel.Route) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("site-to-site: closed")
	}
	if !m.learned.Replace(source, routes) {
		return nil
	}
	return m.applyRoutes()
}

// applySteered installs the routes for states and steer, logging every
// prefix whose steering changed. Called with m.mu held.
func (m *Manager) applySteered(states map[string]tunnel.State, steer tunnel.Steering) error {
	for p, c := range steer {
		if old, ok := m.steer[p]; !ok || old.Via != c.Via {
			m.log.Warn("quality steering moved prefix", "prefix", p, "from", old.Via, "to", c.Via, "reason", c.Reason)
			if ok {
				m.steerMoves[p]++
			}
		}
	}
	for p, old := range m.steer {
		if _, ok := steer[p]; !ok && m.quality(p) {
			m.log.Warn("quality steering has no eligible tunnel; priority routing decides", "prefix", p, "was", old.Via)
		}
	}
	m.steer = steer
	for p := range m.steerMoves {
		if !m.quality(p) {
			delete(m.steerMoves, p)
		}
	}
	return m.rm.SetSteered(m.routes(), states, steer)
}

// quality reports whether prefix p is quality-steered.
func (m *Manager) quality(p netip.Prefix) bool {
	return slices.ContainsFunc(m.cfg.Routes, func(r tunnel.Route) bool { return r.QualitySteered() && r.Prefix.Masked() == p })
}

// checkers returns every tunnel's checker by tunnel name. Called with
// m.mu held.
func (m *Manager) checkers() map[string]*health.Checker {
	cs := map[string]*health.Checker{}
	for _, rs := range []map[string]*running{m.tunnels, m.secure} {
		for name, r := range rs {
			if r.checker != nil {
				cs[name] = r.checker
			}
		}
	}
	return cs
}

// qualities reads what steering needs of each checked tunnel: loss and
// latency over the short window, points over the quality window.
// Called with m.mu held.
func (m *Manager) qualities() map[string]tunnel.PathQuality {
	out := map[string]tunnel.PathQuality{}
	for name, c := range m.checkers() {
		recent := c.Recent(health.SteeringWindow)
		q := tunnel.PathQuality{Measured: recent.Samples >= health.MinQualitySamples, Loss: recent.Loss, Latency: recent.Latency}
		if s := c.Quality().Scores; s != nil {
			q.Points, q.Scored = s.VideoCallsPoints, true
		}
		out[name] = q
	}
	return out
}

// setQualityIntervals makes the checks of tunnels that carry a
// quality-steered prefix probe fast enough to steer within seconds, and
// the others at the default pace. Called with m.mu held.
func (m *Manager) setQualityIntervals() {
	steered := map[string]bool{}
	for _, r := range m.cfg.Routes {
		if r.QualitySteered() {
			steered[r.Via] = true
		}
	}
	for name, c := range m.checkers() {
		d := health.DefaultQualityInterval
		if steered[name] {
			d = health.SteeringQualityInterval
		}
		c.SetQualityInterval(d)
	}
}

// steerTick is how often the steering loop re-evaluates quality.
const steerTick = 100 * time.Millisecond

// steerLoop re-evaluates quality steering every steerTick while some
// prefix is quality-steered, and re-applies the routes when a choice
// changes, until the manager's context ends.
func (m *Manager) steerLoop() {
	t := time.NewTicker(steerTick)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		if !m.closed && slices.ContainsFunc(m.cfg.Routes, tunnel.Route.QualitySteered) {
			states := m.states()
			steer := m.steerer.Choose(m.routes(), states, m.qualities(), m.now())
			if !sameChoice(steer, m.steer) {
				if err := m.applySteered(states, steer); err != nil {
					m.log.Error("apply routes after a steering change", "err", err)
				}
			}
		}
		m.mu.Unlock()
	}
}

// sameChoice reports whether a and b send every prefix the same way.
func sameChoice(a, b tunnel.Steering) bool {
	if len(a) != len(b) {
		return false
	}
	for p, c := range a {
		if d, ok := b[p]; !ok || d.Via != c.Via {
			return false
		}
	}
	return true
}

// Close stops every check, removes the routes and closes the tunnels. It
// is idempotent and waits for its goroutines.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.cancel()
	var err error
	for _, r := range m.tunnels {
		err = errors.Join(err, m.stop(r)) // checkers have stopped after this
	}
	m.tunnels = nil
	err = errors.Join(err, m.closeIPsec())
	err = errors.Join(err, m.rm.Close())
	m.mu.Unlock()
	close(m.kick)
	m.wg.Wait()
	err = errors.Join(err, m.eps.Close())
	if m.ownNL != nil {
		m.ownNL.Close()
	}
	return err
}

// Status is the site-to-site state for /api/v1/status.
type Status struct {
	Tunnels []TunnelStatus `json:"tunnels"`
	// Steering is the tunnel quality steering chose for each
	// quality-steered prefix that has an eligible tunnel.
	Steering map[string]tunnel.Choice     `json:"steering"`
	Routes   []string                     `json:"routes"` // as installed, `ip route` style
	Dropped  map[string]map[string]uint64 `json:"dropped_by_local_address"`
}

// TunnelStatus is one tunnel with its health. For an IPsec tunnel the
// GRE-shaped fields carry its name, addresses, MTU and inner-packet
// counters, and IPsec its SAs.
type TunnelStatus struct {
	gre.Status
	Kind   string              `json:"kind"`             // gre | ipsec
	Health *health.Status      `json:"health,omitempty"` // nil: checks disabled
	IPsec  *ipsec.TunnelStatus `json:"ipsec,omitempty"`
}

// Status reads the current state.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Tunnels: []TunnelStatus{}, Routes: []string{}, Dropped: m.eps.Drops(), Steering: map[string]tunnel.Choice{}}
	for p, c := range m.steer {
		st.Steering[p.String()] = c
	}
	for _, name := range slices.Sorted(maps.Keys(m.tunnels)) {
		r := m.tunnels[name]
		ts := TunnelStatus{Status: r.tun.Status(), Kind: "gre"}
		if r.checker != nil {
			h := r.checker.Status()
			ts.Health = &h
		}
		st.Tunnels = append(st.Tunnels, ts)
	}
	st.Tunnels = append(st.Tunnels, m.ipsecStatus()...)
	slices.SortFunc(st.Tunnels, func(a, b TunnelStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, kr := range m.rm.Routes() {
		st.Routes = append(st.Routes, kr.String())
	}
	return st
}

// Describe implements prometheus.Collector. It describes nothing: the
// set of tunnels changes with reloads, so the manager is an unchecked
// collector.
func (m *Manager) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector: every tunnel's and check's
// metrics, the drops of packets that matched no tunnel, quality
// steering's choices and moves, and the route manager's installed paths
// and failovers.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	var cs []prometheus.Collector
	for _, r := range m.tunnels {
		cs = append(cs, r.tun)
		if r.checker != nil {
			cs = append(cs, r.checker)
		}
	}
	for _, r := range m.secure {
		if r.checker != nil {
			cs = append(cs, r.checker)
		}
	}
	if m.ipsec != nil {
		cs = append(cs, m.ipsec)
	}
	for p, c := range m.steer {
		ch <- prometheus.MustNewConstMetric(steeringViaDesc, prometheus.GaugeValue, 1, p.String(), c.Via)
	}
	for _, r := range m.cfg.Routes {
		if p := r.Prefix.Masked(); r.QualitySteered() {
			if _, ok := m.steerMoves[p]; !ok {
				m.steerMoves[p] = 0
			}
		}
	}
	for p, n := range m.steerMoves {
		ch <- prometheus.MustNewConstMetric(steeringMovesDesc, prometheus.CounterValue, float64(n), p.String())
	}
	m.mu.Unlock()
	for _, c := range cs {
		c.Collect(ch)
	}
	m.eps.Collect(ch)
	m.rm.Collect(ch)
}
