package gateway_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// BenchmarkEnrolledDevices measures what 10,000 enrolled devices cost the
// gateway: the time from start until its registry snapshot and nft identity
// sets hold all of them and until one of them, chosen last, connects with
// a stock WireGuard client and reaches the office (beside the start of the
// same gateway without devices); the resident memory they add; and the
// time a revocation through the admin API takes to cut that connected
// device off; and the console's device list through the admin API (the
// first page, which builds the registry's list index, then p50 and p99 of
// a page deep in the list and of a search for one user; goal 50 ms at
// p99). Run with -benchtime 1x (see BENCHMARKS.md).
//
// The WireGuard device holds enrolled devices as on-demand peers (see
// wireguard.PeerSource): a device becomes a wireguard-go peer with its
// first handshake, so the start costs nothing per device there, and the
// connect time is what shows that the device accepts them.
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
		infoLogs(b, s)
		devs := enrollMany(b, filepath.Join(s.dir, "state"), n)
		last := devs[len(devs)-1] // the highest address: the end of the sets

		t0 := time.Now()
		s.start()
		netlab.Eventually(b, 60*time.Second, "all devices in the snapshot and the identity set", func() error {
			if got := activeDevices(b, s); got != n {
				return fmt.Errorf("%d active devices", got)
			}
			// The addresses are consecutive, so the interval set of
			// group "staff" holds them as one range up to last's.
			if set := run(b, s.ra.GW, "nft", "list", "table", "inet", "edgegw"); !strings.Contains(set, "-"+last.addr.String()) {
				return fmt.Errorf("the identity set does not reach %s", last.addr)
			}
			return nil
		})
		absorbed := time.Since(t0)

		// The last device connects as a user would: wg-quick up, ping.
		userIf := s.lab.ID() + "u"
		s.upClient(s.ra.User, userIf, deviceConf(b, s, last), "")
		netlab.Eventually(b, 30*time.Second, "the last enrolled device reaches the office", func() error {
			return s.ra.User.Ping(s.ra.ServerAddr.String())
		})
		connected := time.Since(t0)
		memMB := float64(rss(b, s.proc.Pid())-baseRSS) / (1 << 20)

		// The console's device list through the admin API: the first
		// request builds the registry's list index, the others use it.
		firstList := timeDeviceList(b, s, "?limit=50&offset=0", 50, n)
		pageP50, pageP99 := deviceListPercentiles(b, s, "?limit=50&offset=7500", 50, n)
		searchP50, searchP99 := deviceListPercentiles(b, s, "?limit=50&q=u9876%40", 1, 1)
		if got := strings.TrimSpace(run(b, s.ra.GW, "wg", "show", s.wgIf, "peers")); got != last.pub {
			b.Fatalf("WireGuard peers after one device connected: %q, want %s", got, last.pub)
		}

		// Revoke it: the admin API answers after the registry refreshed;
		// the peer must then be gone, the set split and the device cut off.
		t1 := time.Now()
		resp, _ := s.post("/api/v1/devices/" + last.id + "/revoke")
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("revoke: %s", resp.Status)
		}
		netlab.Eventually(b, 10*time.Second, "revoked peer removed", func() error {
			if strings.Contains(run(b, s.ra.GW, "wg", "show", s.wgIf, "peers"), last.pub) {
				return fmt.Errorf("still a peer")
			}
			if strings.Contains(run(b, s.ra.GW, "nft", "list", "table", "inet", "edgegw"), "-"+last.addr.String()) {
				return fmt.Errorf("identity set still holds %s", last.addr)
			}
			return nil
		})
		revoke := time.Since(t1)
		if err := s.ra.User.Ping(s.ra.ServerAddr.String()); err == nil {
			b.Fatal("the revoked device still reaches the office")
		}
		b.ReportMetric(absorbed.Seconds(), "s-start-10k")
		b.ReportMetric(connected.Seconds(), "s-connect-10k")
		b.ReportMetric(emptyStart.Seconds(), "s-start-empty")
		b.ReportMetric(revoke.Seconds(), "s-revoke")
		b.ReportMetric(memMB, "MB-10k")
		b.ReportMetric(firstList, "ms-list-first")
		b.ReportMetric(pageP50, "ms-page150-p50")
		b.ReportMetric(pageP99, "ms-page150-p99")
		b.ReportMetric(searchP50, "ms-search-p50")
		b.ReportMetric(searchP99, "ms-search-p99")
	}
}

// deviceListRounds is how many times deviceListPercentiles asks.
const deviceListRounds = 100

// deviceListPercentiles asks the admin API for a device list page
// (query: the query string) deviceListRounds times and returns the 50th
// and 99th percentile of the answer times in ms.
func deviceListPercentiles(b *testing.B, s *site, query string, wantLen, wantTotal int) (p50, p99 float64) {
	d := make([]float64, deviceListRounds)
	for i := range d {
		d[i] = timeDeviceList(b, s, query, wantLen, wantTotal)
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100-1]
}

// timeDeviceList asks once and returns the time in ms, after checking
// the page's length and the total (X-Total-Count).
func timeDeviceList(b *testing.B, s *site, query string, wantLen, wantTotal int) float64 {
	hc := s.adminClient()
	t0 := time.Now()
	resp, err := hc.Get("http://localhost/api/v1/devices" + query)
	must(b, err)
	var devs []json.RawMessage
	err = json.NewDecoder(resp.Body).Decode(&devs)
	resp.Body.Close()
	el := time.Since(t0)
	must(b, err)
	if resp.StatusCode != http.StatusOK || len(devs) != wantLen || resp.Header.Get("X-Total-Count") != strconv.Itoa(wantTotal) {
		b.Fatalf("GET /api/v1/devices%s: %s, %d devices of %s, want %d of %d", query, resp.Status, len(devs), resp.Header.Get("X-Total-Count"), wantLen, wantTotal)
	}
	return float64(el) / float64(time.Millisecond)
}

// benchDevice is an enrolled device whose private key the test keeps.
type benchDevice struct {
	id        string
	priv, pub string // base64, as wg prints them
	addr      netip.Addr
}

// enrollMany writes n devices with real key pairs to the gateway's SQLite
// registry before it starts, as earlier enrollments would have, and
// returns them in address order.
func enrollMany(b *testing.B, stateDir string, n int) []benchDevice {
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
	var devs []benchDevice
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				priv, err := ecdh.X25519().GenerateKey(rand.Reader)
				if err != nil {
					errc <- err
					return
				}
				k := [32]byte(priv.PublicKey().Bytes())
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
				devs = append(devs, benchDevice{id: d.ID, priv: base64.StdEncoding.EncodeToString(priv.Bytes()), pub: wgKeyText(k), addr: d.Address})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	must(b, <-errc)
	slices.SortFunc(devs, func(x, y benchDevice) int { return x.addr.Compare(y.addr) })
	return devs
}

// deviceConf is the wg-quick file of an enrolled device d at s's gateway.
func deviceConf(b *testing.B, s *site, d benchDevice) string {
	gwPub := strings.TrimSpace(run(b, s.ra.GW, "wg", "show", s.wgIf, "public-key"))
	return fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = %s/32\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:51820\nAllowedIPs = %s/32\n",
		d.priv, d.addr, gwPub, s.ra.GWWANAddr, s.ra.ServerAddr)
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
