package ha

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	// Links are the interfaces the virtual addresses go on.
	Links Links
	// Enter, when set, runs fn where keepalived must start (a test's
	// network namespace); nil starts it in the current namespace.
	Enter func(fn func() error) error
	// Backoff is the first restart delay after keepalived exits (1 s when
	// zero); it doubles up to 30 s and resets after a minute of running.
	Backoff time.Duration
}

// Status is the node's view of the pair for /api/v1/status.
type Status struct {
	Role     string     `json:"role"`
	Peer     string     `json:"peer"`
	Priority int        `json:"priority"`
	Since    time.Time  `json:"since"`
	Reason   string     `json:"reason,omitempty"`
	Restarts uint64     `json:"keepalived_restarts"`
	Last     *time.Time `json:"last_transition,omitempty"`
}

// Node supervises this node's keepalived.
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

	stop       chan struct{}
	supervised chan struct{} // closed when the supervisor returns
	read       chan struct{} // closed when the FIFO reader returns

	mu       sync.Mutex
	role     string
	since    time.Time
	last     *time.Time
	reason   string
	restarts uint64
	changed  chan struct{} // closed and replaced at every role change

	roleDesc, transDesc, restartDesc *prometheus.Desc
	transitions                      map[string]uint64 // by new role
}

// New renders keepalived.conf, kills a keepalived a crashed edgegw left
// behind, and starts keepalived under supervision.
func New(cfg Config, opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Keepalived == "" {
		opts.Keepalived = DefaultKeepalived
	}
	if opts.Backoff == 0 {
		opts.Backoff = time.Second
	}
	if opts.Enter == nil {
		opts.Enter = func(fn func() error) error { return fn() }
	}
	if _, err := exec.LookPath(opts.Keepalived); err != nil {
		return nil, fmt.Errorf("ha: keepalived not found (Debian package keepalived): %w", err)
	}
	dir := filepath.Join(opts.StateDir, "ha")
	n := &Node{log: opts.Logger.With("part", "ha"), cfg: cfg, opts: opts, dir: dir,
		conf: filepath.Join(dir, "keepalived.conf"), pid: filepath.Join(dir, "keepalived.pid"),
		vpid: filepath.Join(dir, "vrrp.pid"), fifoP: filepath.Join(dir, "notify.fifo"),
		stop: make(chan struct{}), supervised: make(chan struct{}), read: make(chan struct{}), role: RoleInit, since: time.Now(), changed: make(chan struct{}),
		transitions: map[string]uint64{},
		roleDesc:    prometheus.NewDesc("edgegw_ha_role", "1 for this node's current HA role (master, backup, fault, …).", []string{"role"}, nil),
		transDesc:   prometheus.NewDesc("edgegw_ha_transitions_total", "HA role changes reported by keepalived, by new role.", []string{"role"}, nil),
		restartDesc: prometheus.NewDesc("edgegw_ha_keepalived_restarts_total", "Times keepalived exited and was restarted.", nil, nil),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	for _, f := range []string{n.pid, n.vpid} {
		if killed, err := tunnel.KillLeftover(f, opts.Keepalived); err != nil {
			return nil, fmt.Errorf("ha: leftover keepalived: %w", err)
		} else if killed {
			n.log.Warn("killed a keepalived left running by a previous edgegw", "pid_file", f)
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
	text, err := Render(cfg, opts.Links, key, n.fifoP)
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	if err := os.WriteFile(n.conf, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	os.Remove(n.fifoP)
	if err := unix.Mkfifo(n.fifoP, 0o600); err != nil {
		return nil, fmt.Errorf("ha: notify fifo: %w", err)
	}
	// Read-write, so the FIFO never reports end of file while keepalived
	// restarts, and the open does not block waiting for a writer.
	if n.fifo, err = os.OpenFile(n.fifoP, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("ha: notify fifo: %w", err)
	}
	go n.readFIFO()
	go n.supervise()
	return n, nil
}

// supervise runs keepalived until Close, restarting it with backoff.
func (n *Node) supervise() {
	defer close(n.supervised)
	backoff := n.opts.Backoff
	for {
		start := time.Now()
		p, err := n.start()
		if err == nil {
			select {
			case <-n.stop:
				if err := p.stop(5 * time.Second); err != nil {
					n.log.Error("stop keepalived", "err", err)
				}
				n.setRole(RoleDown, "edgegw stopped keepalived")
				return
			case <-p.done:
				err = fmt.Errorf("keepalived exited: %v", p.err)
			}
		}
		n.setRole(RoleDown, err.Error())
		if time.Since(start) > time.Minute {
			backoff = n.opts.Backoff
		}
		n.log.Error("keepalived is not running; restarting", "err", err, "in", backoff)
		n.mu.Lock()
		n.restarts++
		n.mu.Unlock()
		t := time.NewTimer(backoff)
		select {
		case <-n.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// proc is one running keepalived.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
}

func (n *Node) start() (*proc, error) {
	// keepalived writes its own pid files; a stale one would stop it.
	os.Remove(n.pid)
	os.Remove(n.vpid)
	cmd := exec.Command(n.opts.Keepalived, "--dont-fork", "--vrrp", "--log-console", "--no-syslog",
		"--use-file", n.conf, "--pid", n.pid, "--vrrp_pid", n.vpid)
	// If edgegw dies without closing, keepalived goes with it and drops
	// the addresses, so the peer takes over.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := n.opts.Enter(cmd.Start); err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s: %w", n.opts.Keepalived, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { // ends when the pipe closes, after Wait
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			n.log.Debug("keepalived", "line", sc.Text())
		}
	}()
	go func() { // ends when keepalived exits
		p.err = cmd.Wait()
		w.Close()
		close(p.done)
	}()
	return p, nil
}

// stop asks keepalived to leave (it drops the virtual addresses) and kills
// its process group after grace.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	unix.Kill(-p.cmd.Process.Pid, unix.SIGKILL)
	<-p.done
	return fmt.Errorf("keepalived (pid %d) did not stop within %v and was killed", p.cmd.Process.Pid, grace)
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

// Status returns the node's view of the pair.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := Status{Role: n.role, Peer: n.cfg.Peer.String(), Priority: n.cfg.Priority, Since: n.since,
		Reason: n.reason, Restarts: n.restarts}
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
}

// Collect implements prometheus.Collector.
func (n *Node) Collect(ch chan<- prometheus.Metric) {
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
	ch <- prometheus.MustNewConstMetric(n.restartDesc, prometheus.CounterValue, float64(n.restarts))
}

// Close stops keepalived (the addresses go to the peer), and removes the
// node's runtime files. It is idempotent.
func (n *Node) Close() error {
	select {
	case <-n.stop:
		return nil
	default:
	}
	close(n.stop)
	// The supervisor first, so keepalived's last reports are read; then
	// a deadline ends the reader once the FIFO is drained.
	<-n.supervised
	n.fifo.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	<-n.read
	err := n.fifo.Close()
	for _, f := range []string{n.fifoP, n.pid, n.vpid} {
		os.Remove(f)
	}
	return err
}
