package gateway_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/swanbranch"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// TestBGPOverGRE runs the real edgegw binary with a bgp section and no
// routes: a BIRD branch router announces its LAN over the GRE tunnel
// (the branch's tunnel end is another edgegw), the office LAN reaches it
// through the route BGP brought, status shows the session, and edgegw
// leaves no route behind at exit.
//
//	olan 10.0.0.5 ── ogw (edgegw, bgp) ── wan ── bgw (edgegw + BIRD 2) ── blan 10.20.0.5
func TestBGPOverGRE(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("bird not found: install the Debian package bird2")
	}
	lab, ns := siteLab(t)

	dir := t.TempDir()
	tun := lab.ID() + "t"
	office := startGRESite(t, ns["ogw"], dir, officeSite(tun, "", officeBGP(tun)))
	branch := startGRESite(t, ns["bgw"], dir, branchSite(tun, greRoute("10.0.0.0/24", tun)))
	bird, birdCtl := startBIRDBranch(t, ns["bgw"])
	defer bird.Stop()

	netlab.Eventually(t, 30*time.Second, "office LAN reaches the branch LAN through the BGP route", func() error {
		if out := run(t, ns["ogw"], "ip", "route", "show", "10.20.0.0/24", "proto", "237"); !strings.Contains(out, "dev "+tun) {
			return fmt.Errorf("route 10.20.0.0/24: %q", out)
		}
		return ns["olan"].Ping("10.20.0.5")
	})
	st := run(t, ns["ogw"], binary, "status", "--socket", filepath.Join(dir, "office.sock"))
	for _, want := range []string{`"bgp"`, `"state": "established"`, `"accepted": 1`, `"advertised": 1`, "10.20.0.0/24"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %s:\n%s", want, st)
		}
	}
	if out := run(t, ns["bgw"], "birdc", "-s", birdCtl, "show", "route", "for", "10.0.0.5"); !strings.Contains(out, "10.0.0.0/24") {
		t.Errorf("BIRD did not learn the office prefix:\n%s", out)
	}

	for _, p := range []*netlab.Proc{office, branch} {
		must(t, syscall.Kill(p.Pid(), syscall.SIGTERM))
		select {
		case <-p.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("gateway did not exit on SIGTERM")
		}
	}
	if out := run(t, ns["ogw"], "ip", "route", "show", "table", "all", "proto", "237"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left behind:\n%s", out)
	}
}

// TestBGPOverIPsec runs the real edgegw binary with an IPsec tunnel, a
// bgp neighbor over it and no routes: the tunnel carries BGP, so its
// child SA is route-based (0.0.0.0/0 both ways, even with this machine's
// userspace ESP). A BIRD branch router behind a stock strongSwan
// configured the same way announces its LAN, which the office LAN then
// reaches, and `edgegw routes` shows the route, active, with the
// neighbor as its source, under the import range's guard.
//
//	olan 10.0.0.5 ── ogw (edgegw, ipsec + bgp) ── wan ── bgw (strongSwan + BIRD 2) ── blan 10.20.0.5
func TestBGPOverIPsec(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("bird not found: install the Debian package bird2")
	}
	swanbranch.Need(t, ipsec.DefaultCharon, swanbranch.BackendLibipsec)
	_, ns := siteLab(t)
	must(t, ns["bgw"].Sysctl("net.ipv4.ip_forward", "1"))

	dir := t.TempDir()
	const psk = "e2e-bgp-ipsec-psk-of-20-chars"
	must(t, os.WriteFile(filepath.Join(dir, "fra.psk"), []byte(psk+"\n"), 0o600))
	cfg := filepath.Join(dir, "office.yaml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`appliance:
  name: office
  state_dir: %[1]s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  socket: %[1]s/office.sock
tunnels:
  ipsec:
    - name: fra
      local: 203.0.113.10
      remote: 198.51.100.20
      local_id: lon.corp.example
      remote_id: fra.corp.example
      psk_file: %[1]s/fra.psk
      address: 10.200.3.0/31
      health_check:
        rate: high
bgp:
  asn: 65000
  router_id: 203.0.113.10
  announce: [10.0.0.0/24]
  neighbors:
    - name: branch
      address: 10.200.3.1
      remote_as: 65020
      tunnel: fra
      hold_time: 9
      import:
        prefixes: [{prefix: 10.20.0.0/16, max_length: 24}]
`, dir)), 0o600))
	office, err := ns["ogw"].Start(binary, "run", "--config", cfg)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := office.WaitOutput(ctx, "edgegw is up"); err != nil {
		t.Fatalf("office did not start: %v\n%s", err, office.Output())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("office:\n%s", office.Output())
		}
	})

	// The branch: route-based strongSwan (its table-220 rule goes, as
	// install_routes = no has it; the tunnel address on its TUN) and BIRD.
	br := swanbranch.Start(t, ns["bgw"], ipsec.DefaultCharon, swanbranch.BackendLibipsec, t.TempDir(), swanbranch.Conn{
		Name: "gw", Local: "198.51.100.20", Remote: "203.0.113.10",
		LocalID: "fra.corp.example", RemoteID: "lon.corp.example",
		LocalTS: []string{"0.0.0.0/0"}, RemoteTS: []string{"0.0.0.0/0"}, PSK: psk, Initiate: true,
	}.Swanctl())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("branch charon:\n%s", br.Log())
		}
	})
	run(t, ns["bgw"], "ip", "rule", "del", "table", "220")
	netlab.Eventually(t, 10*time.Second, "the branch's ipsec0", func() error {
		_, err := ns["bgw"].IP("link", "show", "ipsec0")
		return err
	})
	run(t, ns["bgw"], "ip", "addr", "add", "10.200.3.1/31", "dev", "ipsec0")
	run(t, ns["bgw"], "ip", "link", "set", "ipsec0", "up")
	birdDir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(birdDir, "bird.conf"), []byte(`
router id 198.51.100.20;
protocol device { scan time 1; }
protocol direct { ipv4; interface "eth1"; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; }
protocol bgp office {
	local 10.200.3.1 as 65020;
	neighbor 10.200.3.0 as 65000;
	connect retry time 1;
	ipv4 { import all; export where source = RTS_DEVICE; };
}
`), 0o600))
	bird, err := ns["bgw"].Start("bird", "-f", "-c", filepath.Join(birdDir, "bird.conf"), "-s", filepath.Join(birdDir, "bird.ctl"),
		"-P", filepath.Join(birdDir, "bird.pid"))
	must(t, err)
	defer bird.Stop()

	netlab.Eventually(t, 60*time.Second, "office LAN reaches the branch LAN through the BGP route over IPsec", func() error {
		if out := run(t, ns["ogw"], "ip", "route", "show", "10.20.0.0/24", "proto", "237"); !strings.Contains(out, "dev ipsec") {
			return fmt.Errorf("route 10.20.0.0/24: %q", out)
		}
		return ns["olan"].Ping("10.20.0.5")
	})
	st := run(t, ns["ogw"], binary, "status", "--socket", filepath.Join(dir, "office.sock"))
	for _, want := range []string{`"state": "established"`, `"accepted": 1`, "10.20.0.0/24"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %s:\n%s", want, st)
		}
	}
	// The tunnel's check may still be recovering from the probes sent
	// before the SA was up: wait for it to call the tunnel healthy.
	netlab.Eventually(t, 60*time.Second, "edgegw routes shows the BGP route, healthy and active", func() error {
		routes := run(t, ns["ogw"], binary, "routes", "--socket", filepath.Join(dir, "office.sock"))
		var rows []string
		for _, l := range strings.Split(strings.TrimSpace(routes), "\n") {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
		for _, want := range []string{
			"* 10.20.0.0/16 - bgp guard - - - 2000000001",
			"* 10.20.0.0/24 fra bgp:branch 100 healthy - 100",
			"10.20.0.0/24 - fallback - - - 2000000000",
			"* 10.200.3.0/31 fra connected - - - 0",
		} {
			if !slices.Contains(rows, want) {
				return fmt.Errorf("edgegw routes lacks %q:\n%s", want, routes)
			}
		}
		return nil
	})

	must(t, syscall.Kill(office.Pid(), syscall.SIGTERM))
	select {
	case <-office.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not exit on SIGTERM")
	}
	if out := run(t, ns["ogw"], "ip", "route", "show", "table", "all", "proto", "237"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left behind:\n%s", out)
	}
}
