package dns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// ednsSize is the UDP payload size edgegw advertises and sends up to
// (the DNS flag day 2020 value, which avoids IP fragmentation).
const ednsSize = 1232

// Identity is who is behind a client address: the user's email and
// groups (identity.email, identity.groups in policies) and the enrolled
// device (DeviceID in the query log).
type Identity struct {
	Email    string
	Groups   []string
	DeviceID string // "" for a static WireGuard peer
	// Posture is the device's posture (device.posture.* in policies); the
	// zero Posture, every field absent, for a static peer.
	Posture rules.Posture
	// Interface is the network interface that owns the address (the
	// WireGuard interface): a query carries this identity only if it
	// came through it. Empty: the identity is never given.
	Interface string
}

// IdentitySource tells who is behind a client's source address: for a
// remote user, the tunnel address of their WireGuard device, and the
// interface that owns it. The gateway backs it with the enrolled-device
// registry and the static peers. Identify is called on every query and
// must not block. The server gives a query the identity only if it came
// through [Identity.Interface]; a bare source address is never enough.
type IdentitySource interface {
	Identify(src netip.Addr) (Identity, bool)
}

// Options are what the owner hands the resolver besides its configuration.
type Options struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	StateDir   string                // holds DoT's self-signed fallback (dns/) with acme and no cert_file
	// EgressAddr is the default egress: the address traffic leaves from
	// when Egress names none; with ecs: egress its /24 (IPv4) or /56
	// (IPv6) is sent upstream as EDNS Client Subnet, if it is public.
	// Invalid: no ECS is sent. EgressInterface replaces it once Run runs.
	EgressAddr netip.Addr
	// EgressInterface, when set, is the uplink whose address is the
	// default egress: Run reads it in its network namespace and again on
	// every address event (a DHCP renumbering needs no reload).
	EgressInterface string
	// Egress names each client's egress address (egress policies); nil:
	// every client uses the default egress.
	Egress EgressSource
	// SourceAddr is the local address upstream queries are sent from, so
	// they leave the way user traffic does. Invalid: the kernel picks.
	SourceAddr netip.Addr
	// IdentitySource tells who is behind a client address; nil: the
	// identity.* fields are absent.
	IdentitySource IdentitySource
	Sink           logpush.Sink // nil: no query log; else gateway_dns records
	// Dial opens connections to upstreams (network "udp" or "tcp"); it
	// lets the owner send queries through another network namespace or
	// VRF. Nil: a net.Dialer bound to SourceAddr. A Dial that is set
	// binds the source address itself.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig is the base of DoT and DoH client configs, e.g. RootCAs for
	// a private resolver. Nil: system roots.
	TLSConfig *tls.Config
	// Countries tells the country of the client and of the resolved
	// addresses (SrcIPCountryCode, ResolvedIPCountryCodes) from the GeoIP
	// databases of firewall.geoip; nil: those fields are empty.
	Countries CountryLookup
	// Certificates, when set, is asked first on every DoT handshake (the
	// gateway's ACME certificates with dot.acme); nil, nil or an error
	// falls back to dot.cert_file.
	Certificates func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	ColoCode     string           // ColoCode of query log records, e.g. the appliance name
	Now          func() time.Time // nil: time.Now
}

// CountryLookup tells the ISO 3166-1 alpha-2 country of an address, ""
// when unknown. It must be safe for concurrent use and must not block.
type CountryLookup interface {
	Country(netip.Addr) string
}

// Server is Gateway DNS: a filtering, caching forwarder. Make one with
// [New], serve with [Run], reconfigure with [Server.Set].
type Server struct {
	log    *slog.Logger
	opts   Options
	now    func() time.Time
	m      *metrics
	top    *topCounts // the console's top names and users
	cache  *cache
	flight flight
	qid    atomic.Uint64
	// inflight counts queries holding a max_inflight slot: waiting for
	// upstream work (theirs or an identical query's).
	inflight       atomic.Int64
	overloadLogged atomic.Int64 // Unix nanoseconds of the last "max_inflight reached" line
	snap           atomic.Pointer[snapshot]
	defEgress      atomic.Pointer[netip.Addr] // the default egress; nil: none
	// arrival looks up interfaces in Run's network namespace; nil
	// before Run (no query then carries an identity).
	arrival atomic.Pointer[arrival]
	rctx    atomic.Pointer[context.Context] // Run's context, for upstream queries

	prefetchSem chan struct{}
	dotCert     atomic.Pointer[tls.Certificate] // dot.cert_file, re-read on every Set

	mu        sync.Mutex // guards the fields below
	cfg       *Config
	lists     map[string]*domainList
	listeners []*listener
	dot       []*dotListener
	runCtx    context.Context // set while Run runs
	wake      chan struct{}   // tells Run that list refresh times changed
	bg        sync.WaitGroup  // servers and prefetches
}

// snapshot is what the query path reads, published atomically.
type snapshot struct {
	cfg      *Config
	policies []*policy
	ups      []*upstream
	ecs      []ecsMode // per upstream, as ups
	block    string
}

// ErrNotRunning is returned by Ready before Run binds the listeners.
var ErrNotRunning = errors.New("dns: not running")

// New checks cfg, reads its lists and compiles its policies. It binds
// nothing: [Server.Run] does.
func New(cfg Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:         opts.Logger.With("component", "dns"),
		opts:        opts,
		now:         opts.Now,
		lists:       map[string]*domainList{},
		wake:        make(chan struct{}, 1),
		prefetchSem: make(chan struct{}, 16),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if a := opts.EgressAddr.Unmap(); a.IsValid() {
		s.defEgress.Store(&a)
	}
	s.m = newMetrics(opts.Registerer, s)
	s.top = newTopCounts()
	c := cfg.Clone()
	c.SetDefaults()
	s.cache = newCache(int64(c.CacheMB) << 20)
	if err := s.apply(c, nil); err != nil {
		s.m.unregister()
		return nil, err
	}
	return s, nil
}

func validate(c *Config) error {
	var errs []error
	c.Validate(func(field, msg string) { errs = append(errs, fmt.Errorf("gateway.dns.%s: %s", field, msg)) })
	return errors.Join(errs...)
}

// Set applies a new configuration without dropping queries: lists are
// re-read (a list that cannot be read keeps its last good copy), the new
// policies and upstreams are published in one step, listeners that stay
// keep running. With the same configuration only the lists are re-read.
// On error nothing changes except list contents.
func (s *Server) Set(cfg Config) error {
	c := cfg.Clone()
	c.SetDefaults()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Equal(s.cfg) {
		s.loadListsLocked(s.lists)
		// A certificate renewed in place is presented from now on.
		return s.loadDoTCert(c)
	}
	return s.apply(c, s.cfg)
}

// apply builds and publishes a snapshot for c; s.mu is held (or s is new).
func (s *Server) apply(c, old *Config) error {
	if err := validate(c); err != nil {
		return err
	}
	lists := make(map[string]*domainList, len(c.Lists))
	for name, lc := range c.Lists {
		l := s.lists[name]
		if l == nil {
			l = newDomainList(name)
		}
		l.mu.Lock()
		l.file, l.refresh, l.next = lc.File, lc.Refresh, time.Time{}
		l.mu.Unlock()
		lists[name] = l
	}
	pols, err := compilePolicies(c.Policies, lists)
	if err != nil {
		return err
	}
	if err := s.loadDoTCert(c); err != nil {
		return err
	}
	s.loadListsLocked(lists)
	for _, p := range pols {
		p.matched = s.m.policyMatches.WithLabelValues(p.id)
	}

	prev := s.snap.Load()
	snap := &snapshot{cfg: c, policies: pols, block: c.BlockResponse}
	for _, spec := range c.Upstreams {
		var u *upstream
		if prev != nil {
			if i := slices.IndexFunc(prev.ups, func(u *upstream) bool { return u.spec == spec }); i >= 0 {
				u = prev.ups[i]
			}
		}
		if u == nil {
			u = newUpstream(spec, s.opts.TLSConfig, s.opts.SourceAddr, s.opts.Dial)
		}
		snap.ups = append(snap.ups, u)
		snap.ecs = append(snap.ecs, ecsFor(c, spec))
	}
	if s.runCtx != nil && (old == nil || !slices.Equal(old.Listen, c.Listen)) {
		if err := s.bindLocked(c.Listen); err != nil {
			return err
		}
	}
	if s.runCtx != nil && (old == nil || !slices.Equal(dotListen(old), dotListen(c))) {
		if err := s.bindDoTLocked(dotListen(c)); err != nil {
			return err
		}
	}
	s.snap.Store(snap)
	s.cfg, s.lists = c, lists
	s.cache.setMax(int64(c.CacheMB) << 20)
	if old != nil && (old.ECS != c.ECS || !maps.Equal(old.UpstreamECS, c.UpstreamECS)) {
		s.cache.flush() // answers depend on the subnet sent
	}
	if prev != nil {
		for _, u := range prev.ups {
			if !slices.Contains(snap.ups, u) {
				u.shutdown()
			}
		}
	}
	s.m.setUpstreams(snap.ups)
	s.m.forget(old, c)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// dotListen returns the DoT addresses of c, if any.
func dotListen(c *Config) []netip.AddrPort {
	if c == nil || c.DoT == nil {
		return nil
	}
	return c.DoT.Listen
}

// loadListsLocked reads every list's file.
func (s *Server) loadListsLocked(lists map[string]*domainList) {
	for _, l := range lists {
		s.loadList(l)
	}
}

func (s *Server) loadList(l *domainList) {
	n, bad, err := l.load(s.now())
	s.m.listEntries.WithLabelValues(l.name).Set(float64(n))
	if err != nil {
		s.m.listFailures.WithLabelValues(l.name).Inc()
		s.log.Error("domain list unreadable; keeping the last good copy", "list", l.name, "entries", n, "err", err)
		return
	}
	s.log.Info("domain list loaded", "list", l.name, "entries", n, "invalid_lines", bad)
}

// egressSubnet is the ECS option for the egress address: its /24 or /56.
func egressSubnet(a netip.Addr) *mdns.EDNS0_SUBNET {
	a = a.Unmap()
	e := &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 24}
	if a.Is6() {
		e.Family, e.SourceNetmask = 2, 56
	}
	p, _ := a.Prefix(int(e.SourceNetmask))
	e.Address = net.IP(p.Addr().AsSlice())
	return e
}

// Run binds the listeners and serves until ctx ends, refreshing lists on
// their schedule. It then stops the listeners, waits for in-flight work
// and returns. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.runCtx != nil {
		s.mu.Unlock()
		return errors.New("dns: Run called twice")
	}
	s.runCtx = ctx
	s.rctx.Store(&ctx)
	a, err := openArrival()
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("dns: netlink: %w", err)
	}
	s.arrival.Store(a)
	defer a.close()
	if s.opts.EgressInterface != "" {
		w, err := s.openEgressWatch()
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("dns: follow the egress interface %s: %w", s.opts.EgressInterface, err)
		}
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			w.run(ctx, s)
		}()
	}
	err = s.bindLocked(s.cfg.Listen)
	if err == nil {
		err = s.bindDoTLocked(dotListen(s.cfg))
	}
	s.mu.Unlock()
	if err == nil {
		s.log.Info("serving DNS", "listen", s.Status().Listening)
		s.refreshLoop(ctx)
	}
	s.mu.Lock()
	ls, dls := s.listeners, s.dot
	s.listeners, s.dot = nil, nil
	s.mu.Unlock()
	for _, l := range ls {
		l.shutdown()
	}
	for _, l := range dls {
		l.stop()
	}
	s.bg.Wait()
	for _, u := range s.snap.Load().ups {
		u.shutdown()
	}
	return err
}

// refreshLoop re-reads lists whose refresh interval has passed.
func (s *Server) refreshLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		next := time.Time{}
		now := s.now()
		for _, l := range s.lists {
			l.mu.Lock()
			due, every := l.next, l.refresh
			l.mu.Unlock()
			if every <= 0 {
				continue
			}
			if due.IsZero() {
				due = now.Add(every)
				l.mu.Lock()
				l.next = due
				l.mu.Unlock()
			}
			if !due.After(now) {
				s.loadList(l) // sets the next due time
				due = now.Add(every)
			}
			if next.IsZero() || due.Before(next) {
				next = due
			}
		}
		s.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 10*time.Millisecond)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
	}
}

// Ready reports whether the server is serving: its listeners are bound and
// at least one upstream is healthy.
func (s *Server) Ready() error {
	s.mu.Lock()
	running := s.runCtx != nil && len(s.listeners) > 0
	s.mu.Unlock()
	if !running {
		return ErrNotRunning
	}
	now := s.now()
	for _, u := range s.snap.Load().ups {
		if u.healthy(now) {
			return nil
		}
	}
	return errors.New("dns: every upstream is failing")
}
