package ha

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemonSpec says how to run one child process.
type daemonSpec struct {
	log     *slog.Logger
	name    string
	argv    func() []string // the command line, built at every start
	enter   func(fn func() error) error
	backoff time.Duration
	// before runs before every start (stale pid and lock files go).
	before func()
	// started runs after every successful start with the child's pid.
	started func(pid int)
	// exited runs when the child is gone: err says why (nil when stop
	// ended it).
	exited func(err error)
}

// daemon supervises one child process (keepalived, conntrackd): it starts
// it, restarts it with backoff when it exits, and stops it on close. The
// Node owns it; run is its goroutine, started once.
type daemon struct {
	daemonSpec
	stop chan struct{}
	done chan struct{} // closed when run returns

	mu       sync.Mutex
	restarts uint64
}

func newDaemon(s daemonSpec) *daemon {
	if s.backoff == 0 {
		s.backoff = time.Second
	}
	return &daemon{daemonSpec: s, stop: make(chan struct{}), done: make(chan struct{})}
}

// run keeps the child running until stop closes; backoff doubles up to
// 30 s and resets after a minute of running.
func (d *daemon) run() {
	defer close(d.done)
	backoff := d.backoff
	for {
		start := time.Now()
		if d.before != nil {
			d.before()
		}
		p, err := d.start()
		if err == nil {
			if d.started != nil {
				d.started(p.cmd.Process.Pid)
			}
			select {
			case <-d.stop:
				if err := p.stop(5 * time.Second); err != nil {
					d.log.Error("stop "+d.name, "err", err)
				}
				if d.exited != nil {
					d.exited(nil)
				}
				return
			case <-p.done:
				err = fmt.Errorf("%s exited: %v", d.name, p.err)
			}
		}
		if d.exited != nil {
			d.exited(err)
		}
		if time.Since(start) > time.Minute {
			backoff = d.backoff
		}
		d.log.Error(d.name+" is not running; restarting", "err", err, "in", backoff)
		d.mu.Lock()
		d.restarts++
		d.mu.Unlock()
		t := time.NewTimer(backoff)
		select {
		case <-d.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Restarts is how often the child exited and was started again.
func (d *daemon) Restarts() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.restarts
}

// close stops the child and waits for run to return. Idempotent.
func (d *daemon) close() {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
}

// proc is one running child.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
}

func (d *daemon) start() (*proc, error) {
	argv := d.argv()
	cmd := exec.Command(argv[0], argv[1:]...)
	// If edgegw dies without closing, the child goes with it: keepalived
	// drops the addresses, so the peer takes over.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := d.enter(cmd.Start); err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{name: d.name, cmd: cmd, done: make(chan struct{})}
	go func() { // ends when the pipe closes, after Wait
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			d.log.Debug(d.name, "line", sc.Text())
		}
	}()
	go func() { // ends when the child exits
		p.err = cmd.Wait()
		w.Close()
		close(p.done)
	}()
	return p, nil
}

// stop asks the child to leave (keepalived drops the virtual addresses)
// and kills its process group after grace.
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
	return fmt.Errorf("%s (pid %d) did not stop within %v and was killed", p.name, p.cmd.Process.Pid, grace)
}
