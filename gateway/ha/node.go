package ha

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// DefaultKeepalived is Debian's keepalived (package keepalived).
const DefaultKeepalived = "/usr/sbin/keepalived"

// Roles as reported by Status and the edgegw_ha_role metric: keepalived's
// VRRP states, lowercased, plus "init" until keepalived first reports and
// "down" while keepalived is not running.
const (
	RoleInit   = "init"
	RoleMaster = "master"
	RoleBackup = "backup"
	RoleFault  = "fault"
	RoleStop   = "stop"
	RoleDown   = "down"
)

var roles = []string{RoleInit, RoleMaster, RoleBackup, RoleFault, RoleStop, RoleDown}

// Options are what a Node needs besides its section.
type Options struct {
	Logger *slog.Logger
	// StateDir is edgegw's state directory; the node keeps its files in
	// StateDir/ha.
	StateDir string
	// Keepalived is the binary; DefaultKeepalived when empty.
	Keepalived string
	// Conntrackd is the binary; DefaultConntrackd when empty.
	Conntrackd string
	// Links are the interfaces the virtual addresses go on.
	Links Links
	// Enter, when set, runs fn where keepalived must start (a test's
	// network namespace); nil starts it in the current namespace.
	Enter func(fn func() error) error
	// ProbeInterval is how often a master (or a node that yielded) looks
	// for a split brain (1 s when zero).
	ProbeInterval time.Duration
	// Backoff is the first restart delay after a daemon exits (1 s when
	// zero); it doubles up to 30 s and resets after a minute of running.
	Backoff time.Duration
}

// Status is the node's view of the pair for /api/v1/status.
type Status struct {
	Role     string    `json:"role"`
	Peer     string    `json:"peer"`
	Priority int       `json:"priority"`
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason,omitempty"`
	Restarts uint64    `json:"keepalived_restarts"`
	// ConntrackdRestarts counts conntrackd exits; ConntrackSyncFailures
	// the client commands that failed while following a role change
	// (sessions may not survive the next failover).
	ConntrackdRestarts    uint64 `json:"conntrackd_restarts"`
	ConntrackSyncFailures uint64 `json:"conntrack_sync_failures"`
	// SplitBrain is true while this node is master and another node
	// answers for the virtual addresses; SplitBrains counts such
	// episodes. Yielded: this node gave the addresses up because of one
	// (keepalived FAULT) and waits for the sync link or for the
	// addresses to fall free.
	SplitBrain     bool       `json:"split_brain"`
	SplitBrains    uint64     `json:"split_brains"`
	LastSplitBrain *time.Time `json:"last_split_brain,omitempty"`
	Yielded        bool       `json:"yielded"`
	// ConntrackSync is conntrackd's sync channel (nil when conntrackd
	// does not answer): packets received from the peer show the sync
	// link carries conntrackd's messages.
	ConntrackSync *SyncStats `json:"conntrack_sync,omitempty"`
	Last          *time.Time `json:"last_transition,omitempty"`
	// ConfigDigest is the digest of the settings both nodes must share
	// (gateway.PairFacts, ha.Digest): equal on the two nodes when their
	// files agree. Only this node's: edgegw does not ask its peer.
	ConfigDigest string `json:"config_digest,omitempty"`
}

// Node supervises this node's keepalived and conntrackd.
type Node struct {
	log   *slog.Logger
	cfg   Config
	opts  Options
	dir   string
	conf  string
	pid   string
	vpid  string
	fifoP string
	fifo  *os.File

	ctConf, ctPid string
	ct            ctPaths
	yieldFile     string // keepalived's track file: 1 makes this node give way
	yields        bool   // this node is the one that gives way in a split brain

	keepalived, conntrackd *daemon
	cancel                 context.CancelFunc // ends followRole
	followed               chan struct{}      // closed when followRole returns
	watched                chan struct{}      // closed when watchSplitBrain returns
	read                   chan struct{}      // closed when the FIFO reader returns
	closed                 bool

	mu         sync.Mutex
	role       string
	since      time.Time
	last       *time.Time
	reason     string
	changed    chan struct{} // closed and replaced at every role change
	ctGen      uint64        // conntrackd starts so far
	ctStarted  chan struct{} // closed and replaced at every conntrackd start
	ctSynced   map[string]uint64
	ctFailures uint64

	splitBrain     bool
	splitBrains    uint64
	lastSplitBrain *time.Time
	splitWith      string
	yielded        bool

	roleDesc, transDesc, restartDesc, ctRestartDesc, ctSyncDesc, ctFailDesc, sbDesc, sbTotalDesc, ctPktDesc *prometheus.Desc
	transitions                                                                                             map[string]uint64 // by new role
}

// New renders keepalived.conf and conntrackd.conf, kills a keepalived or
// conntrackd a crashed edgegw left behind, and starts both under
// supervision.
func New(cfg Config, opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Keepalived == "" {
		opts.Keepalived = DefaultKeepalived
	}
	if opts.Conntrackd == "" {
		opts.Conntrackd = DefaultConntrackd
	}
	if opts.Backoff == 0 {
		opts.Backoff = time.Second
	}
	if opts.ProbeInterval == 0 {
		opts.ProbeInterval = time.Second
	}
	if opts.Enter == nil {
		opts.Enter = func(fn func() error) error { return fn() }
	}
	if _, err := exec.LookPath(opts.Keepalived); err != nil {
		return nil, fmt.Errorf("ha: keepalived not found (Debian package keepalived): %w", err)
	}
	if _, err := exec.LookPath(opts.Conntrackd); err != nil {
		return nil, fmt.Errorf("ha: conntrackd not found (Debian package conntrackd): %w", err)
	}
	dir := filepath.Join(opts.StateDir, "ha")
	n := &Node{log: opts.Logger.With("part", "ha"), cfg: cfg, opts: opts, dir: dir,
		conf: filepath.Join(dir, "keepalived.conf"), pid: filepath.Join(dir, "keepalived.pid"),
		vpid: filepath.Join(dir, "vrrp.pid"), fifoP: filepath.Join(dir, "notify.fifo"),
		ctConf: filepath.Join(dir, "conntrackd.conf"), ctPid: filepath.Join(dir, "conntrackd.pid"),
		yieldFile: filepath.Join(dir, "yield"),
		ct:        ctPaths{Lock: filepath.Join(dir, "conntrackd.lock"), Ctl: filepath.Join(dir, "conntrackd.ctl")},
		followed:  make(chan struct{}), watched: make(chan struct{}), read: make(chan struct{}), role: RoleInit, since: time.Now(), changed: make(chan struct{}),
		ctStarted: make(chan struct{}), ctSynced: map[string]uint64{},
		transitions:   map[string]uint64{},
		roleDesc:      prometheus.NewDesc("edgegw_ha_role", "1 for this node's current HA role (master, backup, fault, …).", []string{"role"}, nil),
		transDesc:     prometheus.NewDesc("edgegw_ha_transitions_total", "HA role changes reported by keepalived, by new role.", []string{"role"}, nil),
		restartDesc:   prometheus.NewDesc("edgegw_ha_keepalived_restarts_total", "Times keepalived exited and was restarted.", nil, nil),
		ctRestartDesc: prometheus.NewDesc("edgegw_ha_conntrackd_restarts_total", "Times conntrackd exited and was restarted.", nil, nil),
		ctSyncDesc:    prometheus.NewDesc("edgegw_ha_conntrack_role_syncs_total", "Times conntrackd was brought in line with a new role (master: commit, flush, resync, bulk send; backup: shorten timers, request resync), by role.", []string{"role"}, nil),
		ctFailDesc:    prometheus.NewDesc("edgegw_ha_conntrack_role_sync_failures_total", "conntrackd client commands that failed while following a role change.", nil, nil),
		sbDesc:        prometheus.NewDesc("edgegw_ha_split_brain", "1 while this node is master and another node answers for the virtual addresses.", nil, nil),
		ctPktDesc:     prometheus.NewDesc("edgegw_ha_conntrack_sync_packets_total", "conntrackd's datagrams on the sync link, by direction (sent, received); absent while conntrackd does not answer.", []string{"direction"}, nil),
		sbTotalDesc:   prometheus.NewDesc("edgegw_ha_split_brains_total", "Split brains this node saw (master while another node answered for the virtual addresses).", nil, nil),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	for _, f := range []struct{ pid, bin string }{{n.pid, opts.Keepalived}, {n.vpid, opts.Keepalived}, {n.ctPid, opts.Conntrackd}} {
		if killed, err := tunnel.KillLeftover(f.pid, f.bin); err != nil {
			return nil, fmt.Errorf("ha: leftover %s: %w", filepath.Base(f.bin), err)
		} else if killed {
			n.log.Warn("killed a daemon left running by a previous edgegw", "pid_file", f.pid)
		}
	}
	var key string
	if cfg.AuthKeyFile != "" {
		b, err := os.ReadFile(cfg.AuthKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ha: auth key: %w", err)
		}
		key = string(b)
	}
	if err := n.setYield(false); err != nil {
		return nil, err
	}
	text, err := Render(cfg, opts.Links, key, n.fifoP, n.yieldFile)
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	if err := os.WriteFile(n.conf, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	var local netip.Addr
	var own []netip.Addr
	if err := opts.Enter(func() (err error) { local, own, err = syncAddrs(cfg.Interface, cfg.Peer); return err }); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	// The node with the higher sync-link address gives way in a split
	// brain: both decide alike without talking.
	n.yields = local.Compare(cfg.Peer) > 0
	ctText, err := RenderConntrackd(cfg, n.ct, local, own)
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	if err := os.WriteFile(n.ctConf, []byte(ctText), 0o600); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	var adverts *advertListener
	if err := opts.Enter(func() (err error) { adverts, err = listenAdverts(cfg.Interface, cfg.Peer); return err }); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	os.Remove(n.fifoP)
	if err := unix.Mkfifo(n.fifoP, 0o600); err != nil {
		adverts.close()
		return nil, fmt.Errorf("ha: notify fifo: %w", err)
	}
	// Read-write, so the FIFO never reports end of file while keepalived
	// restarts, and the open does not block waiting for a writer.
	if n.fifo, err = os.OpenFile(n.fifoP, os.O_RDWR, 0); err != nil {
		adverts.close()
		return nil, fmt.Errorf("ha: notify fifo: %w", err)
	}
	n.conntrackd = newDaemon(daemonSpec{log: n.log, name: "conntrackd", enter: opts.Enter, backoff: opts.Backoff,
		argv: func() []string { return []string{opts.Conntrackd, "-C", n.ctConf} },
		// conntrackd refuses to start while its lock file exists; one is
		// left only by a conntrackd that died (the leftover was killed
		// above, and this supervisor runs one at a time).
		before:  func() { os.Remove(n.ct.Lock) },
		started: n.conntrackdStarted,
		exited: func(error) {
			os.Remove(n.ctPid)
		}})
	n.keepalived = newDaemon(daemonSpec{log: n.log, name: "keepalived", enter: opts.Enter, backoff: opts.Backoff,
		argv: func() []string {
			return []string{opts.Keepalived, "--dont-fork", "--vrrp", "--log-console", "--no-syslog",
				"--use-file", n.conf, "--pid", n.pid, "--vrrp_pid", n.vpid}
		},
		// keepalived writes its own pid files; a stale one would stop it.
		before: func() { os.Remove(n.pid); os.Remove(n.vpid) },
		exited: func(err error) {
			if err == nil {
				n.setRole(RoleDown, "edgegw stopped keepalived")
			} else {
				n.setRole(RoleDown, err.Error())
			}
		}})
	// The Node owns this context: Close cancels it and waits for the
	// goroutine it ends.
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go n.readFIFO()
	go n.conntrackd.run()
	go n.followRole(ctx)
	go n.watchSplitBrain(ctx, adverts)
	// keepalived starts as backup and waits three advert intervals before
	// it makes this node master: conntrackd is up and tracking by then.
	go n.keepalived.run()
	return n, nil
}

// conntrackdStarted records conntrackd's pid for a later edgegw's leftover
// check and wakes followRole.
func (n *Node) conntrackdStarted(pid int) {
	if err := os.WriteFile(n.ctPid, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		n.log.Warn("conntrackd pid file", "err", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ctGen++
	close(n.ctStarted)
	n.ctStarted = make(chan struct{})
}

// readFIFO follows keepalived's state reports until Close closes the FIFO.
func (n *Node) readFIFO() {
	defer close(n.read)
	sc := bufio.NewScanner(n.fifo)
	for sc.Scan() {
		kind, name, state, ok := parseNotify(sc.Text())
		if !ok {
			n.log.Warn("unreadable keepalived notification", "line", sc.Text())
			continue
		}
		if kind == "INSTANCE" && name == instance {
			n.setRole(strings.ToLower(state), "keepalived: "+sc.Text())
		}
	}
}

// parseNotify splits a notify FIFO line: `INSTANCE "name" MASTER 100`.
func parseNotify(line string) (kind, name, state string, ok bool) {
	kind, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok || !strings.HasPrefix(rest, `"`) {
		return "", "", "", false
	}
	name, rest, ok = strings.Cut(rest[1:], `"`)
	if !ok {
		return "", "", "", false
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", "", "", false
	}
	switch f[0] {
	case "MASTER", "BACKUP", "FAULT", "STOP":
		return kind, name, f[0], true
	}
	return "", "", "", false
}

func (n *Node) setRole(role, reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if role == n.role {
		return
	}
	n.log.Info("HA role changed", "from", n.role, "to", role, "reason", reason)
	now := time.Now()
	n.role, n.since, n.reason, n.last = role, now, reason, &now
	n.transitions[role]++
	close(n.changed)
	n.changed = make(chan struct{})
}

// Role returns the current role and a channel closed at the next change.
func (n *Node) Role() (string, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.role, n.changed
}

// Status returns the node's view of the pair. It asks conntrackd for its
// counters (a few milliseconds).
func (n *Node) Status() Status {
	var sync *SyncStats
	if s, err := n.Sync(); err == nil {
		sync = &s
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	s := Status{Role: n.role, Peer: n.cfg.Peer.String(), Priority: n.cfg.Priority, Since: n.since,
		Reason: n.reason, Restarts: n.keepalived.Restarts(), ConntrackdRestarts: n.conntrackd.Restarts(),
		ConntrackSyncFailures: n.ctFailures, SplitBrain: n.splitBrain, SplitBrains: n.splitBrains, Yielded: n.yielded,
		ConntrackSync: sync}
	if n.lastSplitBrain != nil {
		t := *n.lastSplitBrain
		s.LastSplitBrain = &t
	}
	if n.last != nil {
		t := *n.last
		s.Last = &t
	}
	return s
}

// Describe implements prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) {
	ch <- n.roleDesc
	ch <- n.transDesc
	ch <- n.restartDesc
	ch <- n.ctRestartDesc
	ch <- n.ctSyncDesc
	ch <- n.ctFailDesc
	ch <- n.sbDesc
	ch <- n.sbTotalDesc
	ch <- n.ctPktDesc
}

// Collect implements prometheus.Collector. It asks conntrackd for its
// counters (a few milliseconds).
func (n *Node) Collect(ch chan<- prometheus.Metric) {
	if s, err := n.Sync(); err == nil {
		ch <- prometheus.MustNewConstMetric(n.ctPktDesc, prometheus.CounterValue, float64(s.PacketsSent), "sent")
		ch <- prometheus.MustNewConstMetric(n.ctPktDesc, prometheus.CounterValue, float64(s.PacketsReceived), "received")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range roles {
		v := 0.0
		if r == n.role {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(n.roleDesc, prometheus.GaugeValue, v, r)
		ch <- prometheus.MustNewConstMetric(n.transDesc, prometheus.CounterValue, float64(n.transitions[r]), r)
	}
	for _, r := range []string{RoleMaster, RoleBackup, RoleFault} {
		ch <- prometheus.MustNewConstMetric(n.ctSyncDesc, prometheus.CounterValue, float64(n.ctSynced[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(n.restartDesc, prometheus.CounterValue, float64(n.keepalived.Restarts()))
	ch <- prometheus.MustNewConstMetric(n.ctRestartDesc, prometheus.CounterValue, float64(n.conntrackd.Restarts()))
	ch <- prometheus.MustNewConstMetric(n.ctFailDesc, prometheus.CounterValue, float64(n.ctFailures))
	sb := 0.0
	if n.splitBrain {
		sb = 1
	}
	ch <- prometheus.MustNewConstMetric(n.sbDesc, prometheus.GaugeValue, sb)
	ch <- prometheus.MustNewConstMetric(n.sbTotalDesc, prometheus.CounterValue, float64(n.splitBrains))
}

// Close stops keepalived (the addresses go to the peer), then conntrackd
// (after keepalived, so the peer hears of this node's sessions to the
// last), and removes the node's runtime files. It is idempotent; it must
// not run concurrently with itself.
func (n *Node) Close() error {
	if n.closed {
		return nil
	}
	n.closed = true
	// keepalived first, so its last reports are read; then a deadline
	// ends the reader once the FIFO is drained.
	n.keepalived.close()
	n.fifo.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	<-n.read
	n.cancel()
	<-n.followed
	<-n.watched
	n.conntrackd.close()
	err := n.fifo.Close()
	for _, f := range []string{n.fifoP, n.pid, n.vpid, n.ctPid, n.ct.Ctl, n.ct.Lock, n.yieldFile} {
		os.Remove(f)
	}
	return err
}
