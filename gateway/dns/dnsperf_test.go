package dns

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDNSPerf measures cache-hit throughput and latency with dnsperf
// (Debian dnsperf) against edgegw (1M-name blocklist loaded, three
// policies), Unbound (Debian unbound, as a caching forwarder) and CoreDNS
// (forward and cache plugins), on the same box, with the same query set,
// in interleaved rounds. Each round is a saturating run (-q 200
// outstanding) for queries/s and a run at a fixed rate (-Q) for the
// latency percentiles. Run with
//
//	GOBIN=/tmp/coredns-bin go install github.com/coredns/coredns@v1.15.0
//	EDGEGW_DNSPERF=1 EDGEGW_COREDNS=/tmp/coredns-bin/coredns go test -run TestDNSPerf -v ./gateway/dns/
//
// EDGEGW_DNSPERF_SECONDS (default 6) and EDGEGW_DNSPERF_ROUNDS (default
// 5: short rounds, so that the ratio of each round is taken under one
// load) size it; without EDGEGW_COREDNS CoreDNS is left out;
// EDGEGW_DNSPERF_PROFILE=FILE writes edgegw's CPU profile of the runs;
// EDGEGW_DNSPERF_BASELINE=BINARY adds "edgegw-base", the edgegw process
// of another build of this package's tests (go test -c at an earlier
// commit), so that a change is measured before and after in one run.
func TestDNSPerf(t *testing.T) {
	if os.Getenv("EDGEGW_DNSPERF") == "" {
		t.Skip("set EDGEGW_DNSPERF=1 to run")
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		t.Skip("dnsperf not installed")
	}
	secs := envOr("EDGEGW_DNSPERF_SECONDS", "6")
	rounds, _ := strconv.Atoi(envOr("EDGEGW_DNSPERF_ROUNDS", "5"))
	up := newTestUpstream(t)
	dir := t.TempDir()
	var qs strings.Builder
	for i := range 1000 {
		up.add(fmt.Sprintf("n%d.perf.test. 3600 IN A 192.0.2.%d", i, i%250+1))
		fmt.Fprintf(&qs, "n%d.perf.test A\n", i)
	}
	queries := filepath.Join(dir, "queries.txt")
	os.WriteFile(queries, []byte(qs.String()), 0o644)

	type target struct {
		name, addr         string
		pid                int // 0: this process
		qps, p50, p99, avg []float64
		cpu                []float64 // the server's CPU-seconds per saturated run
	}
	// edgegw runs in a process of its own, as Unbound and CoreDNS do, so
	// that this process's work (the upstream, reading dnsperf's output)
	// does not share its heap and scheduler.
	addr, pid := startEdgegwProcess(t, os.Args[0], up.addr)
	targets := []*target{{name: "edgegw", addr: addr, pid: pid}}
	if bin := os.Getenv("EDGEGW_DNSPERF_BASELINE"); bin != "" {
		addr, pid := startEdgegwProcess(t, bin, up.addr)
		targets = append(targets, &target{name: "edgegw-base", addr: addr, pid: pid})
	}
	if ub, pid := startUnbound(t, dir, up.addr); ub != "" {
		targets = append(targets, &target{name: "unbound", addr: ub, pid: pid})
	}
	if bin := os.Getenv("EDGEGW_COREDNS"); bin != "" {
		addr, pid := startCoreDNS(t, bin, dir, up.addr)
		targets = append(targets, &target{name: "coredns", addr: addr, pid: pid})
	} else {
		t.Log("EDGEGW_COREDNS not set: CoreDNS left out")
	}

	qpsRE := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	latRE := regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	rcodeRE := regexp.MustCompile(`Response codes:\s+(.*)`)
	perf := func(tg *target, args ...string) string {
		host, port, _ := net.SplitHostPort(tg.addr)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		args = append([]string{"-s", host, "-p", port, "-d", queries, "-c", "4", "-T", "1"}, args...)
		out, err := exec.CommandContext(ctx, "dnsperf", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dnsperf %s: %v\n%.2000s", tg.name, err, out)
		}
		rc := rcodeRE.FindStringSubmatch(string(out))
		if rc == nil || !strings.HasPrefix(rc[1], "NOERROR") || strings.Contains(rc[1], ",") {
			t.Errorf("%s: answers not all NOERROR: %v", tg.name, rc)
		}
		return string(out)
	}
	for _, tg := range targets {
		perf(tg, "-l", "2", "-q", "200") // warm the cache
	}
	for r := range rounds {
		// Rotate the order so that no target always runs first.
		for i := range targets {
			tg := targets[(i+r)%len(targets)]
			cpu0 := cpuSeconds(tg.pid)
			out := perf(tg, "-l", secs, "-q", "200")
			tg.cpu = append(tg.cpu, cpuSeconds(tg.pid)-cpu0)
			qps, lat := qpsRE.FindStringSubmatch(out), latRE.FindStringSubmatch(out)
			if qps == nil || lat == nil {
				t.Fatalf("%s: cannot parse\n%s", tg.name, out)
			}
			tg.qps = append(tg.qps, atof(qps[1]))
			tg.avg = append(tg.avg, atof(lat[1]))
			// Latency at a fixed rate that every target sustains.
			lats := perLatencies(perf(tg, "-l", "3", "-Q", "10000", "-q", "100", "-v"))
			if len(lats) == 0 {
				t.Fatalf("%s: no per-query latencies", tg.name)
			}
			tg.p50 = append(tg.p50, lats[len(lats)/2])
			tg.p99 = append(tg.p99, lats[len(lats)*99/100])
			t.Logf("round %d %-11s %8.0f q/s  CPU %.2f cores  saturated avg %6.2f ms  at 10k q/s p50 %.3f ms p99 %.3f ms",
				r+1, tg.name, tg.qps[r], tg.cpu[r]/atof(secs), tg.avg[r]*1e3, tg.p50[r]*1e3, tg.p99[r]*1e3)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("load average at the end: %s", strings.TrimSpace(string(load)))
	for _, tg := range targets {
		rss := rssMB(tg.pid)
		var usPerQuery []float64
		for r := range tg.qps {
			usPerQuery = append(usPerQuery, tg.cpu[r]/(tg.qps[r]*atof(secs))*1e6)
		}
		t.Logf("%-11s median %8.0f q/s  CPU %.1f µs a query  p99 at 10k q/s %.3f ms  RSS %.1f MB",
			tg.name, median(tg.qps), median(usPerQuery), median(tg.p99)*1e3, rss)
	}
	for _, tg := range targets[1:] {
		var ratios []float64
		for r := range tg.qps {
			ratios = append(ratios, targets[0].qps[r]/tg.qps[r])
		}
		t.Logf("edgegw / %s q/s per round: %.2f (median %.2f); p99 ratio (lower is better) %.2f",
			tg.name, ratios, median(ratios), median(targets[0].p99)/median(tg.p99))
	}
}

// TestDNSPerfServer is the edgegw process of TestDNSPerf: with
// EDGEGW_DNSPERF_UPSTREAM set it serves on loopback with the 1M-name list,
// prints "listening ADDR" and its heap, and runs until stdin closes.
func TestDNSPerfServer(t *testing.T) {
	up := os.Getenv("EDGEGW_DNSPERF_UPSTREAM")
	if up == "" {
		t.Skip("the edgegw process of TestDNSPerf")
	}
	addr := benchServer(t, up, 1_000_000)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if f := os.Getenv("EDGEGW_DNSPERF_PROFILE"); f != "" {
		w, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(w)
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("heap %.1f MB\nlistening %s\n", float64(ms.HeapInuse)/(1<<20), addr)
	io.Copy(io.Discard, os.Stdin)
}

// startEdgegwProcess runs TestDNSPerfServer of the test binary bin in a
// child process and returns its address and pid.
func startEdgegwProcess(t *testing.T, bin, upstream string) (string, int) {
	cmd := exec.Command(bin, "-test.run=^TestDNSPerfServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDGEGW_DNSPERF_UPSTREAM="+upstream)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "heap "); ok {
			t.Logf("edgegw heap in use with the 1M-name list: %s", h)
		}
		if a, ok := strings.CutPrefix(line, "listening "); ok {
			go io.Copy(io.Discard, out)
			return a, cmd.Process.Pid
		}
	}
	t.Fatalf("edgegw process did not start: %v", sc.Err())
	return "", 0
}

// perLatencies returns the sorted latencies, in seconds, of dnsperf -v's
// per-query lines ("> NOERROR name A 0.000123").
func perLatencies(out string) []float64 {
	var lats []float64
	for line := range strings.Lines(out) {
		if !strings.HasPrefix(line, "> ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			lats = append(lats, v)
		}
	}
	slices.Sort(lats)
	return lats
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func atof(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// cpuSeconds returns the user and system CPU time pid has used so far
// (0: this process), from /proc/PID/stat, or 0 when it cannot be read.
// The server's CPU per query tells efficiency apart from how the kernel
// spread dnsperf's sockets over the server's (SO_REUSEPORT hashes each
// of its 4 sockets to one server socket, so a round can load one reader).
func cpuSeconds(pid int) float64 {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start at state,
	// field 3; utime and stime are fields 14 and 15, in clock ticks
	// (USER_HZ, 100 on Linux).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	return (atof(f[11]) + atof(f[12])) / 100
}

// rssMB returns the resident set size of pid (0: this process).
func rssMB(pid int) float64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}

// startCoreDNS runs CoreDNS (bin) as a caching forwarder to upstream.
func startCoreDNS(t *testing.T, bin, dir, upstream string) (string, int) {
	port := freePort(t)
	conf := filepath.Join(dir, "Corefile")
	os.WriteFile(conf, []byte(fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    cache 3600
    forward . %s
}
`, port, upstream)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-conf", conf, "-quiet")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("coredns: %v", err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, 10*time.Second, "coredns", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, cmd.Process.Pid
}

// startUnbound runs Unbound as a caching forwarder to upstream and returns
// its address and pid, or "" when it is not installed.
func startUnbound(t *testing.T, dir, upstream string) (string, int) {
	bin, err := exec.LookPath("unbound")
	if err != nil {
		bin = "/usr/sbin/unbound"
		if _, err := os.Stat(bin); err != nil {
			t.Log("unbound not installed; skipped")
			return "", 0
		}
	}
	port := freePort(t)
	uh, up, _ := net.SplitHostPort(upstream)
	conf := filepath.Join(dir, "unbound.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`server:
  interface: 127.0.0.1@%d
  port: %d
  num-threads: 2
  so-reuseport: yes
  chroot: ""
  username: ""
  directory: "%s"
  pidfile: "%s/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  msg-cache-size: 64m
  rrset-cache-size: 64m
  auto-trust-anchor-file: ""
  domain-insecure: "test"
  local-zone: "test." nodefault
forward-zone:
  name: "."
  forward-addr: %s@%s
`, port, port, dir, dir, uh, up)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-d", "-c", conf)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, 10*time.Second, "unbound", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, cmd.Process.Pid
}

func freePort(t *testing.T) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
