//go:build linux

package netlab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// DefaultPrefix is the lab prefix used by [NewT].
const DefaultPrefix = "eg"

const (
	netnsDir  = "/run/netns"  // where `ip netns` keeps named namespaces
	markerDir = "/run/netlab" // one owner marker per lab, see owner.go
	idHexLen  = 6             // random hex digits after the prefix
)

var (
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,15}$`)
)

// ErrClosed is returned by methods of a [Lab] after [Lab.Close].
var ErrClosed = errors.New("netlab: lab closed")

// Lab is a set of network namespaces owned by one test or demo, together
// with the processes and servers started in them. Its methods are safe for
// concurrent use.
type Lab struct {
	id string

	mu      sync.Mutex
	closed  bool
	nss     []*NS
	procs   []*Proc
	servers []*HTTPServer

	closeOnce sync.Once
	closeErr  error
}

// New creates an empty lab whose id is prefix followed by six random hex
// digits. prefix is 1 to 8 characters [a-z0-9], starting with a letter.
// It records the calling process as the lab's owner (see [Sweep]).
func New(prefix string) (*Lab, error) {
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("netlab: invalid prefix %q: want 1-8 of [a-z0-9], starting with a letter", prefix)
	}
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	for range 16 {
		var b [idHexLen / 2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("netlab: %w", err)
		}
		id := prefix + hex.EncodeToString(b[:])
		err := writeOwner(id)
		if errors.Is(err, fs.ErrExist) {
			continue // another lab has this id; draw again
		}
		if err != nil {
			return nil, fmt.Errorf("netlab: %w", err)
		}
		return &Lab{id: id}, nil
	}
	return nil, fmt.Errorf("netlab: no free lab id with prefix %q", prefix)
}

// NewT returns a lab for a test. It fails the test (skips it in -short
// mode) unless the process runs as root with CAP_SYS_ADMIN and iproute2's
// `ip` is on PATH, first sweeps
// leftovers of dead test processes ([Sweep] of [DefaultPrefix]), fails the
// test if the lab cannot be created, and registers [Lab.Close] with
// t.Cleanup, reporting Close errors as test errors.
func NewT(t testing.TB) *Lab {
	t.Helper()
	if reason := unsupported(); reason != "" {
		testkit.Unavailable(t, "netlab: "+reason)
	}
	if err := Sweep(DefaultPrefix); err != nil {
		t.Logf("netlab: sweeping leftovers: %v", err)
	}
	l, err := New(DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netlab: close lab %s: %v", l.id, err)
		}
	})
	return l
}

// unsupported returns why namespaces cannot be built here, or "".
func unsupported() string {
	if os.Geteuid() != 0 {
		return "needs root to create network namespaces (run the test as root)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs the `ip` command of iproute2 (apt-get install iproute2): " + err.Error()
	}
	if !hasCapSysAdmin() {
		return "needs CAP_SYS_ADMIN to create network namespaces (unprivileged container?)"
	}
	return ""
}

// hasCapSysAdmin reports whether CAP_SYS_ADMIN is in the effective set.
func hasCapSysAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true // cannot tell; let `ip netns add` report it
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || caps&(1<<21) != 0
		}
	}
	return true
}

// ID returns the lab's unique id, the prefix of all its namespace names.
func (l *Lab) ID() string { return l.id }

// NS creates the namespace "<id>-<name>" and brings its loopback up.
// name is 1 to 16 characters [a-z0-9_] and must be unique in the lab.
func (l *Lab) NS(name string) (*NS, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("netlab: invalid namespace name %q: want 1-16 of [a-z0-9_]", name)
	}
	full := l.id + "-" + name
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	for _, n := range l.nss {
		if n.name == full {
			return nil, fmt.Errorf("netlab: namespace %q already exists in lab %s", name, l.id)
		}
	}
	if _, err := runIP("netns", "add", full); err != nil {
		return nil, err
	}
	n := &NS{lab: l, name: full}
	if _, err := n.IP("link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, deleteNS(full))
	}
	// Addresses usable at once: a lab's links are all its own, so there
	// is no duplicate to detect, and an IPv6 address leaving the
	// tentative state a second after its link came up is an address
	// change a browser in the namespace answers by aborting the page it
	// is loading (Chromium's net::ERR_NETWORK_CHANGED).
	for _, conf := range []string{"all", "default"} {
		if err := n.Sysctl("net.ipv6.conf."+conf+".accept_dad", "0"); err != nil {
			return nil, errors.Join(err, deleteNS(full))
		}
	}
	l.nss = append(l.nss, n)
	return n, nil
}

// Link creates a veth pair with end aIf in a and end bIf in b, assigns the
// addresses (CIDR notation such as "10.0.0.1/24"; "" for none) and brings
// both ends up. a and b may be the same namespace. On error nothing is left
// behind.
func (l *Lab) Link(a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) error {
	for _, p := range []string{aAddr, bAddr} {
		if p == "" {
			continue
		}
		if _, err := netip.ParsePrefix(p); err != nil {
			return fmt.Errorf("netlab: link %s:%s-%s:%s: %w", a.name, aIf, b.name, bIf, err)
		}
	}
	if _, err := a.IP("link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.name); err != nil {
		return err
	}
	err := func() error {
		for _, end := range []struct {
			ns       *NS
			ifc, pfx string
		}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
			if end.pfx != "" {
				if err := end.ns.AddAddr(end.ifc, end.pfx); err != nil {
					return err
				}
			}
			if _, err := end.ns.IP("link", "set", end.ifc, "up"); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		if _, derr := a.IP("link", "del", aIf); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return err
}

// Close stops everything started through the lab and deletes its
// namespaces: it closes servers from [NS.ServeHTTP], stops processes from
// [NS.Start] (SIGTERM to the process group, SIGKILL after [StopGrace]),
// kills any other process left in the lab's namespaces, deletes the
// namespaces and removes the owner marker. It is idempotent: later calls
// return the first call's result.
//
// Sockets from [NS.DialContext], [NS.Listen] and [NS.ListenPacket] belong to
// the caller; a namespace lingers in the kernel, unnamed, until they are
// closed.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		servers, procs, nss := l.servers, l.procs, l.nss
		l.mu.Unlock()

		var errs []error
		for _, s := range servers {
			if err := s.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(func() { _ = p.Stop() }) // exit status of a stopped process is not an error
		}
		wg.Wait()
		for _, n := range nss {
			if err := deleteNS(n.name); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(markerPath(l.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netlab: %w", err))
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// deleteNS kills the processes left in namespace name and deletes it.
// A namespace that no longer exists is not an error.
func deleteNS(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	killNSPids(name)
	if _, err := runIP("netns", "del", name); err != nil {
		if _, serr := os.Stat(netnsDir + "/" + name); errors.Is(serr, fs.ErrNotExist) {
			return nil // deleted concurrently, e.g. by Sweep
		}
		return err
	}
	return nil
}

// killNSPids sends SIGKILL to every process in namespace name except us.
func killNSPids(name string) {
	out, err := runIP("netns", "pids", name)
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// runIP runs `ip args...` in the current namespace. The error names the
// command and carries its output.
func runIP(args ...string) ([]byte, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}
