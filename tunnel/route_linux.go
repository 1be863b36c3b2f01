package tunnel

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the part of a *netlink.Handle the route manager uses. A
// handle created in a network namespace works there from any goroutine.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

// RouteOptions are a route manager's collaborators.
type RouteOptions struct {
	Logger *slog.Logger // nil discards
	// Sysctl sets a sysctl ("net.ipv4.fib_multipath_hash_policy") and
	// returns a function that puts the old value back. Nil writes
	// /proc/sys of the calling thread's network namespace, keeping the
	// file open so that the restore, from any thread, reaches the same
	// namespace.
	Sysctl func(key, value string) (restore func() error, err error)
}

// RouteManager keeps the kernel's routes through tunnels equal to a
// desired set, stamped with [RouteProtocol]. It only removes routes it
// installed itself (edgegw's other proto-237 routes are left alone).
// Its methods are safe for concurrent use.
type RouteManager struct {
	nl   Netlink
	log  *slog.Logger
	opts RouteOptions

	mu       sync.Mutex
	owned    map[routeKey]bool
	restore  func() error // the hash policy; nil once restored
	lastPlan []KernelRoute
	metrics  routeMetrics // guarded by mu
}

type routeKey struct {
	p      netip.Prefix
	metric int
}

const hashPolicy = "net.ipv4.fib_multipath_hash_policy"

// NewRouteManager returns a manager working through nl. It sets
// net.ipv4.fib_multipath_hash_policy to 1 (hash on the 5-tuple) so that
// ECMP spreads flows, not host pairs, and keeps each flow on one tunnel;
// Close restores the old value.
func NewRouteManager(nl Netlink, opts RouteOptions) (*RouteManager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sysctl == nil {
		opts.Sysctl = procSysctl
	}
	m := &RouteManager{nl: nl, log: opts.Logger.With("component", "routes"), opts: opts, owned: map[routeKey]bool{},
		metrics: newRouteMetrics()}
	restore, err := opts.Sysctl(hashPolicy, "1")
	if err != nil {
		return nil, fmt.Errorf("route manager: %w", err)
	}
	m.restore = restore
	return m, nil
}

// Set makes the kernel's routes match Plan(routes, states). Calling it
// again with the same input changes nothing. Routes through a tunnel
// whose interface does not exist are left out (and logged) until a later
// Set finds it; the prefix's unreachable route, which needs no interface,
// is installed all the same.
func (m *RouteManager) Set(routes []Route, states map[string]State) error {
	return m.SetSteered(routes, states, nil)
}

// SetSteered is Set with quality steering: the kernel's routes are made
// to match PlanSteered(routes, states, steer).
func (m *RouteManager) SetSteered(routes []Route, states map[string]State, steer Steering) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	plan := PlanSteered(routes, states, steer)
	m.lastPlan = plan
	return m.apply(plan)
}

// Routes returns the last plan Set applied, for the admin API.
func (m *RouteManager) Routes() []KernelRoute {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lastPlan)
}

// Close removes the routes the manager installed and restores the hash
// policy. It is idempotent.
func (m *RouteManager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.apply(nil)
	if m.restore != nil {
		err = errors.Join(err, m.restore())
		m.restore = nil
	}
	return err
}

func (m *RouteManager) apply(plan []KernelRoute) error {
	names := map[int]string{}
	index := map[string]int{}
	var errs error
	want := map[routeKey]*netlink.Route{}
	wantText := map[routeKey]string{}
	wantHops := map[routeKey][]Nexthop{}
	for _, kr := range plan {
		k := routeKey{kr.Prefix, kr.Metric}
		if kr.Unreachable {
			// No device: it outlives every tunnel interface.
			want[k] = &netlink.Route{
				Dst: IPNet(kr.Prefix), Priority: kr.Metric, Protocol: RouteProtocol,
				Scope: netlink.SCOPE_UNIVERSE, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNREACHABLE,
			}
			wantText[k] = kr.String()
			wantHops[k] = nil
			continue
		}
		r := &netlink.Route{
			Dst: IPNet(kr.Prefix), Priority: kr.Metric, Protocol: RouteProtocol,
			Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN,
		}
		var hops []Nexthop
		for _, n := range kr.Nexthops {
			idx, ok := index[n.Via]
			if !ok {
				link, err := m.nl.LinkByName(n.Via)
				if err != nil {
					m.log.Warn("route through missing tunnel interface left out", "prefix", kr.Prefix, "via", n.Via, "err", err)
					index[n.Via] = 0
					continue
				}
				idx = link.Attrs().Index
				index[n.Via], names[idx] = idx, n.Via
			}
			if idx == 0 {
				continue
			}
			hops = append(hops, n)
			r.MultiPath = append(r.MultiPath, &netlink.NexthopInfo{LinkIndex: idx, Hops: n.Weight - 1})
		}
		switch len(hops) {
		case 0:
			continue
		case 1:
			r.LinkIndex, r.MultiPath = r.MultiPath[0].LinkIndex, nil
			hops[0].Weight = 1 // a single path has no weight in the kernel
		}
		want[k] = r
		wantHops[k] = hops
		wantText[k] = KernelRoute{Prefix: kr.Prefix, Metric: kr.Metric, Nexthops: hops}.String()
	}

	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	// Both families: IPv6 prefixes are routed too, and a route not
	// listed would be replaced on every Set and never removed.
	have, err := m.nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list routes: %w", err)
	}
	// installed holds the plan's routes the kernel has once apply is
	// done, for the metrics.
	installed := map[routeKey][]Nexthop{}
	haveText := map[routeKey]string{}
	var stale []netlink.Route
	for _, r := range have {
		p, ok := PrefixOf(r.Dst)
		if !ok {
			continue
		}
		k := routeKey{p, r.Priority}
		if _, wanted := want[k]; wanted {
			haveText[k] = describe(r, p, names)
		} else if m.owned[k] {
			stale = append(stale, r)
		}
	}
	for _, kr := range plan {
		k := routeKey{kr.Prefix, kr.Metric}
		r, ok := want[k]
		if !ok {
			continue
		}
		if haveText[k] != wantText[k] {
			if err := m.nl.RouteReplace(r); err != nil {
				errs = errors.Join(errs, fmt.Errorf("install route %s: %w", wantText[k], err))
				continue
			}
			m.log.Info("route installed", "route", wantText[k])
		}
		installed[k] = wantHops[k]
	}
	slices.SortFunc(stale, func(a, b netlink.Route) int {
		pa, _ := PrefixOf(a.Dst)
		pb, _ := PrefixOf(b.Dst)
		return cmp.Or(pa.Addr().Compare(pb.Addr()), cmp.Compare(pa.Bits(), pb.Bits()), cmp.Compare(a.Priority, b.Priority))
	})
	for _, r := range stale {
		p, _ := PrefixOf(r.Dst)
		if err := m.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = errors.Join(errs, fmt.Errorf("remove route %s metric %d: %w", p, r.Priority, err))
			continue
		}
		m.log.Info("route removed", "prefix", p, "metric", r.Priority)
	}
	m.owned = map[routeKey]bool{}
	for k := range want {
		m.owned[k] = true
	}
	m.metrics.update(installed)
	return errs
}

// describe renders a kernel route in KernelRoute.String's form.
func describe(r netlink.Route, p netip.Prefix, names map[int]string) string {
	kr := KernelRoute{Prefix: p, Metric: r.Priority}
	switch r.Type {
	case unix.RTN_UNREACHABLE:
		// IPv6 reports such a route on lo; it has no nexthop all the same.
		kr.Unreachable = true
		return kr.String()
	case unix.RTN_UNICAST, 0:
	default:
		// Another type at a wanted key never matches what we want, so
		// the route is replaced.
		return fmt.Sprintf("type %d %s metric %d", r.Type, p, r.Priority)
	}
	name := func(idx int) string {
		if n, ok := names[idx]; ok {
			return n
		}
		return fmt.Sprintf("if%d", idx)
	}
	if len(r.MultiPath) == 0 {
		kr.Nexthops = []Nexthop{{Via: name(r.LinkIndex), Weight: 1}}
	}
	for _, n := range r.MultiPath {
		kr.Nexthops = append(kr.Nexthops, Nexthop{Via: name(n.LinkIndex), Weight: n.Hops + 1})
	}
	slices.SortFunc(kr.Nexthops, func(a, b Nexthop) int { return strings.Compare(a.Via, b.Via) })
	return kr.String()
}

func procSysctl(key, value string) (func() error, error) {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	old := strings.TrimSpace(string(buf[:n]))
	if _, err := f.WriteAt([]byte(value), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("set %s=%s: %w", key, value, err)
	}
	return func() error {
		defer f.Close()
		if _, err := f.WriteAt([]byte(old), 0); err != nil {
			return fmt.Errorf("restore %s=%s: %w", key, old, err)
		}
		return nil
	}, nil
}

// Describe implements prometheus.Collector.
func (m *RouteManager) Describe(ch chan<- *prometheus.Desc) {
	ch <- routeInstalledDesc
	ch <- routeFailoversDesc
}

// Collect implements prometheus.Collector: the paths of every routed
// prefix the last Set installed (edgegw_routes_installed) and the
// failovers per prefix (edgegw_route_failovers_total).
func (m *RouteManager) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.metrics.collect(ch)
}
