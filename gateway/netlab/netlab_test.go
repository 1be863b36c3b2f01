//go:build linux

package netlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// requireLab fails the test (skips it in -short mode) where netlab
// cannot work.
func requireLab(t *testing.T) {
	t.Helper()
	if reason := unsupported(); reason != "" {
		testkit.Unavailable(t, "netlab: "+reason)
	}
}

// requirePing fails the test when ping is not installed.
func requirePing(t *testing.T) {
	t.Helper()
	testkit.NeedTool(t, "ping", "iputils-ping")
}

// newLab is New plus a cleanup, for tests that close the lab themselves.
func newLab(t *testing.T, prefix string) *Lab {
	t.Helper()
	requireLab(t)
	l, err := New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func ping(t *testing.T, from *NS, to string) error {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := from.Exec(ctx, "ping", "-n", "-c", "1", "-W", "1", to)
	return err
}

// netnsList returns the output of `ip netns list`.
func netnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

// pidGone reports whether pid has exited (gone or a zombie).
func pidGone(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "Z" {
		return nil
	}
	return fmt.Errorf("pid %d still running", pid)
}

func TestRemoteAccess(t *testing.T) {
	requirePing(t)
	lab := NewT(t)
	ra, err := lab.RemoteAccess()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ra.GW.Name(), lab.ID()+"-gw"; got != want {
		t.Errorf("gw name = %q, want %q", got, want)
	}
	Eventually(t, 10*time.Second, "ping lan from gw", func() error {
		return ping(t, ra.GW, ra.ServerAddr.String())
	})
	Eventually(t, 10*time.Second, "ping user from gw via wan", func() error {
		return ping(t, ra.GW, ra.UserAddr.String())
	})
	// The internet has no route to the office LAN, in either direction:
	// only a tunnel (or NAT on gw) connects the two.
	if err := ping(t, ra.User, ra.ServerAddr.String()); err == nil {
		t.Errorf("user reached the office server %v without a tunnel", ra.ServerAddr)
	}
	if err := ping(t, ra.LAN, ra.UserAddr.String()); err == nil {
		t.Errorf("office server reached the user %v without a tunnel", ra.UserAddr)
	}
	out, err := ra.GW.Exec(t.Context(), "cat", "/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("gw ip_forward = %q, %v; want 1", out, err)
	}
}

func TestBranch(t *testing.T) {
	requirePing(t)
	lab := NewT(t)
	b, err := lab.Branch()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what     string
		from     *NS
		to       string
		reaching bool
	}{
		{"lan to its gateway", b.LAN, "10.10.0.1", true},
		{"gw to the branch router over the WAN", b.GW, "198.51.100.20", true},
		{"blan to its branch router", b.BLAN, "10.20.0.1", true},
		{"the branch router to the gateway's public address", b.BR, "203.0.113.10", true},
		// The WAN routes no private prefix: only a tunnel joins the LANs.
		{"lan to blan without a tunnel", b.LAN, "10.20.0.2", false},
		{"blan to lan without a tunnel", b.BLAN, "10.10.0.2", false},
	} {
		t.Run(c.what, func(t *testing.T) {
			if !c.reaching {
				if err := ping(t, c.from, c.to); err == nil {
					t.Errorf("%s reached %s", c.from.Name(), c.to)
				}
				return
			}
			Eventually(t, 10*time.Second, "ping "+c.to, func() error { return ping(t, c.from, c.to) })
		})
	}
	for _, ns := range []*NS{b.GW, b.WAN, b.BR} {
		for key, want := range map[string]string{"ip_forward": "1", "conf/all/rp_filter": "0"} {
			out, err := ns.Exec(t.Context(), "cat", "/proc/sys/net/ipv4/"+key)
			if err != nil || strings.TrimSpace(string(out)) != want {
				t.Errorf("%s %s = %q, %v; want %s", ns.Name(), key, out, err, want)
			}
		}
	}
}

func TestHTTPInNamespace(t *testing.T) {
	lab := NewT(t)
	ra, err := lab.RemoteAccess()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ra.LAN.ServeHTTP(ra.ServerAddr.String()+":0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr.Addr() != ra.ServerAddr || srv.Addr.Port() == 0 {
		t.Fatalf("server bound to %v, want %v:port", srv.Addr, ra.ServerAddr)
	}

	get := func(from *NS) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		if err != nil {
			return "", err
		}
		resp, err := from.HTTPClient().Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	var body string
	Eventually(t, 10*time.Second, "GET from gw", func() error {
		var err error
		body, err = get(ra.GW)
		return err
	})
	if want := "hello " + ra.GWLANAddr.String() + ":"; !strings.HasPrefix(body, want) {
		t.Errorf("body = %q, want prefix %q", body, want)
	}
	if _, err := get(ra.User); err == nil {
		t.Errorf("GET from user reached the office server without a tunnel")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("close server: %v", err)
	}
	if _, err := get(ra.GW); err == nil {
		t.Errorf("GET succeeded after server Close")
	}
}

func TestListenPacket(t *testing.T) {
	lab := NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "eth0", "fd00::1/64", b, "eth0", "fd00::2/64"); err != nil {
		t.Fatal(err)
	}
	pc, err := b.ListenPacket("udp", "[fd00::2]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := a.DialContext(t.Context(), "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	Eventually(t, 10*time.Second, "UDP a -> b", func() error {
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 16)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "ping" || !strings.HasPrefix(from.String(), "[fd00::1]:") {
			return fmt.Errorf("got %q from %v", buf[:n], from)
		}
		return nil
	})
}

func TestDo(t *testing.T) {
	lab := NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	hostNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	hostFwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}

	if err := a.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns   *NS
		want string
	}{{a, "1"}, {b, "0"}} {
		err := tc.ns.Do(func() error {
			got, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(got)) != tc.want {
				return fmt.Errorf("ip_forward = %q, want %q", got, tc.want)
			}
			var st, want syscall.Stat_t
			if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
				return err
			}
			if err := syscall.Stat(filepath.Join(netnsDir, tc.ns.Name()), &want); err != nil {
				return err
			}
			if st.Ino != want.Ino {
				return fmt.Errorf("thread in namespace inode %d, want %d", st.Ino, want.Ino)
			}
			return nil
		})
		if err != nil {
			t.Errorf("Do in %s: %v", tc.ns, err)
		}
	}
	if got, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(got) != string(hostFwd) {
		t.Errorf("host ip_forward changed from %q to %q", hostFwd, got)
	}

	sentinel := errors.New("sentinel")
	if err := a.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do error = %v, want sentinel", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		a.Do(func() error { panic("boom") })
		t.Errorf("Do did not re-raise the panic")
	}()
	if err := a.Do(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Errorf("Do with Goexit returned nil")
	}

	// Every thread of the process is back in the host namespace.
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if got, err := os.Readlink(task); err == nil && got != hostNS {
			t.Errorf("%s = %s after Do, want %s", task, got, hostNS)
		}
	}
}

func TestProcOutputAndEnv(t *testing.T) {
	lab := NewT(t)
	n, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.Command("sh", "-c", `echo "hello $NETLAB_TEST"; ip -o link show; exec sleep 1000`)
	cmd.Env = append(os.Environ(), "NETLAB_TEST=42")
	p, err := n.StartCmd(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "hello 42"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitOutput(ctx, "1: lo:"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.Output(), "eth") {
		t.Errorf("namespace sees host links:\n%s", p.Output())
	}
	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("Stop = %v, want killed by SIGTERM", err)
	}
	if err := p.WaitOutput(ctx, "never printed"); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitOutput after exit = %v", err)
	}

	if _, err := n.StartCmd(exec.Command("true")); err == nil {
		t.Errorf("StartCmd accepted a command not from NS.Command")
	}
}

func TestExec(t *testing.T) {
	lab := NewT(t)
	n, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Exec(t.Context(), "sh", "-c", "echo some-diagnostic; exit 3")
	if err == nil || !strings.Contains(err.Error(), "ip netns exec "+n.Name()+" sh -c") ||
		!strings.Contains(err.Error(), "some-diagnostic") {
		t.Errorf("Exec error = %v, want command and output", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := n.Exec(ctx, "sleep", "1000"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exec with expired context = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Exec took %v after its context expired", d)
	}
	if _, err := n.IP("link", "set", "nonexistent0", "up"); err == nil ||
		!strings.Contains(err.Error(), "ip -n "+n.Name()+" link set nonexistent0 up") {
		t.Errorf("IP error = %v, want the command line", err)
	}
}

func TestCloseCleansUp(t *testing.T) {
	lab := newLab(t, DefaultPrefix)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "eth0", "10.9.0.1/30", b, "eth0", "10.9.0.2/30"); err != nil {
		t.Fatal(err)
	}
	p, err := a.Start("sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	// A grandchild in a session of its own escapes the process group;
	// Close still finds it through the namespace.
	stray, err := b.Start("setsid", "-f", "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	stray.Wait()
	var strayPid int
	Eventually(t, 5*time.Second, "find the stray process", func() error {
		out, err := runIP("netns", "pids", b.Name())
		if err != nil {
			return err
		}
		if strayPid, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
			return fmt.Errorf("pids in %s: %q", b.Name(), out)
		}
		return nil
	})
	if _, err := a.ServeHTTP("127.0.0.1:0", http.NotFoundHandler()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(netnsList(t), lab.ID()+"-a") {
		t.Fatalf("namespace %s-a not listed", lab.ID())
	}

	if err := lab.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Errorf("process %d still running after Close", p.Pid())
	}
	Eventually(t, 5*time.Second, "stray process killed", func() error { return pidGone(strayPid) })
	if list := netnsList(t); strings.Contains(list, lab.ID()) {
		t.Errorf("namespaces left after Close:\n%s", list)
	}
	if _, err := os.Stat(markerPath(lab.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owner marker left after Close: %v", err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := lab.NS("c"); !errors.Is(err, ErrClosed) {
		t.Errorf("NS after Close = %v, want ErrClosed", err)
	}
	if _, err := a.Start("true"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestParallelLabs(t *testing.T) {
	requireLab(t)
	requirePing(t)
	ids := make(chan string, 2)
	t.Run("group", func(t *testing.T) {
		for i := range 2 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				lab := NewT(t)
				ids <- lab.ID()
				ra, err := lab.RemoteAccess()
				if err != nil {
					t.Fatal(err)
				}
				Eventually(t, 10*time.Second, "ping lan from gw", func() error {
					return ping(t, ra.GW, ra.ServerAddr.String())
				})
				Eventually(t, 10*time.Second, "ping user from gw", func() error {
					return ping(t, ra.GW, ra.UserAddr.String())
				})
			})
		}
	})
	if len(ids) == 2 {
		if a, b := <-ids, <-ids; a == b {
			t.Errorf("two labs share id %q", a)
		}
	}
}

func TestNames(t *testing.T) {
	for _, p := range []string{"", "EG", "e-g", "1eg", "egtoolong"} {
		if _, err := New(p); err == nil {
			t.Errorf("New(%q) accepted an invalid prefix", p)
		}
	}
	for _, tc := range []struct{ prefix, name, want string }{
		{"eg", "eg3f9a1b-user", "eg3f9a1b"},
		{"eg", "eg3f9a1b", "eg3f9a1b"},
		{"eg", "ega3f9a1b-user", ""},
		{"eg", "eg3f9a1-user", ""},
		{"eg", "eg3F9A1B-user", ""},
		{"eg", "other-user", ""},
		{"egsw", "eg3f9a1b-user", ""},
	} {
		if got := labID(tc.prefix, tc.name); got != tc.want {
			t.Errorf("labID(%q, %q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
		}
	}
	requireLab(t)
	lab := NewT(t)
	for _, name := range []string{"", "Gw", "a-b", "x/y", "seventeen_chars_x"} {
		if _, err := lab.NS(name); err == nil {
			t.Errorf("NS(%q) accepted an invalid name", name)
		}
	}
	if _, err := lab.NS("gw"); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.NS("gw"); err == nil {
		t.Errorf("NS accepted a duplicate name")
	}
}

// sweepPrefix is used only by the Sweep tests, so that Sweep(DefaultPrefix)
// run by NewT in parallel tests never interferes.
const sweepPrefix = "egsw"

func TestSweep(t *testing.T) {
	t.Cleanup(func() { Sweep(sweepPrefix) })
	victim := newLab(t, sweepPrefix)
	live := newLab(t, sweepPrefix)
	orphan := newLab(t, sweepPrefix)
	vns, err := victim.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	p, err := vns.Start("sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.NS("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := orphan.NS("a"); err != nil {
		t.Fatal(err)
	}

	// The victim's owner is a process that has exited; the orphan has no
	// marker at all.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("%d %d\n", dead.Process.Pid, 1)
	if err := os.WriteFile(markerPath(victim.ID()), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(markerPath(orphan.ID())); err != nil {
		t.Fatal(err)
	}

	if err := Sweep(sweepPrefix); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	list := netnsList(t)
	for _, id := range []string{victim.ID(), orphan.ID()} {
		if strings.Contains(list, id) {
			t.Errorf("Sweep left %s:\n%s", id, list)
		}
	}
	if !strings.Contains(list, live.ID()+"-a") {
		t.Errorf("Sweep removed the live lab %s:\n%s", live.ID(), list)
	}
	if _, err := os.Stat(markerPath(victim.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("victim marker left: %v", err)
	}
	if _, err := os.Stat(markerPath(live.ID())); err != nil {
		t.Errorf("live marker: %v", err)
	}
	Eventually(t, 5*time.Second, "process in swept namespace killed", func() error {
		select {
		case <-p.Done():
			return nil
		default:
			return fmt.Errorf("pid %d still running", p.Pid())
		}
	})
	// Close of a swept lab has nothing left to do and does not fail.
	if err := victim.Close(); err != nil {
		t.Errorf("Close after Sweep: %v", err)
	}
}

// TestSweepCrashedOwner kills a test process that owns a lab with SIGKILL,
// then sweeps what it left behind.
func TestSweepCrashedOwner(t *testing.T) {
	if os.Getenv("NETLAB_CRASH_CHILD") == "1" {
		crashChild()
		return
	}
	requireLab(t)
	t.Cleanup(func() { Sweep(sweepPrefix) })

	child := exec.Command(os.Args[0], "-test.run=^TestSweepCrashedOwner$")
	child.Env = append(os.Environ(), "NETLAB_CRASH_CHILD=1")
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })

	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- rest
				break
			}
		}
		io.Copy(io.Discard, out)
		close(ready)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("child did not build its lab in time")
	}
	var id string
	var sleepPid int
	if _, err := fmt.Sscanf(line, "%s %d", &id, &sleepPid); err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if !strings.Contains(netnsList(t), id+"-a") {
		t.Fatalf("namespace %s-a vanished with its owner; nothing to sweep", id)
	}
	if err := Sweep(sweepPrefix); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if list := netnsList(t); strings.Contains(list, id) {
		t.Errorf("Sweep left %s:\n%s", id, list)
	}
	Eventually(t, 5*time.Second, "process of the crashed lab killed", func() error { return pidGone(sleepPid) })
}

// crashChild builds a lab, reports it and waits to be killed.
func crashChild() {
	l, err := New(sweepPrefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	n, err := l.NS("a")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// setsid: the sleep must survive its owner, as a daemon started by a
	// crashed test would.
	p, err := n.Start("setsid", "-f", "sleep", "1000")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	p.Wait()
	out, err := runIP("netns", "pids", n.Name())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("READY %s %s\n", l.ID(), strings.TrimSpace(string(out)))
	<-time.After(2 * time.Minute) // the parent kills us long before
	os.Exit(1)
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("waits StopGrace")
	}
	lab := NewT(t)
	n, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	// An ignored signal stays ignored across exec.
	p, err := n.Start("sh", "-c", `trap "" TERM; echo ready; exec sleep 1000`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Stop()
	if d := time.Since(start); d < StopGrace || d > StopGrace+5*time.Second {
		t.Errorf("Stop took %v, want about %v", d, StopGrace)
	}
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want killed by SIGKILL", err)
	}
}
