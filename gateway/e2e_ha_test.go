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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/ha"
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
	s, err := n.status()
	if err != nil {
		return "", err
	}
	return s.Role, nil
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

// status reads the node's HA status from /api/v1/status.
func (n *haNode) status() (*ha.Status, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(n.dir, "admin.sock"))
		}}}
	resp, err := c.Get("http://localhost/api/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	if s.HA == nil {
		return nil, fmt.Errorf("status has no ha")
	}
	return s.HA, nil
}

// ruleset is the node's edgegw table as nft prints it.
func (n *haNode) ruleset() (string, error) {
	out, err := n.ns.Exec(context.Background(), "nft", "list", "table", "inet", "edgegw")
	if err != nil {
		return "", fmt.Errorf("nft list in %s: %w: %s", n.ns, err, out)
	}
	return string(out), nil
}

// TestHAPair runs two real edgegw nodes with an ha: section in namespaces:
// the WAN virtual address is on the higher-priority node; both run the
// same ruleset (the standby forwards nothing the active would not); after
// the active node's edgegw is killed with kill -9 the address moves to the
// other; when the first comes back it stays standby (preemption off).
func TestHAPair(t *testing.T) {
	nodes := startHAPair(t)
	const deadline = 30 * time.Second // VRRP needs ~3-4 s; CI load adds more
	testkit.Eventually(t, deadline, "n1 master", nodes[0].wantRole("master"))
	testkit.Eventually(t, deadline, "n2 backup", nodes[1].wantRole("backup"))
	testkit.Eventually(t, deadline, "VIP on n1", nodes[0].wantVIP(true))
	must(t, nodes[1].wantVIP(false)())
	testkit.Eventually(t, deadline, "n1 metrics", nodes[0].wantMetric(`edgegw_ha_role{role="master"} 1`))
	testkit.Eventually(t, deadline, "n2 metrics", nodes[1].wantMetric(`edgegw_ha_role{role="backup"} 1`))
	r1, err := nodes[0].ruleset()
	must(t, err)
	r2, err := nodes[1].ruleset()
	must(t, err)
	if r1 != r2 {
		t.Fatalf("the standby's ruleset differs from the active's:\n--- n1\n%s\n--- n2\n%s", r1, r2)
	}
	// conntrackd's messages cross the sync link through edgegw's ruleset.
	for _, n := range nodes {
		testkit.Eventually(t, deadline, "conntrackd sync on "+n.ns.Name(), func() error {
			s, err := n.status()
			if err != nil {
				return err
			}
			if s.ConntrackSync == nil || s.ConntrackSync.PacketsReceived == 0 {
				return fmt.Errorf("%s: sync %+v", n.ns, s.ConntrackSync)
			}
			return nil
		})
	}

	// kill -9: edgegw cannot clean up, its keepalived and conntrackd go
	// with it (parent-death signal) and the peer takes the address.
	var daemons []int
	for _, f := range []string{"keepalived.pid", "conntrackd.pid"} {
		b, err := os.ReadFile(filepath.Join(nodes[0].dir, "state", "ha", f))
		must(t, err)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		must(t, err)
		daemons = append(daemons, pid)
	}
	must(t, syscall.Kill(nodes[0].proc.Pid(), syscall.SIGKILL))
	<-nodes[0].proc.Done()
	testkit.Eventually(t, deadline, "n1's daemons gone with it", func() error {
		for _, pid := range daemons {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("pid %d still runs", pid)
			}
		}
		return nil
	})
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

// TestHASplitBrain cuts VRRP on the sync link of two running edgegw nodes
// with nftables (their WAN stays up): both become master, both see the
// other answer for the WAN virtual address (status, metrics), and n2 (the
// higher sync-link address) yields, so only n1 keeps the address. When
// VRRP passes again n2 is backup.
func TestHASplitBrain(t *testing.T) {
	nodes := startHAPair(t)
	const deadline = 30 * time.Second
	testkit.Eventually(t, deadline, "n1 master", nodes[0].wantRole("master"))
	testkit.Eventually(t, deadline, "n2 backup", nodes[1].wantRole("backup"))
	cut := `table ip hacut {
	chain out {
		type filter hook output priority filter; policy accept;
		oifname "sync0" ip protocol vrrp drop
	}
}`
	for _, n := range nodes {
		cmd := n.ns.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(cut)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	testkit.Eventually(t, deadline, "n2 yielded", func() error {
		s, err := nodes[1].status()
		if err != nil {
			return err
		}
		if !s.Yielded || s.Role != "fault" || s.SplitBrains == 0 {
			return fmt.Errorf("n2: %+v", s)
		}
		return nil
	})
	testkit.Eventually(t, deadline, "n1 counted it", nodes[0].wantMetric(`edgegw_ha_split_brains_total 1`))
	testkit.Eventually(t, deadline, "n2 counted it", nodes[1].wantMetric(`edgegw_ha_split_brains_total 1`))
	testkit.Eventually(t, deadline, "VIP gone from n2", nodes[1].wantVIP(false))
	must(t, nodes[0].wantVIP(true)())
	must(t, nodes[0].wantRole("master")())
	testkit.Eventually(t, deadline, "n1's split brain over", nodes[0].wantMetric(`edgegw_ha_split_brain 0`))

	for _, n := range nodes {
		if out, err := n.ns.Exec(context.Background(), "nft", "delete", "table", "ip", "hacut"); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	testkit.Eventually(t, deadline, "n2 backup again", nodes[1].wantRole("backup"))
	must(t, nodes[0].wantRole("master")())
}

// startHAPair starts two edgegw nodes whose WAN legs meet on a bridge and
// whose sync link is a veth between them; n1 has the higher priority.
func startHAPair(t *testing.T) [2]*haNode {
	t.Helper()
	testkit.NeedRoot(t)

	testkit.NeedTool(t, "keepalived", "keepalived")
	testkit.NeedTool(t, "conntrackd", "conntrackd")
	testkit.NeedTool(t, "nft", "nftables")
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
	return nodes
}
