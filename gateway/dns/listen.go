package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// listener serves one listen address over UDP and TCP. UDP has one
// socket per CPU (SO_REUSEPORT), each with its own reader, so that the
// kernel spreads queries over them.
type listener struct {
	want  netip.AddrPort // as configured (the port may be 0 in tests)
	bound netip.AddrPort
	udp   []*net.UDPConn // served by udpServer
	tcp   *mdns.Server
}

// reusePort is a ListenConfig that sets SO_REUSEPORT.
var reusePort = net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}}

// bindLocked makes the listeners match addrs: new addresses are bound
// first (so a failure changes nothing), then those no longer wanted are
// shut down. s.mu is held.
func (s *Server) bindLocked(addrs []netip.AddrPort) error {
	var keep, added []*listener
	for _, a := range addrs {
		if i := slices.IndexFunc(s.listeners, func(l *listener) bool { return l.want == a }); i >= 0 {
			keep = append(keep, s.listeners[i])
			continue
		}
		l, err := s.listen(a)
		if err != nil {
			for _, l := range added {
				l.shutdown()
			}
			return err
		}
		added = append(added, l)
	}
	for _, l := range s.listeners {
		if !slices.Contains(keep, l) {
			l.shutdown()
		}
	}
	s.listeners = append(keep, added...)
	return nil
}

// listen binds a on UDP and TCP (a port of 0 takes the same free port for
// both) and starts serving.
func (s *Server) listen(a netip.AddrPort) (*listener, error) {
	var pc net.PacketConn
	var ln net.Listener
	var err error
	ctx := context.Background() // binding is not cancelled
	for attempt := 0; attempt < 5; attempt++ {
		if pc, err = reusePort.ListenPacket(ctx, "udp", a.String()); err != nil {
			return nil, fmt.Errorf("listen udp %s: %w", a, err)
		}
		bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(a.Addr(), bound.Port()).String()); err == nil {
			break
		}
		pc.Close()
		if a.Port() != 0 {
			return nil, fmt.Errorf("listen tcp %s: %w", a, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", a, err)
	}
	ua := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	l := &listener{
		want:  a,
		bound: netip.AddrPortFrom(ua.Addr().Unmap(), ua.Port()),
		udp:   []*net.UDPConn{pc.(*net.UDPConn)},
		tcp: &mdns.Server{Listener: ln, Handler: s, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
	}
	for range runtime.GOMAXPROCS(0) - 1 {
		more, err := reusePort.ListenPacket(ctx, "udp", netip.AddrPortFrom(a.Addr(), ua.Port()).String())
		if err != nil {
			break // one socket still serves
		}
		l.udp = append(l.udp, more.(*net.UDPConn))
	}
	var servers []*udpServer
	for _, c := range l.udp {
		u, err := newUDPServer(s, c)
		if err != nil {
			for _, c := range l.udp {
				c.Close()
			}
			ln.Close()
			return nil, err
		}
		servers = append(servers, u)
	}
	for _, u := range servers {
		s.bg.Go(u.serve)
	}
	started := make(chan struct{})
	failed := make(chan error, 1)
	l.tcp.NotifyStartedFunc = func() { close(started) }
	s.bg.Go(func() {
		if err := l.tcp.ActivateAndServe(); err != nil {
			s.log.Error("DNS listener stopped", "addr", l.bound, "err", err)
			failed <- err
		}
	})
	select {
	case <-started:
	case err := <-failed:
		for _, c := range l.udp {
			c.Close()
		}
		return nil, fmt.Errorf("serve %s: %w", a, err)
	}
	return l, nil
}

func (l *listener) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, c := range l.udp {
		c.Close()
	}
	l.tcp.ShutdownContext(ctx)
}

// Status is a snapshot of the resolver's state for the admin API.
type Status struct {
	Listening    []netip.AddrPort `json:"listening"`
	DoTListening []netip.AddrPort `json:"dot_listening,omitempty"`
	Upstreams    []UpstreamStatus `json:"upstreams"`
	Lists        []ListStatus     `json:"lists"`
	Policies     int              `json:"policies"`
	CacheEntries int              `json:"cache_entries"`
	CacheBytes   int64            `json:"cache_bytes"`
}

// UpstreamStatus is one upstream's health.
type UpstreamStatus struct {
	Upstream  string `json:"upstream"`
	Healthy   bool   `json:"healthy"`
	Failures  int    `json:"consecutive_failures"`
	LastError string `json:"last_error,omitempty"`
}

// ListStatus is one domain list's state.
type ListStatus struct {
	Name     string    `json:"name"`
	File     string    `json:"file"`
	Entries  int       `json:"entries"`
	LoadedAt time.Time `json:"loaded_at"`
	Error    string    `json:"error,omitempty"`
}

// Status returns the resolver's state.
func (s *Server) Status() Status {
	var st Status
	now := s.now()
	snap := s.snap.Load()
	st.Policies = len(snap.policies)
	for _, u := range snap.ups {
		us := UpstreamStatus{Upstream: u.spec, Healthy: u.healthy(now), Failures: int(u.fails.Load())}
		if e := u.lastErr.Load(); e != nil && us.Failures > 0 {
			us.LastError = *e
		}
		st.Upstreams = append(st.Upstreams, us)
	}
	s.mu.Lock()
	for _, l := range s.listeners {
		st.Listening = append(st.Listening, l.bound)
	}
	for _, l := range s.dot {
		st.DoTListening = append(st.DoTListening, l.bound)
	}
	for _, name := range sortedKeys(s.lists) {
		l := s.lists[name]
		l.mu.Lock()
		ls := ListStatus{Name: name, File: l.file, Entries: l.Len(), LoadedAt: l.loaded}
		if l.lastErr != nil {
			ls.Error = l.lastErr.Error()
		}
		l.mu.Unlock()
		st.Lists = append(st.Lists, ls)
	}
	s.mu.Unlock()
	st.CacheEntries, st.CacheBytes = s.cache.len()
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
