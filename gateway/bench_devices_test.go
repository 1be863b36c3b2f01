package gateway_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// BenchmarkEnrolledDevices measures what 10,000 enrolled devices cost the
// gateway: the time from start to a WireGuard device and nft identity sets
// holding all of them (beside the start of the same gateway without
// devices), the resident memory they add, and the time a
// revocation through the admin API takes to remove one peer from a
// 10,000-peer device. Run with -benchtime 1x (see BENCHMARKS.md).
func BenchmarkEnrolledDevices(b *testing.B) {
	const n = 10_000
	for range b.N {
		// The same gateway with no devices, for the memory baseline.
		empty := newSite(b)
		empty.extras = "identity:\n  store: sqlite\n"
		empty.writeConfig()
		infoLogs(b, empty)
		te := time.Now()
		empty.start()
		emptyStart := time.Since(te)
		baseRSS := rss(b, empty.proc.Pid())
		empty.proc.Stop()

		s := newSite(b)
		s.extras = `identity:
  store: sqlite
firewall:
  rules:
    - id: ssh-staff-only
      expression: tcp.dstport == 22 and not identity.groups contains "staff"
      action: block
`
		s.writeConfig()
		infoLogs(b, s) // wireguard-go's debug lines for 10,000 peers would dominate
		keys := enrollMany(b, filepath.Join(s.dir, "state"), n)

		t0 := time.Now()
		s.start()
		netlab.Eventually(b, 60*time.Second, "all devices are peers", func() error {
			if got := peerCount(b, s); got != n {
				return fmt.Errorf("%d peers", got)
			}
			return nil
		})
		startup := time.Since(t0)
		memMB := float64(rss(b, s.proc.Pid())-baseRSS) / (1 << 20)
		// The devices' addresses are consecutive, so the interval set of
		// group "staff" holds them as ranges; a revocation splits one.
		setBefore := run(b, s.ra.GW, "nft", "list", "table", "inet", "edgegw")
		if !strings.Contains(setBefore, "100.96.0.2") {
			b.Fatalf("the identity set does not hold the devices:\n%s", setBefore)
		}

		// Revoke one device: the admin API returns after the registry
		// refreshed; the peer must then leave the device.
		var devs []enroll.Device
		must(b, json.Unmarshal([]byte(s.get("/api/v1/devices")), &devs))
		victim := devs[len(devs)/2]
		t1 := time.Now()
		resp, err := s.ra.GW.HTTPClient().Post("http://127.0.0.1:9100/api/v1/devices/"+victim.ID+"/revoke", "", nil)
		must(b, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("revoke: %s", resp.Status)
		}
		victimKey := keys[victim.ID]
		netlab.Eventually(b, 10*time.Second, "revoked peer removed", func() error {
			if strings.Contains(run(b, s.ra.GW, "wg", "show", s.wgIf, "peers"), victimKey) {
				return fmt.Errorf("still a peer")
			}
			if !strings.Contains(run(b, s.ra.GW, "nft", "list", "table", "inet", "edgegw"), victim.Address.Prev().String()) {
				return fmt.Errorf("identity set not split around %s", victim.Address)
			}
			return nil
		})
		revoke := time.Since(t1)
		b.ReportMetric(startup.Seconds(), "s-start-10k")
		b.ReportMetric(emptyStart.Seconds(), "s-start-empty")
		b.ReportMetric(revoke.Seconds(), "s-revoke")
		b.ReportMetric(memMB, "MB-10k")
	}
}

// enrollMany writes n devices to the gateway's SQLite registry before it
// starts, as earlier enrollments would have, and returns their public keys
// by device id.
func enrollMany(b *testing.B, stateDir string, n int) map[string]string {
	b.Helper()
	must(b, os.MkdirAll(stateDir, 0o700))
	ctx := context.Background()
	reg, err := identity.Open(ctx, identity.Options{
		StateDir: stateDir,
		Pool:     netip.MustParsePrefix("100.96.0.1/12"),
		Reserved: []netip.Addr{netip.MustParseAddr("100.96.0.1")},
	})
	must(b, err)
	defer reg.Close()
	var mu sync.Mutex
	keys := map[string]string{}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				var k [32]byte
				rand.Read(k[:])
				d, err := reg.Enroll(ctx, identity.Enrollment{
					Name: "bench-" + strconv.Itoa(i), Email: fmt.Sprintf("u%d@corp.example", i),
					Subject: fmt.Sprintf("https://idp#%d", i), Groups: []string{"staff"},
					PublicKey: k, Expires: time.Now().Add(24 * time.Hour),
				})
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				keys[d.ID] = wgKeyText(k)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	must(b, <-errc)
	return keys
}

func peerCount(b *testing.B, s *site) int {
	out := strings.TrimSpace(run(b, s.ra.GW, "wg", "show", s.wgIf, "peers"))
	if out == "" {
		return 0
	}
	return strings.Count(out, "\n") + 1
}

// rss is a process's resident memory in bytes.
func rss(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(b, err)
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			must(b, err)
			return kb << 10
		}
	}
	b.Fatalf("no VmRSS for %d", pid)
	return 0
}

func wgKeyText(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }

// infoLogs sets the site's log level to info, as an appliance runs.
func infoLogs(b *testing.B, s *site) {
	raw, err := os.ReadFile(s.cfg)
	must(b, err)
	must(b, os.WriteFile(s.cfg, []byte(strings.Replace(string(raw), "level: debug", "level: info", 1)), 0o600))
}
