//go:build linux

package ipsec

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/strongswan/govici/vici"
)

// TunnelStatus is one tunnel's state for the admin API.
type TunnelStatus struct {
	Name      string     `json:"name"`
	Backend   string     `json:"backend"` // kernel | kernel-libipsec
	Device    string     `json:"device"`  // its xfrm interface, or the shared TUN ("" while charon restarts)
	MTU       int        `json:"mtu"`     // of the device: the tunnel's, or at most LibipsecMTU on the shared TUN
	Up        bool       `json:"up"`      // IKE SA established and child SA installed
	IKE       *IKEStatus `json:"ike,omitempty"`
	Child     *SAStatus  `json:"child,omitempty"`
	IKERekeys uint64     `json:"ike_rekeys"`
	Rekeys    uint64     `json:"child_rekeys"`
	// Bytes and packets through the tunnel since edgegw started it,
	// across rekeys and charon restarts.
	BytesIn     uint64    `json:"bytes_in"`
	BytesOut    uint64    `json:"bytes_out"`
	PacketsIn   uint64    `json:"packets_in"`
	PacketsOut  uint64    `json:"packets_out"`
	Failures    uint64    `json:"failures"`
	LastError   string    `json:"last_error,omitempty"` // why it last failed, in an operator's words
	LastDetail  string    `json:"last_error_detail,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Since       time.Time `json:"since,omitzero"` // last up/down change
}

// IKEStatus is the tunnel's IKE SA as charon reports it.
type IKEStatus struct {
	State       string `json:"state"` // CONNECTING, ESTABLISHED, REKEYING, DELETING…
	Initiator   bool   `json:"initiator"`
	LocalHost   string `json:"local_host"`
	RemoteHost  string `json:"remote_host"`
	Encryption  string `json:"encryption"` // AES_GCM_16_256
	Integrity   string `json:"integrity,omitempty"`
	PRF         string `json:"prf"`
	DH          string `json:"dh_group"`
	Established string `json:"established_seconds"`
	NATRemote   bool   `json:"nat_remote"`
	NATLocal    bool   `json:"nat_local"`
}

// SAStatus is the tunnel's installed child SA.
type SAStatus struct {
	State      string   `json:"state"` // INSTALLED, REKEYING…
	Encap      bool     `json:"udp_encapsulation"`
	Encryption string   `json:"encryption"`
	Integrity  string   `json:"integrity,omitempty"`
	DH         string   `json:"pfs_group,omitempty"`
	LocalTS    []string `json:"local_ts"`
	RemoteTS   []string `json:"remote_ts"`
	SPIIn      string   `json:"spi_in"`
	SPIOut     string   `json:"spi_out"`
}

// tstate is what the engine tracks of a tunnel between SA listings.
type tstate struct {
	name                string
	up                  bool
	since               time.Time
	ike                 *IKEStatus
	child               *SAStatus
	ikeRekeys, rekeys   uint64
	failures            uint64
	lastErr, lastDetail string
	lastErrAt           time.Time
	// Byte counters: those of child SAs that are gone, plus the last
	// reading of each live one (by unique id).
	base, live map[string]counters
	// An initiated tunnel whose IKE SA is up without a child SA (the
	// child failed, say on proposals, and charon kept the IKE SA, which
	// dead peer detection then keeps alive) gets its child asked for
	// again: childless is since when, retryAt when next, retries how
	// many times so far (the wait doubles).
	childless, retryAt time.Time
	retries            int
}

// Child retries: the first childRetryFirst after the IKE SA was seen
// without a child, then twice as long each time, up to childRetryMax.
const (
	childRetryFirst = 5 * time.Second
	childRetryMax   = 2 * time.Minute
)

// childRetry tells whether the child SA of a tunnel this node initiates
// should be asked for again at now; st.up and st.ike are current.
func (s *tstate) childRetry(now time.Time, initiator bool) bool {
	if !initiator || s.up || s.ike == nil || s.ike.State != "ESTABLISHED" {
		s.childless, s.retryAt, s.retries = time.Time{}, time.Time{}, 0
		return false
	}
	if s.childless.IsZero() {
		s.childless, s.retryAt = now, now.Add(childRetryFirst)
		return false
	}
	if now.Before(s.retryAt) {
		return false
	}
	s.retries++
	s.retryAt = now.Add(min(childRetryFirst<<min(s.retries, 10), childRetryMax))
	return true
}

type counters struct{ bytesIn, bytesOut, pktsIn, pktsOut uint64 }

func (c counters) add(o counters) counters {
	return counters{c.bytesIn + o.bytesIn, c.bytesOut + o.bytesOut, c.pktsIn + o.pktsIn, c.pktsOut + o.pktsOut}
}

func newTState(name string) *tstate {
	return &tstate{name: name, since: time.Now(), base: map[string]counters{}, live: map[string]counters{}}
}

// retire moves live counters to the base, for SAs that are gone.
func (s *tstate) retire(keep map[string]bool) {
	for id, c := range s.live {
		if !keep[id] {
			s.base["gone"] = s.base["gone"].add(c)
			delete(s.live, id)
		}
	}
}

func (s *tstate) total() counters {
	t := s.base["gone"]
	for _, c := range s.live {
		t = t.add(c)
	}
	return t
}

func (s *tstate) setDown() {
	if s.up {
		s.since = time.Now()
	}
	s.up, s.ike, s.child = false, nil, nil
	s.retire(nil)
}

// The parts of list-sas' "list-sa" events the status uses.
type ikeSAMsg struct {
	UniqueID    string                `vici:"uniqueid"`
	State       string                `vici:"state"`
	Initiator   string                `vici:"initiator"`
	LocalHost   string                `vici:"local-host"`
	RemoteHost  string                `vici:"remote-host"`
	EncrAlg     string                `vici:"encr-alg"`
	EncrKeySize string                `vici:"encr-keysize"`
	IntegAlg    string                `vici:"integ-alg"`
	PRFAlg      string                `vici:"prf-alg"`
	DHGroup     string                `vici:"dh-group"`
	Established string                `vici:"established"`
	NATRemote   string                `vici:"nat-remote"`
	NATLocal    string                `vici:"nat-local"`
	Children    map[string]childSAMsg `vici:"child-sas"`
}

type childSAMsg struct {
	Name        string   `vici:"name"`
	UniqueID    string   `vici:"uniqueid"`
	State       string   `vici:"state"`
	Encap       string   `vici:"encap"`
	EncrAlg     string   `vici:"encr-alg"`
	EncrKeySize string   `vici:"encr-keysize"`
	IntegAlg    string   `vici:"integ-alg"`
	DHGroup     string   `vici:"dh-group"`
	SPIIn       string   `vici:"spi-in"`
	SPIOut      string   `vici:"spi-out"`
	BytesIn     string   `vici:"bytes-in"`
	BytesOut    string   `vici:"bytes-out"`
	PacketsIn   string   `vici:"packets-in"`
	PacketsOut  string   `vici:"packets-out"`
	LocalTS     []string `vici:"local-ts"`
	RemoteTS    []string `vici:"remote-ts"`
}

func alg(name, size string) string {
	if size == "" {
		return name
	}
	return name + "_" + size
}

func u64(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }

// refresh lists charon's SAs and updates every tunnel's state; tunnels
// that went up or down are announced.
func (e *Engine) refresh() {
	e.mu.Lock()
	lister := e.lister
	e.mu.Unlock()
	if lister == nil {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	sas, err := lister.list(ctx)
	if err != nil {
		// Keep the last state rather than call tunnels down on a
		// listing that did not complete.
		e.log.Warn("list charon's SAs", "err", err)
		return
	}
	var ups, downs, retry []string
	now := time.Now()
	e.mu.Lock()
	for name, st := range e.state {
		was := st.up
		st.ike, st.child, st.up = nil, nil, false
		keep := map[string]bool{}
		for _, sa := range sas[name] {
			e.ikeIDs[sa.UniqueID] = name
			if st.ike == nil || sa.State == "ESTABLISHED" {
				st.ike = &IKEStatus{State: sa.State, Initiator: sa.Initiator == "yes", LocalHost: sa.LocalHost,
					RemoteHost: sa.RemoteHost, Encryption: alg(sa.EncrAlg, sa.EncrKeySize), Integrity: sa.IntegAlg,
					PRF: sa.PRFAlg, DH: sa.DHGroup, Established: sa.Established,
					NATRemote: sa.NATRemote == "yes", NATLocal: sa.NATLocal == "yes"}
			}
			for _, id := range slices.Sorted(maps.Keys(sa.Children)) {
				c := sa.Children[id]
				if c.Name != name {
					continue
				}
				keep[c.UniqueID] = true
				st.live[c.UniqueID] = counters{u64(c.BytesIn), u64(c.BytesOut), u64(c.PacketsIn), u64(c.PacketsOut)}
				if c.State != "INSTALLED" && st.child != nil {
					continue
				}
				st.child = &SAStatus{State: c.State, Encap: c.Encap == "yes", Encryption: alg(c.EncrAlg, c.EncrKeySize),
					Integrity: c.IntegAlg, DH: c.DHGroup, LocalTS: c.LocalTS, RemoteTS: c.RemoteTS, SPIIn: c.SPIIn, SPIOut: c.SPIOut}
				if sa.State == "ESTABLISHED" && c.State == "INSTALLED" {
					st.up = true
				}
			}
		}
		st.retire(keep)
		if w := e.want[name]; st.childRetry(now, w != nil && w.t.Initiator) {
			retry = append(retry, name)
		}
		if st.up != was {
			st.since = time.Now()
			if st.up {
				ups = append(ups, name)
				e.log.Info("ipsec tunnel up", "tunnel", name, "ike", st.ike.Encryption+"/"+st.ike.PRF+"/"+st.ike.DH,
					"esp", st.child.Encryption+"/"+st.child.Integrity, "remote", st.ike.RemoteHost, "remote_ts", st.child.RemoteTS)
			} else {
				downs = append(downs, name)
				e.log.Warn("ipsec tunnel down", "tunnel", name, "last_error", st.lastErr)
			}
		}
	}
	e.mu.Unlock()
	e.notify(ups, true)
	e.notify(downs, false)
	for _, name := range retry {
		e.log.Info("ipsec tunnel: IKE SA up without a child SA; asking for the child SA again", "tunnel", name)
		e.initiate(name)
	}
}

// event handles one charon event.
func (e *Engine) event(ev vici.Event) {
	switch ev.Name {
	case "log":
		e.logEvent(ev.Message)
		return
	case "ike-rekey", "child-rekey":
		e.mu.Lock()
		for _, name := range ev.Message.Keys() {
			if st := e.state[name]; st != nil {
				if ev.Name == "ike-rekey" {
					st.ikeRekeys++
				} else {
					st.rekeys++
				}
				e.log.Info("ipsec SA rekeyed", "tunnel", name, "sa", strings.TrimSuffix(ev.Name, "-rekey"))
			}
		}
		e.mu.Unlock()
	}
	e.refresh()
}

// logEvent forwards a charon log line into edgegw's log with the tunnel
// name, and records failures on the tunnel.
func (e *Engine) logEvent(m *vici.Message) {
	str := func(k string) string { s, _ := m.Get(k).(string); return s }
	text, id, ikeName := str("msg"), str("ikesa-uniqueid"), str("ikesa-name")
	e.mu.Lock()
	name := ""
	if _, ok := e.state[ikeName]; ok {
		name = ikeName
	}
	if name == "" && id != "" {
		name = e.ikeIDs[id]
	}
	if name == "" {
		if remote, local, ok := packetAddrs(text); ok {
			name = e.tunnelFor(remote, local)
		}
	}
	if name != "" && id != "" {
		e.ikeIDs[id] = name
	}
	if strings.HasPrefix(text, "received proposals:") && id != "" {
		e.offers[id] = strings.TrimPrefix(text, "received ")
	}
	reason := classify(text)
	if strings.HasPrefix(reason, "proposal mismatch") && e.offers[id] != "" {
		text += " (peer's " + e.offers[id] + ")"
	}
	var st *tstate
	if reason != "" {
		st = e.state[name]
		if st == nil && len(e.state) == 1 {
			// Only one tunnel could have failed.
			for n, s := range e.state {
				name, st = n, s
			}
		}
		if st != nil {
			st.failures++
			st.lastErr, st.lastDetail, st.lastErrAt = reason, text, time.Now()
		}
	}
	e.mu.Unlock()
	attrs := []any{"group", str("group"), "level", str("level")}
	if name != "" {
		attrs = append(attrs, "tunnel", name)
	}
	if id != "" {
		attrs = append(attrs, "ike_sa", id)
	}
	if reason != "" {
		e.log.Error("ipsec tunnel failed", append([]any{"reason", reason, "charon", text}, attrs...)...)
		return
	}
	e.charLog.Log(e.ctx, slogLevel(str("level")), text, attrs...)
}

// tunnelFor finds the tunnel for a peer address (then for the local
// address, if only one tunnel uses it).
func (e *Engine) tunnelFor(remote, local string) string {
	var byLocal []string
	for name, w := range e.want {
		if w.t.Remote.IsValid() && w.t.Remote.String() == remote {
			return name
		}
		if !w.t.Remote.IsValid() && w.t.Local.String() == local {
			byLocal = append(byLocal, name)
		}
	}
	if len(byLocal) == 1 {
		return byLocal[0]
	}
	return ""
}

// Status returns every tunnel's state, by name.
func (e *Engine) Status() []TunnelStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []TunnelStatus{}
	for _, name := range slices.Sorted(maps.Keys(e.state)) {
		st := e.state[name]
		c := st.total()
		ts := TunnelStatus{Name: name, Backend: e.backend, Device: e.Device(name), Up: st.up,
			IKERekeys: st.ikeRekeys, Rekeys: st.rekeys, BytesIn: c.bytesIn, BytesOut: c.bytesOut,
			PacketsIn: c.pktsIn, PacketsOut: c.pktsOut, Failures: st.failures,
			LastError: st.lastErr, LastDetail: st.lastDetail, LastErrorAt: st.lastErrAt, Since: st.since}
		if st.ike != nil {
			ike := *st.ike
			ts.IKE = &ike
		}
		if st.child != nil {
			ch := *st.child
			ts.Child = &ch
		}
		if w := e.want[name]; w != nil {
			ts.MTU = w.t.MTU
			if e.backend == BackendLibipsec {
				ts.MTU = min(ts.MTU, LibipsecMTU)
			}
			if w.err != nil {
				ts.LastError = w.err.Error()
			}
		}
		out = append(out, ts)
	}
	return out
}

// Restarts is how often charon had to be restarted.
func (e *Engine) Restarts() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.restarts
}
