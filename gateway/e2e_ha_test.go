package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// haNode is one real edgegw of a pair.
type haNode struct {
	t    *testing.T
	ns   *netlab.NS
	dir  string
	cfg  string
	proc *netlab.Proc
}

func (n *haNode) start() {
	n.t.Helper()
	p, err := n.ns.Start(binary, "run", "--config", n.cfg)
	must(n.t, err)
	n.proc = p
	n.t.Cleanup(func() { p.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "edgegw is up"); err != nil {
		n.t.Fatalf("%s did not start: %v\n%s", n.ns, err, p.Output())
	}
}

// role reads the node's HA role from /api/v1/status over its admin socket.
func (n *haNode) role() (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(n.dir, "admin.sock"))
		}}}
	resp, err := c.Get("http://localhost/api/v1/status")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var s gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return "", err
	}
	if s.HA == nil {
		return "", fmt.Errorf("status has no ha")
	}
	return s.HA.Role, nil
}

func (n *haNode) wantRole(role string) func() error {
	return func() error {
		r, err := n.role()
		if err != nil {
			return err
		}
		if r != role {
			return fmt.Errorf("%s is %s, want %s", n.ns, r, role)
		}
		return nil
	}
}

func (n *haNode) wantVIP(want bool) func() error {
	return func() error {
		out, err := n.ns.IP("-4", "addr", "show", "dev", "eth0")
		if err != nil {
			return err
		}
		if has := strings.Contains(string(out), "203.0.113.10/24"); has != want {
			return fmt.Errorf("%s has the WAN virtual address: %v, want %v", n.ns, has, want)
		}
		return nil
	}
}

// wantMetric looks for line in the node's /metrics.
func (n *haNode) wantMetric(line string) func() error {
	return func() error {
		resp, err := n.ns.HTTPClient().Get("http://127.0.0.1:9100/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), line+"\n") {
			return fmt.Errorf("%s: no %q in /metrics", n.ns, line)
		}
		return nil
	}
}

// TestHAPair runs two real edgegw nodes with an ha: section in namespaces:
// the WAN virtual address is on the higher-priority node; after that
// node's edgegw is killed with kill -9 it moves to the other; when the
// first comes back it stays standby (preemption off).
func TestHAPair(t *testing.T) {
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "keepalived", "keepalived")
	testkit.NeedTool(t, "conntrackd", "conntrackd")
	lab := netlab.NewT(t)
	var nodes [2]*haNode
	for i := range nodes {
		ns, err := lab.NS(fmt.Sprintf("n%d", i+1))
		must(t, err)
		nodes[i] = &haNode{t: t, ns: ns, dir: t.TempDir()}
	}
	sw, err := lab.NS("wan")
	must(t, err)
	// Both WAN legs meet on a bridge, as on a real uplink switch.
	for i, n := range nodes {
		must(t, lab.Link(n.ns, "eth0", fmt.Sprintf("203.0.113.%d/24", i+1), sw, fmt.Sprintf("p%d", i+1), ""))
	}
	if _, err := sw.IP("link", "add", "br0", "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"link", "set", "p1", "master", "br0"}, {"link", "set", "p2", "master", "br0"}, {"link", "set", "br0", "up"}} {
		if _, err := sw.IP(args...); err != nil {
			t.Fatal(err)
		}
	}
	must(t, lab.Link(nodes[0].ns, "sync0", "10.255.0.1/30", nodes[1].ns, "sync0", "10.255.0.2/30"))
	for i, n := range nodes {
		prio, peer := 200, "10.255.0.2"
		if i == 1 {
			prio, peer = 100, "10.255.0.1"
		}
		key := filepath.Join(n.dir, "ha-key")
		must(t, os.WriteFile(key, []byte("pairkey1\n"), 0o600))
		n.cfg = filepath.Join(n.dir, "edgegw.yaml")
		must(t, os.WriteFile(n.cfg, []byte(fmt.Sprintf(`appliance:
  name: ha%d
  state_dir: %s/state
interfaces:
  wan: eth0
admin:
  listen: 127.0.0.1:9100
  socket: %s/admin.sock
log:
  level: debug
ha:
  priority: %d
  peer: %s
  interface: sync0
  auth_key_file: %s
  virtual_addresses:
    wan: [203.0.113.10/24]
`, i+1, n.dir, n.dir, prio, peer, key)), 0o600))
		n.start()
	}
	const deadline = 30 * time.Second // VRRP needs ~3-4 s; CI load adds more
	testkit.Eventually(t, deadline, "n1 master", nodes[0].wantRole("master"))
	testkit.Eventually(t, deadline, "n2 backup", nodes[1].wantRole("backup"))
	testkit.Eventually(t, deadline, "VIP on n1", nodes[0].wantVIP(true))
	must(t, nodes[1].wantVIP(false)())
	testkit.Eventually(t, deadline, "n1 metrics", nodes[0].wantMetric(`edgegw_ha_role{role="master"} 1`))
	testkit.Eventually(t, deadline, "n2 metrics", nodes[1].wantMetric(`edgegw_ha_role{role="backup"} 1`))

	// kill -9: edgegw cannot clean up, its keepalived goes with it
	// (parent-death signal) and the peer takes the address.
	must(t, syscall.Kill(nodes[0].proc.Pid(), syscall.SIGKILL))
	<-nodes[0].proc.Done()
	testkit.Eventually(t, deadline, "VIP moved to n2", nodes[1].wantVIP(true))
	testkit.Eventually(t, deadline, "n2 master", nodes[1].wantRole("master"))
	testkit.Eventually(t, deadline, "VIP gone from n1", nodes[0].wantVIP(false))

	// n1 returns with the higher priority and stays standby.
	nodes[0].start()
	testkit.Eventually(t, deadline, "returning n1 backup", nodes[0].wantRole("backup"))
	// Four advert intervals for a preemption that must not happen.
	time.Sleep(4 * time.Second)
	must(t, nodes[1].wantRole("master")())
	must(t, nodes[0].wantVIP(false)())
	must(t, nodes[1].wantVIP(true)())
}
