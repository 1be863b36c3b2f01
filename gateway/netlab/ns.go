//go:build linux

package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NS is a network namespace of a [Lab]. Its methods are safe for concurrent
// use.
type NS struct {
	lab  *Lab
	name string
}

// Name returns the full namespace name, usable with `ip netns exec` and
// `ip -n`.
func (n *NS) Name() string { return n.name }

// String returns the full namespace name.
func (n *NS) String() string { return n.name }

// IP runs `ip -n <ns> args...` and returns its output; it is the escape
// hatch for plumbing that has no method here, for example
// n.IP("link", "add", "wg0", "type", "wireguard").
func (n *NS) IP(args ...string) ([]byte, error) {
	return runIP(append([]string{"-n", n.name}, args...)...)
}

// AddAddr adds the address cidr (for example "10.0.0.1/24" or
// "fd00::1/64") to interface ifname. IPv6 addresses skip duplicate address
// detection so they are usable at once.
func (n *NS) AddAddr(ifname, cidr string) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return fmt.Errorf("netlab: add address to %s in %s: %w", ifname, n.name, err)
	}
	args := []string{"addr", "add", p.String(), "dev", ifname}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	_, err = n.IP(args...)
	return err
}

// Route installs (or replaces) the route to dst, a prefix or "default".
// via is a gateway address or, if it does not parse as an address, the
// name of the outgoing interface.
func (n *NS) Route(dst, via string) error {
	args := []string{"route", "replace", dst}
	if a, err := netip.ParseAddr(via); err == nil {
		if a.Is6() {
			args = append([]string{"-6"}, args...)
		}
		args = append(args, "via", a.String())
	} else {
		args = append(args, "dev", via)
	}
	_, err := n.IP(args...)
	return err
}

// Sysctl sets a sysctl of the namespace. key is in dotted form
// ("net.ipv4.ip_forward") or, for keys with dots in interface names, in
// slash form ("net/ipv4/conf/eth0.100/rp_filter").
func (n *NS) Sysctl(key, value string) error {
	path := key
	if !strings.Contains(key, "/") {
		path = strings.ReplaceAll(key, ".", "/")
	}
	if strings.Contains(path, "..") || strings.HasPrefix(path, "/") {
		return fmt.Errorf("netlab: invalid sysctl key %q", key)
	}
	return n.Do(func() error {
		if err := os.WriteFile("/proc/sys/"+path, []byte(value), 0); err != nil {
			return fmt.Errorf("netlab: sysctl %s=%s in %s: %w", key, value, n.name, err)
		}
		return nil
	})
}

// Command returns an unstarted command that runs name with args inside the
// namespace through `ip netns exec`, in its own process group. Set Env, Dir
// or Stdin on it as needed, then run it yourself or hand it to
// [NS.StartCmd]. Its Path is that of ip.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", n.execArgs(name, args)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

func (n *NS) execArgs(name string, args []string) []string {
	return append([]string{"netns", "exec", n.name, name}, args...)
}

// Exec runs name with args inside the namespace to completion and returns
// its combined output. The error names the command and carries the output.
// Cancelling ctx kills the command's process group.
func (n *NS) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", n.execArgs(name, args)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // grandchildren holding the output pipe
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return out.Bytes(), fmt.Errorf("ip netns exec %s %s: %w: %s",
			n.name, strings.Join(append([]string{name}, args...), " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return out.Bytes(), nil
}

// Do runs fn on an OS thread switched into the namespace and returns its
// error. fn runs on a fresh goroutine locked to that thread; Do waits for
// it. Afterwards the thread is switched back and unlocked, or, if switching
// back fails, left locked so that the runtime discards it. A panic in fn is
// re-raised in the caller; fn must not call runtime.Goexit (t.FailNow).
//
// Only fn's own goroutine is in the namespace: goroutines it starts run on
// other threads, in the process's namespace. Sockets and processes created
// by fn keep the namespace after Do returns.
func (n *NS) Do(fn func() error) error {
	type result struct {
		err      error
		done     bool // fn returned
		panicked bool
		panicVal any
	}
	ch := make(chan result, 1)
	go func() {
		var res result
		defer func() {
			if !res.done {
				res.panicVal = recover()
				res.panicked = res.panicVal != nil
			}
			ch <- res
		}()
		res.err = n.doLocked(fn)
		res.done = true
	}()
	res := <-ch
	switch {
	case res.panicked:
		panic(res.panicVal)
	case !res.done:
		return fmt.Errorf("netlab: function run in %s called runtime.Goexit", n.name)
	}
	return res.err
}

func (n *NS) doLocked(fn func() error) (err error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: open current network namespace: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(netnsDir+"/"+n.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: open network namespace %s: %w", n.name, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: enter network namespace %s: %w", n.name, err)
	}
	defer func() {
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			// Leave the thread locked: when this goroutine exits the
			// runtime terminates the thread instead of reusing it.
			err = errors.Join(err, fmt.Errorf("netlab: leave network namespace %s: %w", n.name, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// DialContext connects to addr like net.Dialer.DialContext, with the socket
// created inside the namespace. Use an IP address in addr: host names are
// resolved with the process's resolver configuration.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		// Without fast fallback the dial stays on this goroutine, and so
		// the socket is created on the thread inside the namespace.
		d := net.Dialer{FallbackDelay: -1}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen is net.Listen with the socket created inside the namespace. The
// listener may be used from any goroutine; the caller closes it.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket is net.ListenPacket with the socket created inside the
// namespace. The caller closes it.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}
