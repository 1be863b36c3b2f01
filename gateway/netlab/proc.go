//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// StopGrace is how long [Proc.Stop] and [Lab.Close] wait after SIGTERM
// before they send SIGKILL.
const StopGrace = 5 * time.Second

// Proc is a background process started in a namespace by [NS.Start] or
// [NS.StartCmd]. The lab stops it on [Lab.Close].
type Proc struct {
	cmd  *exec.Cmd
	desc string
	out  testkit.Buffer

	done    chan struct{} // closed when the process has been waited for
	waitErr error         // valid after done is closed
}

// Start runs name with args in the background inside the namespace,
// capturing its combined output (see [Proc.Output]). To set the
// environment, directory or stdin, use [NS.Command] and [NS.StartCmd].
func (n *NS) Start(name string, args ...string) (*Proc, error) {
	return n.StartCmd(n.Command(name, args...))
}

// StartCmd starts cmd, which must come from [NS.Command] of this namespace
// and not have been started. Output goes to [Proc.Output] unless the caller
// set cmd.Stdout or cmd.Stderr.
func (n *NS) StartCmd(cmd *exec.Cmd) (*Proc, error) {
	if len(cmd.Args) < 5 || cmd.Args[1] != "netns" || cmd.Args[3] != n.name {
		return nil, fmt.Errorf("netlab: StartCmd in %s: command does not come from NS.Command", n.name)
	}
	p := &Proc{cmd: cmd, desc: strings.Join(cmd.Args[4:], " "), done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &p.out
	}
	cmd.WaitDelay = time.Second // grandchildren holding the output pipe

	l := n.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("netlab: start %q in %s: %w", p.desc, n.name, err)
	}
	l.procs = append(l.procs, p)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id. `ip netns exec` execs the command, so this is
// the command's own pid, and the leader of its process group.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output returns the output captured so far.
func (p *Proc) Output() string { return p.out.String() }

// Done returns a channel that is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error, as
// exec.Cmd.Wait does. It may be called any number of times.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// Stop sends SIGTERM to the process group, then SIGKILL if the process has
// not exited within [StopGrace], and waits for it. It returns the exit
// error; a process that already exited just returns it.
func (p *Proc) Stop() error {
	_, err := p.StopWithin(StopGrace)
	return err
}

// StopWithin is [Proc.Stop] with its own grace period; killed says
// whether the process had to be sent SIGKILL, which a caller checking a
// clean shutdown reports (a killed process cleans up nothing).
func (p *Proc) StopWithin(grace time.Duration) (killed bool, err error) {
	select {
	case <-p.done:
		return false, p.waitErr
	default:
	}
	_ = killGroup(p.Pid(), syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		killed = true
		_ = killGroup(p.Pid(), syscall.SIGKILL)
	}
	return killed, p.Wait()
}

// Kill sends SIGKILL to the process group and waits for the process.
func (p *Proc) Kill() error {
	select {
	case <-p.done:
	default:
		_ = killGroup(p.Pid(), syscall.SIGKILL)
	}
	return p.Wait()
}

// WaitOutput waits until the captured output contains substr. It fails if
// ctx ends or the process exits first; the error quotes the output.
func (p *Proc) WaitOutput(ctx context.Context, substr string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Output(), substr) {
			return nil
		}
		var why error
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
			why = ctx.Err()
		case <-p.done:
			if strings.Contains(p.Output(), substr) {
				return nil
			}
			why = errors.New("process exited")
			if p.waitErr != nil {
				why = fmt.Errorf("process exited: %w", p.waitErr)
			}
		}
		return fmt.Errorf("netlab: waiting for %q in output of %q: %w; output:\n%s", substr, p.desc, why, p.Output())
	}
}

// killGroup signals the process group led by pid.
func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
