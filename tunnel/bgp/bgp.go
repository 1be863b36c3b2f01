// Package bgp is edgegw's BGP speaker: GoBGP (github.com/osrg/gobgp/v4)
// as a library, in process. It holds eBGP sessions with branch routers
// over the GRE and IPsec tunnels and with the office's ISPs on the WAN.
//
// What a branch announces becomes routes through the neighbor's tunnel,
// handed to a [Sink] (the site-to-site manager, whose route manager gives
// them the tunnel's health penalty and the unreachable fallback, exactly
// as configured routes). A session that ends withdraws its routes at once.
// Each neighbor's import policy (prefix ranges, no default route unless
// asked) decides what is installed; a neighbor that sends more than its
// max_prefixes is torn down with a Cease NOTIFICATION by GoBGP itself.
// Each import range of a neighbor on a tunnel is also kept as an
// unreachable route (see [GuardMetric]): when the session is gone, the
// branch's traffic is refused, never leaked out of the WAN.
//
// What edgegw originates (announce) goes to each neighbor through its
// export rules, compiled to one GoBGP export policy that adds standard and
// large communities and AS-path prepends per neighbor and per prefix;
// routes learned from one neighbor are never exported to another.
//
// GoBGP's own goroutines create their sockets on whatever thread they run
// on. So that the speaker lives in the network namespace of the caller of
// [New] (the tests' namespaces), its server loop, which opens the
// listening sockets, runs on a thread locked into that namespace; sessions
// it accepts stay there. Dialled sessions (neighbors that are not passive)
// are made in the process's namespace, which is the caller's in a running
// edgegw.
package bgp

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// Sink takes the routes one source learned, replacing what it had
// (*site.Manager implements it). Learn is called from the manager's own
// goroutine and may block while it installs the routes.
type Sink interface {
	Learn(source string, routes []tunnel.Route) error
}

// SourcePrefix starts the source name of routes learned from a neighbor:
// "bgp:<neighbor name>".
const SourcePrefix = "bgp:"

// settle is the pause in updates the manager waits for before it reads
// the tables, and maxSettle the longest it waits, so that a burst of
// UPDATEs (a full table arriving) is installed in a few passes, not once
// per message, and a withdrawal still goes within maxSettle.
const (
	settle    = 20 * time.Millisecond
	maxSettle = 500 * time.Millisecond
)

// Options are a manager's collaborators.
type Options struct {
	Logger *slog.Logger // nil discards
	// Sink receives learned routes; nil counts them only (see SetSink).
	Sink Sink
}

// Manager runs the BGP speaker. Its methods are safe for concurrent use.
type Manager struct {
	log    *slog.Logger
	netns  int // the caller's network namespace, for the server loop
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the resync worker
	kick   chan struct{}

	mu      sync.Mutex // guards everything below; held by Set and Close
	closed  bool
	srv     *server.BgpServer // nil until the first Set
	served  chan struct{}     // closed when srv's loop returned
	global  Config            // ASN, RouterID, ListenPort the server runs with
	cfg     Config
	peers   map[string]peer // by neighbor name
	policy  *api.SetPoliciesRequest
	sink    Sink
	pushed  map[string][]tunnel.Route // by neighbor name: what the sink has
	counted map[string]counts
	guards  guards
}

type peer struct {
	n        Neighbor
	password string
}

type counts struct{ received, accepted int }

// New returns a manager that runs nothing until Set. The speaker runs in
// the network namespace of the calling thread.
func New(ctx context.Context, opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bgp: open network namespace: %w", err)
	}
	nl, err := netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bgp: netlink: %w", err)
	}
	m := &Manager{log: log.With("component", "bgp"), netns: fd, kick: make(chan struct{}, 1), sink: opts.Sink,
		peers: map[string]peer{}, pushed: map[string][]tunnel.Route{}, counted: map[string]counts{}, guards: guards{nl: nl}}
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.wg.Go(m.worker)
	return m, nil
}

// Set makes the speaker match cfg (defaults applied, validated). A
// change of ASN, router ID or listen port restarts the speaker (every
// session drops); otherwise only changed neighbors are reset, and export
// changes are sent with a soft reset.
func (m *Manager) Set(cfg Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("bgp: closed")
	}
	want := map[string]peer{}
	var errs error
	for _, n := range cfg.Neighbors {
		p := peer{n: n}
		if n.PasswordFile != "" {
			pw, err := readPassword(n.PasswordFile)
			if err != nil {
				return fmt.Errorf("bgp: neighbor %s: %w", n.Name, err)
			}
			p.password = pw
		}
		want[n.Name] = p
	}
	if m.srv != nil && (m.global.ASN != cfg.ASN || m.global.RouterID != cfg.RouterID || m.global.ListenPort != cfg.ListenPort) {
		m.log.Info("speaker restarts: asn, router_id or listen_port changed")
		m.stopServer(false)
	}
	if m.srv == nil {
		if err := m.startServer(cfg); err != nil {
			return err
		}
	}
	ctx := m.ctx
	policy := exportPolicy(&cfg)
	policyChanged := !reflect.DeepEqual(policy, m.policy)
	if policyChanged {
		// SetPolicies replaces sets and policies but keeps assignments,
		// which are set one by one.
		if err := m.srv.SetPolicies(ctx, policy); err != nil {
			return fmt.Errorf("bgp: export policy: %w", err)
		}
		for _, a := range policy.Assignments {
			if err := m.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
				return fmt.Errorf("bgp: assign %s policy: %w", a.Direction, err)
			}
		}
		m.policy = policy
	}
	for name, p := range m.peers {
		if w, ok := want[name]; ok && sessionEqual(w, p) {
			continue
		}
		if err := m.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.n.Address.String()}); err != nil {
			errs = errors.Join(errs, fmt.Errorf("bgp: remove neighbor %s: %w", name, err))
		}
		delete(m.peers, name)
	}
	for _, n := range cfg.Neighbors {
		p := want[n.Name]
		if old, ok := m.peers[n.Name]; ok {
			m.peers[n.Name] = p // import, priority or export changed at most
			if policyChanged && !reflect.DeepEqual(old.n.Export, p.n.Export) {
				if err := m.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: n.Address.String(), Soft: true,
					Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
					m.log.Warn("soft reset after an export change", "neighbor", n.Name, "err", err)
				}
			}
			continue
		}
		if err := m.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			errs = errors.Join(errs, fmt.Errorf("bgp: add neighbor %s: %w", n.Name, err))
			continue
		}
		m.peers[n.Name] = p
	}
	errs = errors.Join(errs, m.announce(cfg.Announce))
	errs = errors.Join(errs, m.guards.set(wantGuards(&cfg)))
	m.cfg = cfg
	m.poke()
	return errs
}

// sessionEqual tells whether a and b describe the same session, so that a
// change elsewhere (import, priority, export) keeps it up.
func sessionEqual(a, b peer) bool {
	x, y := a.n, b.n
	x.Import, y.Import = ImportPolicy{MaxPrefixes: x.Import.MaxPrefixes}, ImportPolicy{MaxPrefixes: y.Import.MaxPrefixes}
	x.Export, y.Export = nil, nil
	x.Priority, y.Priority = 0, 0
	x.Tunnel, y.Tunnel = "", ""
	return reflect.DeepEqual(x, y) && a.password == b.password
}

func apiPeer(p peer) *api.Peer {
	n := p.n
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}
	if n.Import.MaxPrefixes > 0 {
		as.PrefixLimits = &api.PrefixLimit{Family: fam, MaxPrefixes: uint32(n.Import.MaxPrefixes)}
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.RemoteAS, AuthPassword: p.password,
			Description: n.Name},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: uint64(n.HoldTime),
			KeepaliveInterval: uint64(max(n.HoldTime/3, 1)), ConnectRetry: 5, IdleHoldTimeAfterReset: 5}},
		Transport: &api.Transport{PassiveMode: n.Passive},
		AfiSafis:  []*api.AfiSafi{as},
	}
	if n.GracefulRestart > 0 {
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(n.GracefulRestart)}
		as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return ap
}

// startServer starts a GoBGP server whose loop runs on a thread locked
// into the caller's network namespace, and watches its events.
func (m *Manager) startServer(cfg Config) error {
	srv := server.NewBgpServer(server.LoggerOption(m.log.With("lib", "gobgp"), nil))
	served := make(chan struct{})
	entered := make(chan error, 1)
	go func() { // owned by the manager: stopServer ends it and waits
		defer close(served)
		// The thread stays locked: when this goroutine ends the runtime
		// discards it instead of reusing a thread in another namespace.
		runtime.LockOSThread()
		if err := unix.Setns(m.netns, unix.CLONE_NEWNET); err != nil {
			entered <- fmt.Errorf("bgp: enter network namespace: %w", err)
			return
		}
		entered <- nil
		srv.Serve()
	}()
	if err := <-entered; err != nil {
		return err
	}
	global := &api.Global{Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: int32(cfg.ListenPort)}
	if err := srv.StartBgp(m.ctx, &api.StartBgpRequest{Global: global}); err != nil {
		srv.Stop()
		<-served
		return fmt.Errorf("bgp: start speaker (AS %d, port %d): %w", cfg.ASN, cfg.ListenPort, err)
	}
	poke := func() { m.poke() }
	err := srv.WatchEvent(m.ctx, server.WatchEventMessageCallbacks{
		OnPathUpdate: func([]*apiutil.Path, time.Time) { poke() },
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			m.peerEvent(ev.Peer.State)
			poke()
		},
	}, server.WatchUpdate(false, "", ""), server.WatchPeer(), server.WatchAdjInWithdraw())
	if err != nil {
		srv.Stop()
		<-served
		return fmt.Errorf("bgp: watch events: %w", err)
	}
	m.srv, m.served, m.global = srv, served, Config{ASN: cfg.ASN, RouterID: cfg.RouterID, ListenPort: cfg.ListenPort}
	m.peers, m.policy, m.cfg.Announce = map[string]peer{}, nil, nil
	return nil
}

// stopServer ends every session and the server loop. With graceful,
// sessions with graceful restart end without a NOTIFICATION (just the
// TCP connection), so the neighbor keeps edgegw's routes as stale for
// the restart time and keeps forwarding while edgegw restarts; the others
// get a Cease.
func (m *Manager) stopServer(graceful bool) {
	if m.srv == nil {
		return
	}
	// The context is not m.ctx: Close has cancelled that already.
	if err := m.srv.StopBgp(context.WithoutCancel(m.ctx), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		m.log.Warn("stop the speaker", "err", err)
	}
	<-m.served
	m.srv, m.served = nil, nil
}

// peerEvent logs a session's change, and why a session ended.
func (m *Manager) peerEvent(st apiutil.PeerState) {
	args := []any{"address", st.NeighborAddress, "state", st.SessionState.String()}
	if st.DisconnectReason != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
		args = append(args, "reason", st.DisconnectReason.String(), "message", st.DisconnectMessage)
	}
	switch {
	case st.AdminState == api.PeerState_ADMIN_STATE_PFX_CT:
		// GoBGP sent a Cease (maximum number of prefixes reached) and
		// keeps the session down until the neighbor is configured anew.
		m.log.Warn("session torn down: the neighbor sent more prefixes than import.max_prefixes allows; "+
			"it stays down until its configuration changes or edgegw restarts", args...)
	case st.SessionState == bgp.BGP_FSM_ESTABLISHED:
		m.log.Info("session established", args...)
	case st.DisconnectReason == api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT ||
		st.DisconnectReason == api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED ||
		st.DisconnectReason == api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED ||
		st.DisconnectReason == api.PeerState_DISCONNECT_REASON_INVALID_MSG:
		// A session torn down (a malformed UPDATE, a peer's Cease, a
		// dead tunnel): its routes are withdrawn now.
		m.log.Warn("session ended", args...)
	default:
		m.log.Info("session state", args...)
	}
}

// announce makes the originated paths equal want.
func (m *Manager) announce(want []netip.Prefix) error {
	var errs error
	for _, p := range m.cfg.Announce {
		if !slices.Contains(want, p) {
			if err := m.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{originPath(p)}}); err != nil {
				errs = errors.Join(errs, fmt.Errorf("bgp: withdraw %s: %w", p, err))
			}
		}
	}
	for _, p := range want {
		if slices.Contains(m.cfg.Announce, p) {
			continue
		}
		if _, err := m.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{originPath(p)}}); err != nil {
			errs = errors.Join(errs, fmt.Errorf("bgp: announce %s: %w", p, err))
		}
	}
	return errs
}

// originPath is p originated here: origin IGP, next hop this end of each
// session (GoBGP fills in the unspecified next hop per neighbor).
func originPath(p netip.Prefix) *apiutil.Path {
	nlri, _ := bgp.NewIPAddrPrefix(p) // validated
	nh, _ := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
	return &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri,
		Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh}}
}

func readPassword(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	pw := strings.TrimSpace(sc.Text())
	if pw == "" || len(pw) > 80 {
		return "", fmt.Errorf("password file %s: the first line must hold a password of 1 to 80 characters (TCP MD5's limit)", path)
	}
	return pw, nil
}

// SetSink hands learned routes to s from now on (nil: count only). The
// new sink is given every neighbor's routes at once; the old one is not
// told anything (it is being replaced, usually closed).
func (m *Manager) SetSink(s Sink) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sink == s {
		return
	}
	m.sink = s
	m.pushed = map[string][]tunnel.Route{}
	m.poke()
}

func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default: // a resync is pending and will see this change
	}
}

// worker re-reads the tables after events until the manager closes.
func (m *Manager) worker() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		}
		// Wait until the updates pause for settle, or maxSettle passed:
		// a full table arriving is installed in a few passes, not one
		// per UPDATE, and a lone change waits only settle.
		deadline := time.After(maxSettle)
	quiet:
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-m.kick:
				continue
			case <-deadline:
				break quiet
			case <-time.After(settle):
				break quiet
			}
		}
		m.mu.Lock()
		if !m.closed {
			m.resync()
		}
		m.mu.Unlock()
	}
}

// resync reads each established neighbor's Adj-RIB-In, applies its
// import policy and hands the routes to the sink where they changed.
func (m *Manager) resync() {
	if m.srv == nil {
		return
	}
	states := m.sessionStates()
	for _, n := range m.cfg.Neighbors {
		var c counts
		var routes []tunnel.Route
		if states[n.Address] == api.PeerState_SESSION_STATE_ESTABLISHED {
			err := m.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN,
				Name: n.Address.String(), Family: bgp.RF_IPv4_UC}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
				pfx, ok := nlri.(*bgp.IPAddrPrefix)
				i := slices.IndexFunc(paths, func(p *apiutil.Path) bool { return !p.Withdrawal })
				if !ok || i < 0 {
					return
				}
				c.received++
				// A path through edgegw's own AS is its own announcement
				// coming back (RFC 4271 9.1.2): never a way to that prefix.
				if hasAS(paths[i].Attrs, m.cfg.ASN) || !n.Import.Accepts(pfx.Prefix) {
					return
				}
				c.accepted++
				if n.Tunnel != "" {
					routes = append(routes, tunnel.Route{Prefix: pfx.Prefix.Masked(), Via: n.Tunnel, Priority: n.Priority, Weight: 1})
				}
			})
			if err != nil {
				m.log.Warn("read routes learned from neighbor", "neighbor", n.Name, "err", err)
				continue
			}
		}
		if c != m.counted[n.Name] {
			m.log.Info("learned routes", "neighbor", n.Name, "received", c.received, "accepted", c.accepted)
		}
		m.counted[n.Name] = c
		slices.SortFunc(routes, func(a, b tunnel.Route) int {
			return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
		})
		m.push(n.Name, routes)
	}
	for name := range m.pushed {
		if !slices.ContainsFunc(m.cfg.Neighbors, func(n Neighbor) bool { return n.Name == name }) {
			m.push(name, nil)
			delete(m.counted, name)
		}
	}
}

// hasAS tells whether the AS_PATH among attrs holds asn.
func hasAS(attrs []bgp.PathAttributeInterface, asn uint32) bool {
	for _, a := range attrs {
		if p, ok := a.(*bgp.PathAttributeAsPath); ok {
			for _, seg := range p.Value {
				if slices.Contains(seg.GetAS(), asn) {
					return true
				}
			}
		}
	}
	return false
}

func (m *Manager) push(name string, routes []tunnel.Route) {
	old, had := m.pushed[name]
	if m.sink == nil || (had && slices.Equal(old, routes)) || (!had && len(routes) == 0) {
		return
	}
	if err := m.sink.Learn(SourcePrefix+name, routes); err != nil {
		m.log.Error("install routes learned from neighbor", "neighbor", name, "err", err)
		return // tried again on the next event
	}
	if len(routes) == 0 {
		delete(m.pushed, name)
		return
	}
	m.pushed[name] = routes
}

func (m *Manager) sessionStates() map[netip.Addr]api.PeerState_SessionState {
	out := map[netip.Addr]api.PeerState_SessionState{}
	m.srv.ListPeer(m.ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			out[a] = p.GetState().GetSessionState()
		}
	})
	return out
}

// Close stops the speaker (sessions with graceful restart just close, the
// others end with a Cease), withdraws what it handed the sink, removes
// its unreachable guards and waits for its goroutines. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.cancel()
	m.stopServer(true)
	var errs error
	if m.sink != nil {
		for name := range m.pushed {
			errs = errors.Join(errs, m.sink.Learn(SourcePrefix+name, nil))
		}
	}
	m.pushed = map[string][]tunnel.Route{}
	errs = errors.Join(errs, m.guards.set(nil))
	m.mu.Unlock()
	m.wg.Wait()
	m.guards.nl.Close()
	unix.Close(m.netns)
	return errs
}
