package dns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// TestDNSPerf measures cache-hit throughput with dnsperf (Debian dnsperf)
// against edgegw (1M-name blocklist loaded, three policies), Unbound
// (Debian unbound, as a caching forwarder) and a plain miekg/dns
// forwarder, on the same box, with the same query set, one after the
// other. Run with EDGEGW_DNSPERF=1 (EDGEGW_DNSPERF_SECONDS, default 10).
func TestDNSPerf(t *testing.T) {
	if os.Getenv("EDGEGW_DNSPERF") == "" {
		t.Skip("set EDGEGW_DNSPERF=1 to run")
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		t.Skip("dnsperf not installed")
	}
	secs := os.Getenv("EDGEGW_DNSPERF_SECONDS")
	if secs == "" {
		secs = "10"
	}
	up := newTestUpstream(t)
	dir := t.TempDir()
	var qs strings.Builder
	for i := range 1000 {
		up.add(fmt.Sprintf("n%d.perf.test. 3600 IN A 192.0.2.%d", i, i%250+1))
		fmt.Fprintf(&qs, "n%d.perf.test A\n", i)
	}
	queries := filepath.Join(dir, "queries.txt")
	os.WriteFile(queries, []byte(qs.String()), 0o644)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	targets := []struct{ name, addr string }{{"edgegw", benchServer(t, up.addr, 1_000_000)}}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("edgegw heap in use with 1M-name list: %.1f MB", float64(after.HeapInuse)/(1<<20))
	if ub := startUnbound(t, dir, up.addr); ub != "" {
		targets = append(targets, struct{ name, addr string }{"unbound", ub})
	}
	targets = append(targets, struct{ name, addr string }{"plain-miekg-forwarder", plainForwarder(t, up.addr)})

	qpsRE := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	latRE := regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+) \(min ([0-9.]+), max ([0-9.]+)\)`)
	lostRE := regexp.MustCompile(`Queries lost:\s+(\d+)`)
	rcodeRE := regexp.MustCompile(`Response codes:\s+(.*)`)
	for _, tg := range targets {
		host, port, _ := net.SplitHostPort(tg.addr)
		perf := func(d string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "dnsperf", "-s", host, "-p", port, "-d", queries,
				"-l", d, "-c", "4", "-T", "1", "-q", "200").CombinedOutput()
			if err != nil {
				t.Fatalf("dnsperf %s: %v\n%s", tg.name, err, out)
			}
			return string(out)
		}
		perf("2") // warm the cache
		if f := os.Getenv("EDGEGW_DNSPERF_PROFILE"); f != "" && tg.name == "edgegw" {
			w, _ := os.Create(f)
			pprof.StartCPUProfile(w)
		}
		out := perf(secs)
		pprof.StopCPUProfile()
		qps, lat, lost := qpsRE.FindStringSubmatch(out), latRE.FindStringSubmatch(out), lostRE.FindStringSubmatch(out)
		if qps == nil || lat == nil {
			t.Fatalf("%s: cannot parse\n%s", tg.name, out)
		}
		rc := rcodeRE.FindStringSubmatch(out)
		if rc == nil || !strings.HasPrefix(rc[1], "NOERROR") || strings.Contains(rc[1], ",") {
			t.Errorf("%s: answers not all NOERROR: %v", tg.name, rc)
		}
		t.Logf("%-22s %10s q/s  avg latency %s s (min %s, max %s)  lost %s", tg.name, qps[1], lat[1], lat[2], lat[3], lost[1])
	}
}

// startUnbound runs Unbound as a caching forwarder to upstream, or returns
// "" when it is not installed.
func startUnbound(t *testing.T, dir, upstream string) string {
	bin, err := exec.LookPath("unbound")
	if err != nil {
		bin = "/usr/sbin/unbound"
		if _, err := os.Stat(bin); err != nil {
			t.Log("unbound not installed; skipped")
			return ""
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
	return addr
}

func freePort(t *testing.T) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
