package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// siteLab builds the site-to-site topology the GRE, BGP and console tests
// share, with the WAN router forwarding:
//
//	olan 10.0.0.5 ── ogw (203.0.113.10) ── wan ── bgw (198.51.100.20) ── blan 10.20.0.5
func siteLab(t *testing.T) (*netlab.Lab, map[string]*netlab.NS) {
	t.Helper()
	lab := netlab.NewT(t)
	ns := map[string]*netlab.NS{}
	for _, n := range []string{"olan", "ogw", "wan", "bgw", "blan"} {
		x, err := lab.NS(n)
		must(t, err)
		ns[n] = x
	}
	must(t, lab.Link(ns["olan"], "eth0", "10.0.0.5/24", ns["ogw"], "eth1", "10.0.0.1/24"))
	must(t, lab.Link(ns["ogw"], "eth0", "203.0.113.10/24", ns["wan"], "eth0", "203.0.113.1/24"))
	must(t, lab.Link(ns["wan"], "eth1", "198.51.100.1/24", ns["bgw"], "eth0", "198.51.100.20/24"))
	must(t, lab.Link(ns["bgw"], "eth1", "10.20.0.1/24", ns["blan"], "eth0", "10.20.0.5/24"))
	must(t, ns["olan"].Route("default", "10.0.0.1"))
	must(t, ns["blan"].Route("default", "10.20.0.1"))
	must(t, ns["ogw"].Route("default", "203.0.113.1"))
	must(t, ns["bgw"].Route("default", "198.51.100.1"))
	must(t, ns["wan"].Sysctl("net.ipv4.ip_forward", "1"))
	return lab, ns
}

// greSite is one gateway of siteLab's topology: edgegw with one GRE
// tunnel Tun from Local to Remote, its address Addr. Admin holds more
// lines of the admin section (indented); Tail, sections after tunnels.
type greSite struct {
	Name, Tun, Local, Remote, Addr string
	Admin, Tail                    string
}

// office and branch are siteLab's two ends; greRoute routes prefix
// through tun.
func officeSite(tun, admin, tail string) greSite {
	return greSite{Name: "office", Tun: tun, Local: "203.0.113.10", Remote: "198.51.100.20", Addr: "10.200.1.0/31", Admin: admin, Tail: tail}
}

func branchSite(tun, tail string) greSite {
	return greSite{Name: "branch", Tun: tun, Local: "198.51.100.20", Remote: "203.0.113.10", Addr: "10.200.1.1/31", Tail: tail}
}

func greRoute(prefix, tun string) string {
	return fmt.Sprintf("routes:\n  - prefix: %s\n    via: %s\n", prefix, tun)
}

// startGRESite writes s's configuration into dir (state in dir/<name>,
// admin socket dir/<name>.sock), starts edgegw in gw and waits until it
// is up; its output is logged if the test fails.
func startGRESite(t *testing.T, gw *netlab.NS, dir string, s greSite) *netlab.Proc {
	t.Helper()
	admin := ""
	if s.Admin != "" {
		admin = strings.TrimSuffix(s.Admin, "\n") + "\n"
	}
	cfg := filepath.Join(dir, s.Name+".yaml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`appliance:
  name: %s
  state_dir: %s/%s
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  socket: %s/%s.sock
%stunnels:
  gre:
    - name: %s
      local: %s
      remote: %s
      address: %s
      health_check:
        rate: high
%s`, s.Name, dir, s.Name, dir, s.Name, admin, s.Tun, s.Local, s.Remote, s.Addr, s.Tail)), 0o600))
	p, err := gw.Start(binary, "run", "--config", cfg)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "edgegw is up"); err != nil {
		t.Fatalf("%s did not start: %v\n%s", s.Name, err, p.Output())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s:\n%s", s.Name, p.Output())
		}
	})
	return p
}

// officeBGP is the office's bgp section for a BIRD branch
// (startBIRDBranch) over tun: the office LAN announced, the branch's
// /16 accepted up to /24s.
func officeBGP(tun string) string {
	return fmt.Sprintf(`bgp:
  asn: 65000
  router_id: 203.0.113.10
  announce: [10.0.0.0/24]
  neighbors:
    - name: branch
      address: 10.200.1.1
      remote_as: 65020
      tunnel: %s
      hold_time: 9
      import:
        prefixes: [{prefix: 10.20.0.0/16, max_length: 24}]
`, tun)
}

// startBIRDBranch runs BIRD 2 in siteLab's branch gateway bgw: eBGP
// (AS 65020) to the office (AS 65000) over the GRE tunnel's /31,
// announcing the branch LAN. ctl is its control socket, for birdc -s.
func startBIRDBranch(t *testing.T, bgw *netlab.NS) (bird *netlab.Proc, ctl string) {
	t.Helper()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "bird.conf"), []byte(`
router id 198.51.100.20;
protocol device { scan time 1; }
protocol direct { ipv4; interface "eth1"; }
protocol bgp office {
	local 10.200.1.1 as 65020;
	neighbor 10.200.1.0 as 65000;
	connect retry time 1;
	ipv4 { import all; export where source = RTS_DEVICE; };
}
`), 0o600))
	ctl = filepath.Join(dir, "bird.ctl")
	bird, err := bgw.Start("bird", "-f", "-c", filepath.Join(dir, "bird.conf"), "-s", ctl, "-P", filepath.Join(dir, "bird.pid"))
	must(t, err)
	return bird, ctl
}

// TestGRESiteToSite joins two offices with GRE, both ends running the real
// edgegw binary:
//
//	olan 10.0.0.5 ── ogw (edgegw, 203.0.113.10) ── wan ── bgw (edgegw, 198.51.100.20) ── blan 10.20.0.5
func TestGRESiteToSite(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	lab, ns := siteLab(t)

	dir := t.TempDir()
	tun := lab.ID() + "t"
	office := startGRESite(t, ns["ogw"], dir, officeSite(tun, "", greRoute("10.20.0.0/16", tun)))
	branch := startGRESite(t, ns["bgw"], dir, branchSite(tun, greRoute("10.0.0.0/24", tun)))

	netlab.Eventually(t, 15*time.Second, "ping across the GRE tunnel", func() error {
		return ns["olan"].Ping("10.20.0.5")
	})
	srv, err := ns["blan"].ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "branch sees %s\n", r.RemoteAddr)
	}))
	must(t, err)
	defer srv.Close()
	resp, err := ns["olan"].HTTPClient().Get("http://10.20.0.5:8080/")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "branch sees 10.0.0.5:") {
		t.Errorf("body = %q", body)
	}

	// The SYNs were clamped to the GRE tunnel's MSS (1476 − 40).
	if out := run(t, ns["ogw"], "nft", "list", "chain", "inet", "edgegw", "mss"); !strings.Contains(out, "maxseg size set 1436") ||
		regexp.MustCompile(`counter packets [1-9]`).FindString(out) == "" {
		t.Errorf("no clamped SYN through the tunnel:\n%s", out)
	}

	status := func(gw *netlab.NS) string {
		name := map[*netlab.NS]string{ns["ogw"]: "office", ns["bgw"]: "branch"}[gw]
		return run(t, gw, binary, "status", "--socket", filepath.Join(dir, name+".sock"))
	}
	netlab.Eventually(t, 10*time.Second, "office reports the tunnel healthy with its route", func() error {
		st := status(ns["ogw"])
		for _, want := range []string{`"kind": "gre"`, `"state": "healthy"`, `10.20.0.0/16`} {
			if !strings.Contains(st, want) {
				return fmt.Errorf("status lacks %s:\n%s", want, st)
			}
		}
		return nil
	})

	for _, p := range []*netlab.Proc{office, branch} {
		must(t, syscall.Kill(p.Pid(), syscall.SIGTERM))
		select {
		case <-p.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("gateway did not exit on SIGTERM")
		}
	}
	for _, gw := range []*netlab.NS{ns["ogw"], ns["bgw"]} {
		if out := run(t, gw, "ip", "link", "show"); strings.Contains(out, tun) {
			t.Errorf("tunnel interface left behind:\n%s", out)
		}
		if out := run(t, gw, "ip", "route", "show", "table", "all", "proto", "237"); strings.TrimSpace(out) != "" {
			t.Errorf("routes left behind:\n%s", out)
		}
	}
}
