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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/identity/pgtest"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestFleetSharedPostgres is a fleet of two appliances sharing one
// PostgreSQL (Debian's postgresql-15, started by the test), each in its own
// topology, with the same configuration and WireGuard address range. A
// laptop enrolled at A with `edgegw enroll` and a real OpenID provider
// reaches the office through either appliance with the file enroll wrote.
// Devices enrolled at the same time through two registries on the
// database, as the two appliances' enrollment endpoints write them, become
// WireGuard peers on both gateways, each with the address the registry gave
// it and no address twice; one key enrolled through both at once is one
// device. A revocation through A's admin API removes the peer from B within
// 5 s (the time is logged) and cuts the laptop's traffic through B.
func TestFleetSharedPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	needStockWireGuard(t)
	fleet := []*site{newSite(t), newSite(t)}
	a, b := fleet[0], fleet[1]
	pg := pgtest.Start(t)
	_, store := pg.NewDB(t)

	// One OpenID provider for the fleet, in the test process, reached from
	// both gateways and from the user at A through forwarders.
	op := startProvider(t, a.ra.User, a.ra.GW, b.ra.GW)
	for _, s := range fleet {
		webSecret := writeWebSecret(t, s)
		// The appliances' configurations differ only in their own paths
		// and interface name (unique because UAPI sockets are global).
		cfg := fmt.Sprintf(`appliance:
  name: fleet
  state_dir: %[1]s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100
  socket: %[1]s/admin.sock
log:
  level: info
identity:
  store: %[2]q
  providers:
    - name: corp
      issuer: %[3]s
      client_id: edgegw-web
      client_secret_file: %[4]s
      device_client_id: edgegw-cli
access:
  listen: 0.0.0.0:8443
tunnels:
  wireguard:
    interface: %[5]s
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
`, s.dir, store, op.Issuer, webSecret, s.wgIf)
		must(t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
	}

	// Both appliances start at once on the empty database, so both run
	// its migrations concurrently.
	for _, s := range fleet {
		p, err := s.ra.GW.Start(binary, "run", "--config", s.cfg)
		must(t, err)
		s.proc = p
		// Cleanups run last-first: the gateways stop before their
		// database is dropped.
		t.Cleanup(func() { p.Stop() })
	}
	for i, s := range fleet {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.proc.WaitOutput(ctx, "edgegw is up")
		cancel()
		if err != nil {
			t.Fatalf("gateway %c did not start: %v\n%s", 'A'+i, err, s.proc.Output())
		}
	}

	// What the steps share: the laptop enrolled at A (its wg-quick file,
	// its device, its key), every device's address by public key, and the
	// address pool.
	var (
		clientConf string
		client     enroll.Device
		clientPub  string
		want       map[string]netip.Addr
	)
	pool := netip.MustParsePrefix("100.96.0.1/12")

	if !t.Run("a laptop enrolls at A with edgegw enroll", func(t *testing.T) {
		// A remote user enrolls a laptop at A the real way: `edgegw enroll`,
		// the device grant, approval at the provider.
		t0 := time.Now()
		confFile := filepath.Join(a.dir, "roaming.conf")
		if out, err := enrollCmd(t, a.ra.User, op, op.Username(), "https://"+a.ra.GWWANAddr.String()+":8443", "roaming-laptop", confFile); err != nil {
			t.Fatalf("edgegw enroll at gateway A: %v\n%s\ngateway A log:\n%s", err, out, a.proc.Output())
		}
		t.Logf("enrolled at gateway A in %s", time.Since(t0).Round(time.Millisecond))
		rawConf, err := os.ReadFile(confFile)
		must(t, err)
		// wg-quick hands DNS = to resolvconf, which the test namespaces lack.
		clientConf = regexp.MustCompile(`(?m)^DNS = .*\n`).ReplaceAllString(string(rawConf), "")
		var listed []enroll.Device
		must(t, json.Unmarshal([]byte(a.get(enroll.PathDevices)), &listed))
		if len(listed) != 1 || listed[0].Name != "roaming-laptop" {
			t.Fatalf("gateway A lists %+v after one enrollment", listed)
		}
		client = listed[0]
		clientPub = client.PublicKey.String()
	}) {
		return
	}

	if !t.Run("enrollments all at once through both registries", func(t *testing.T) {
		// The registries a fleet's enrollment endpoints write through: one per
		// appliance, opened as the gateway opens its own.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		regs := make([]*identity.Registry, 2)
		for i := range regs {
			r, err := identity.Open(ctx, identity.Options{
				Store: store, Pool: pool, Reserved: []netip.Addr{pool.Addr()},
			})
			must(t, err)
			t.Cleanup(func() { r.Close() })
			regs[i] = r
		}

		const perAppliance = 50
		const twins = 6
		keys := make([]string, 0, 2*perAppliance)
		enrollments := make([]identity.Enrollment, 0, cap(keys))
		for i := range 2 * perAppliance {
			var k [32]byte
			rand.Read(k[:])
			keys = append(keys, base64.StdEncoding.EncodeToString(k[:]))
			enrollments = append(enrollments, fleetEnrollment(fmt.Sprintf("user%d", i), k))
		}
		var tk [32]byte
		rand.Read(tk[:])
		twinPub := base64.StdEncoding.EncodeToString(tk[:])
		twin := fleetEnrollment("twin", tk)
		// All at once: 50 devices through each appliance's registry, and one
		// key through both several times, as a user retrying at two
		// appliances would.
		start := time.Now()
		devs := make([]identity.Device, len(enrollments))
		twinDevs := make([]identity.Device, twins)
		var wg sync.WaitGroup
		errc := make(chan error, len(enrollments)+twins)
		for i, e := range enrollments {
			wg.Go(func() {
				d, err := regs[i%2].Enroll(ctx, e)
				if err != nil {
					errc <- fmt.Errorf("enroll %s through appliance %c: %w", e.Name, 'A'+i%2, err)
				}
				devs[i] = d
			})
		}
		for i := range twins {
			wg.Go(func() {
				d, err := regs[i%2].Enroll(ctx, twin)
				if err != nil {
					errc <- fmt.Errorf("enroll the twin device through appliance %c: %w", 'A'+i%2, err)
				}
				twinDevs[i] = d
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("%d enrollments through two registries in %s (retries after address or key collisions: %v + %v)",
			len(enrollments)+twins, time.Since(start).Round(time.Millisecond), enrollRetries(t, regs[0]), enrollRetries(t, regs[1]))
		for _, d := range twinDevs[1:] {
			if d.ID != twinDevs[0].ID || d.Address != twinDevs[0].Address {
				t.Errorf("one key became two devices: %s at %s and %s at %s", twinDevs[0].ID, twinDevs[0].Address, d.ID, d.Address)
			}
		}
		want = map[string]netip.Addr{ // public key -> address
			clientPub: client.Address,
			twinPub:   twinDevs[0].Address,
		}
		for i, d := range devs {
			want[keys[i]] = d.Address
		}
	}) {
		return
	}

	if !t.Run("both gateways follow the shared registry", func(t *testing.T) {
		// Both gateways follow the shared registry: each one's snapshot, from
		// which its WireGuard device creates peers on demand, holds every
		// device, and the registry gave no address twice.
		for i, s := range fleet {
			name := fmt.Sprintf("gateway %c", 'A'+i)
			netlab.Eventually(t, 15*time.Second, name+" holds every enrolled device", func() error {
				if n := activeDevices(t, s); n != len(want) {
					return fmt.Errorf("%d active devices, want %d", n, len(want))
				}
				return nil
			})
			var listed []enroll.Device
			must(t, json.Unmarshal([]byte(s.get(enroll.PathDevices)), &listed))
			byAddr := map[netip.Addr]string{}
			for _, d := range listed {
				key := d.PublicKey.String()
				if other, dup := byAddr[d.Address]; dup {
					t.Errorf("%s: %s is the address of two devices, %s and %s", name, d.Address, other, key)
				}
				byAddr[d.Address] = key
				if addr, ok := want[key]; !ok {
					t.Errorf("%s: device %s was not enrolled here", name, key)
				} else if d.Address != addr {
					t.Errorf("%s: device %s has address %s, the enrollment got %s", name, key, d.Address, addr)
				}
				if !pool.Contains(d.Address) || d.Address == pool.Addr() {
					t.Errorf("%s: device %s has address %s, not one of %s other than the gateway's", name, key, d.Address, pool)
				}
			}
			if len(listed) != len(want) {
				t.Errorf("%s lists %d devices, want %d", name, len(listed), len(want))
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}) {
		return
	}

	if !t.Run("the laptop reaches the LAN through either gateway", func(t *testing.T) {
		// The laptop enrolled at A reaches the LAN through either appliance
		// with the file enroll wrote; for B only the gateway's key differs
		// (both topologies give the gateway the same WAN address).
		aPub := strings.TrimSpace(run(t, a.ra.GW, "wg", "show", a.wgIf, "public-key"))
		if !strings.Contains(clientConf, "PublicKey = "+aPub) {
			t.Fatalf("the wg-quick file does not name gateway A's key %s:\n%s", aPub, clientConf)
		}
		for i, s := range fleet {
			gwPub := strings.TrimSpace(run(t, s.ra.GW, "wg", "show", s.wgIf, "public-key"))
			s.upClient(s.ra.User, s.lab.ID()+"u", strings.Replace(clientConf, aPub, gwPub, 1), "")
			netlab.Eventually(t, 15*time.Second, fmt.Sprintf("the laptop enrolled at A pings the office through gateway %c", 'A'+i), func() error {
				return s.ra.User.Ping(s.ra.ServerAddr.String())
			})
			// Its handshake made it a peer, with the registry's address.
			if got := allowedIPs(t, s); len(got) != 1 || got[clientPub] != client.Address.String()+"/32" {
				t.Errorf("gateway %c's peers after the laptop connected: %v, want %s with %s/32", 'A'+i, got, clientPub, client.Address)
			}
		}
	}) {
		return
	}

	if !t.Run("revoked at A, gone from B", func(t *testing.T) {
		// Revoked at A's admin API, gone from B.
		resp, body := a.post(enroll.PathDevices + "/" + client.ID + "/revoke")
		revoked := time.Now()
		var dev enroll.Device
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &dev) != nil || dev.Status != "revoked" {
			t.Fatalf("revoke %s at gateway A: %s %s", client.ID, resp.Status, body)
		}
		if _, ok := allowedIPs(t, a)[clientPub]; ok {
			t.Error("gateway A answered the revocation with the device still a peer")
		}
		netlab.Eventually(t, 5*time.Second, "the device revoked at gateway A leaves gateway B's peers", func() error {
			if _, ok := allowedIPs(t, b)[clientPub]; ok {
				return fmt.Errorf("still a peer")
			}
			return nil
		})
		t.Logf("revoked at A: gone from B's WireGuard peers %s after A's admin API answered (polled every 50 ms)",
			time.Since(revoked).Round(time.Millisecond))
		if err := b.ra.User.Ping(b.ra.ServerAddr.String()); err == nil {
			t.Error("the device revoked at A still reaches the office through B")
		}
		for i, s := range fleet {
			if n := len(allowedIPs(t, s)); n != 0 {
				t.Errorf("gateway %c has %d peers after the revocation, want none", 'A'+i, n)
			}
			netlab.Eventually(t, 5*time.Second, fmt.Sprintf("gateway %c drops the revoked device", 'A'+i), func() error {
				if n := activeDevices(t, s); n != len(want)-1 {
					return fmt.Errorf("%d active devices, want %d", n, len(want)-1)
				}
				return nil
			})
		}
	}) {
		return
	}
}

// activeDevices is edgegw_identity_devices{state="active"} on s's gateway:
// the devices of its registry snapshot (-1: not exported).
func activeDevices(t testing.TB, s *site) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^edgegw_identity_devices\{state="active"\} (\S+)$`).FindStringSubmatch(s.get("/metrics"))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// fleetEnrollment is a device of user with public key k, as an enrollment
// endpoint hands it to the registry.
func fleetEnrollment(user string, k [32]byte) identity.Enrollment {
	return identity.Enrollment{
		Name: user + "-laptop", Email: user + "@corp.example", Subject: "https://idp.corp.example#" + user,
		Groups: []string{"staff"}, PublicKey: k, Expires: time.Now().Add(24 * time.Hour),
	}
}

// allowedIPs is `wg show <if> allowed-ips` on s's gateway: each peer's
// public key and its allowed IPs as wg prints them.
func allowedIPs(t testing.TB, s *site) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, s.ra.GW, "wg", "show", s.wgIf, "allowed-ips")), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			out[f[0]] = strings.Join(f[1:], " ")
		} else if len(f) == 1 {
			out[f[0]] = ""
		}
	}
	return out
}

// enrollRetries is r's edgegw_identity_enroll_retries_total: how often an
// enrollment lost a race on the database's unique indexes and started over.
func enrollRetries(t testing.TB, r *identity.Registry) float64 {
	t.Helper()
	preg := prometheus.NewPedanticRegistry()
	must(t, preg.Register(r.Collector()))
	mfs, err := preg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "edgegw_identity_enroll_retries_total" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("the registry exports no edgegw_identity_enroll_retries_total")
	return 0
}
