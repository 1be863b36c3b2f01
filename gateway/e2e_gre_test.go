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
	start := func(gw *netlab.NS, name, tunName, local, remote, addr, route string) *netlab.Proc {
		cfg := filepath.Join(dir, name+".yaml")
		must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`appliance:
  name: %s
  state_dir: %s/%s
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  socket: %s/%s.sock
tunnels:
  gre:
    - name: %s
      local: %s
      remote: %s
      address: %s
      health_check:
        rate: high
routes:
  - prefix: %s
    via: %s
`, name, dir, name, dir, name, tunName, local, remote, addr, route, tunName)), 0o600))
		p, err := gw.Start(binary, "run", "--config", cfg)
		must(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.WaitOutput(ctx, "edgegw is up"); err != nil {
			t.Fatalf("%s did not start: %v\n%s", name, err, p.Output())
		}
		return p
	}
	tun := lab.ID() + "t"
	office := start(ns["ogw"], "office", tun, "203.0.113.10", "198.51.100.20", "10.200.1.0/31", "10.20.0.0/16")
	branch := start(ns["bgw"], "branch", tun, "198.51.100.20", "203.0.113.10", "10.200.1.1/31", "10.0.0.0/24")

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
