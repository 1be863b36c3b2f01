package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity/pgtest"
	"github.com/edgegw/edgegw/gateway/ha"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/swanbranch"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/logpush/hectest"
	"github.com/edgegw/edgegw/tunnel/ipsec"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// haNode is one real edgegw of a pair.
type haNode struct {
	t    testing.TB
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

// haStatus is what the HA tests read of /api/v1/status (gateway.Status
// itself does not decode: some of its types only marshal).
type haStatus struct {
	HA      *ha.Status `json:"ha"`
	Tunnels []struct {
		WireGuard *wireguard.Status `json:"wireguard"`
	} `json:"tunnels"`
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
	var s haStatus
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

	// The two files differ only in what may differ (priority, peer): both
	// nodes show the same digest of what must match.
	s1, err := nodes[0].status()
	must(t, err)
	s2, err := nodes[1].status()
	must(t, err)
	if s1.ConfigDigest == "" || s1.ConfigDigest != s2.ConfigDigest {
		t.Fatalf("config digests %q and %q: want equal and set", s1.ConfigDigest, s2.ConfigDigest)
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

// haLab is the done-criteria topology of an HA pair: two edgegw nodes
// whose WAN legs meet on a bridge in "wan" (where a server answers at
// 203.0.113.100) and whose LAN legs meet on a bridge in "lan" (where a
// host at 10.1.0.100 routes through the LAN virtual address 10.1.0.254);
// a sync link between them; a remote user in "user" (203.0.113.50, on
// the WAN bridge) with a stock WireGuard client whose Endpoint is the WAN
// virtual address 203.0.113.10. Both nodes run WireGuard with the pair's
// one private key (tunnels.wireguard.private_key_file) and VRRPv3 with
// 300 ms adverts.
type haLab struct {
	t          testing.TB
	lab        *netlab.Lab
	nodes      [2]*haNode
	wan, lan   *netlab.NS
	user       *netlab.NS
	userPub    string
	userIf     string
	wanLinks   [2]string // each node's WAN interface
	wgIfs      [2]string
	pairPubKey string
	branch     *netlab.NS // a branch router (edgegw) with a GRE tunnel to the WAN virtual address
	// swan is a branch router running stock strongSwan, with an IPsec
	// tunnel to the WAN virtual address that the pair initiates.
	swan *swanbranch.Branch
	// hec receives both nodes' Logpush (audit_logs), at the WAN server's
	// address.
	hec *hectest.Server
}

const haSwanPSK = "ha-test-psk-of-20-characters"

const (
	haWANVIP  = "203.0.113.10"
	haLANVIP  = "10.1.0.254"
	haServer  = "203.0.113.100"
	haLANHost = "10.1.0.100"
	haUserTun = "100.96.0.10"
	haBranch  = "203.0.113.60"
	// haBranchLAN is an address of the branch's LAN, reached from the
	// office LAN through the GRE tunnel.
	haBranchLAN = "10.20.0.1"
	haSwan      = "203.0.113.70"
	haSwanLAN   = "10.30.0.1" // the strongSwan branch's LAN
)

// newHALab builds the topology and starts both nodes (n1 with the higher
// priority), the branches and the remote user's client. setup, when not
// nil, runs once the namespaces exist and before the nodes start; it returns YAML for both nodes' configurations: top-level
// sections, and lines under tunnels.wireguard (indented by four).
func newHALab(t testing.TB, setup func(*haLab) (top, wireguard string)) *haLab {
	t.Helper()
	testkit.NeedRoot(t)
	testkit.NeedTool(t, "keepalived", "keepalived")
	testkit.NeedTool(t, "conntrackd", "conntrackd")
	testkit.NeedTool(t, "nft", "nftables")
	testkit.NeedTool(t, "conntrack", "conntrack")
	for _, tool := range [][2]string{{"wireguard-go", "wireguard-go"}, {"wg", "wireguard-tools"},
		{"wg-quick", "wireguard-tools"}, {"ping", "iputils-ping"}} {
		testkit.NeedTool(t, tool[0], tool[1])
	}
	l := &haLab{t: t, lab: netlab.NewT(t)}
	var err error
	l.wan, err = l.lab.NS("wan")
	must(t, err)
	l.lan, err = l.lab.NS("lan")
	must(t, err)
	l.user, err = l.lab.NS("user")
	must(t, err)
	for i := range l.nodes {
		ns, err := l.lab.NS(fmt.Sprintf("n%d", i+1))
		must(t, err)
		l.nodes[i] = &haNode{t: t, ns: ns, dir: t.TempDir()}
		l.wanLinks[i] = "eth0"
		must(t, l.lab.Link(ns, "eth0", fmt.Sprintf("203.0.113.%d/24", i+1), l.wan, fmt.Sprintf("p%d", i+1), ""))
		must(t, l.lab.Link(ns, "eth1", fmt.Sprintf("10.1.0.%d/24", i+1), l.lan, fmt.Sprintf("p%d", i+1), ""))
		// UAPI sockets are one directory for every namespace.
		l.wgIfs[i] = fmt.Sprintf("%sw%d", l.lab.ID(), i+1)
	}
	must(t, l.lab.Link(l.user, "eth0", "203.0.113.50/24", l.wan, "pu", ""))
	l.branch, err = l.lab.NS("branch")
	must(t, err)
	must(t, l.lab.Link(l.branch, "eth0", haBranch+"/24", l.wan, "pb", ""))
	blan, err := l.lab.NS("blan")
	must(t, err)
	must(t, l.lab.Link(l.branch, "eth1", haBranchLAN+"/24", blan, "eth0", ""))
	swanbranch.Need(t, ipsec.DefaultCharon, swanbranch.BackendLibipsec)
	swanNS, err := l.lab.NS("swan")
	must(t, err)
	must(t, l.lab.Link(swanNS, "eth0", haSwan+"/24", l.wan, "ps", ""))
	for _, a := range []string{haSwanLAN + "/32", "10.200.2.1/32"} {
		must(t, swanNS.AddAddr("lo", a))
	}
	must(t, l.lab.Link(l.nodes[0].ns, "sync0", "10.255.0.1/30", l.nodes[1].ns, "sync0", "10.255.0.2/30"))
	for _, sw := range []struct {
		ns    *netlab.NS
		ports []string
		addr  string
	}{{l.wan, []string{"p1", "p2", "pu", "pb", "ps"}, haServer + "/24"}, {l.lan, []string{"p1", "p2"}, haLANHost + "/24"}} {
		run(t, sw.ns, "ip", "link", "add", "br0", "type", "bridge")
		for _, p := range sw.ports {
			run(t, sw.ns, "ip", "link", "set", p, "master", "br0")
		}
		run(t, sw.ns, "ip", "link", "set", "br0", "up")
		must(t, sw.ns.AddAddr("br0", sw.addr))
	}
	must(t, l.lan.Route("default", haLANVIP))

	var topYAML, wgYAML string
	if setup != nil {
		topYAML, wgYAML = setup(l)
	}
	// The Logpush receiver runs in the test process, reached at the WAN
	// server's address.
	l.hec = hectest.New(hectest.Config{Tokens: []string{"ha-token"}})
	t.Cleanup(l.hec.Close)
	forwardTo(t, l.wan, haServer+":8088", l.hec.Addr())

	// The pair's one WireGuard key, and the remote user's; the IPsec
	// branch's pre-shared key.
	keys := t.TempDir()
	hecToken := filepath.Join(keys, "hec-token")
	must(t, os.WriteFile(hecToken, []byte("ha-token\n"), 0o600))
	psk := filepath.Join(keys, "swan.psk")
	must(t, os.WriteFile(psk, []byte(haSwanPSK+"\n"), 0o600))
	pairKey, pairPub := wgKey(t, l.wan, keys, "pair")
	userKey, userPub := wgKey(t, l.user, keys, "user")
	l.pairPubKey, l.userPub = pairPub, userPub
	for i, n := range l.nodes {
		prio, peer := 200, "10.255.0.2"
		if i == 1 {
			prio, peer = 100, "10.255.0.1"
		}
		n.cfg = filepath.Join(n.dir, "edgegw.yaml")
		must(t, os.WriteFile(n.cfg, []byte(fmt.Sprintf(`appliance:
  name: ha%d
  state_dir: %s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100
  socket: %s/admin.sock
log:
  level: debug
tunnels:
  wireguard:
    interface: %s
    listen_port: 51820
    address: 100.96.0.1/12
    private_key_file: %s
%s    peers:
      - name: user
        public_key: %q
        allowed_ips: [%s/32]
  gre:
    - name: gre1
      local: %s
      remote: %s
      address: 10.200.1.0/31
      health_check:
        rate: high
  ipsec:
    - name: ips1
      local: %s
      remote: %s
      local_id: hq.corp.example
      remote_id: br2.corp.example
      psk_file: %s
      address: 10.200.2.0/31
      initiator: true
      dpd: 2s
      health_check:
        rate: high
routes:
  - prefix: 10.20.0.0/16
    via: gre1
  - prefix: 10.30.0.0/16
    via: ips1
logpush:
  - name: audit
    dataset: audit_logs
    destination: splunk://%s:8088/services/collector/event?insecure-skip-verify=true
    token_file: %s
    max_upload_interval: 1s
%sha:
  priority: %d
  peer: %s
  interface: sync0
  vrrp_version: 3
  advert_interval: 300ms
  virtual_addresses:
    wan: [%s/24]
    lan: [%s/24]
`, i+1, n.dir, n.dir, l.wgIfs[i], pairKey, wgYAML, userPub, haUserTun, haWANVIP, haBranch, haWANVIP, haSwan, psk, haServer, hecToken, topYAML, prio, peer, haWANVIP, haLANVIP)), 0o600))
		n.start()
	}
	// The branch: one edgegw whose GRE tunnel's remote is the WAN virtual
	// address, whichever node holds it.
	bdir := t.TempDir()
	bcfg := filepath.Join(bdir, "edgegw.yaml")
	must(t, os.WriteFile(bcfg, []byte(fmt.Sprintf(`appliance:
  name: branch
  state_dir: %s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  socket: %s/admin.sock
tunnels:
  gre:
    - name: gre1
      local: %s
      remote: %s
      address: 10.200.1.1/31
      health_check:
        rate: high
routes:
  - prefix: 10.1.0.0/24
    via: gre1
`, bdir, bdir, haBranch, haWANVIP)), 0o600))
	bp, err := l.branch.Start(binary, "run", "--config", bcfg)
	must(t, err)
	t.Cleanup(func() { bp.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bp.WaitOutput(ctx, "edgegw is up"); err != nil {
		t.Fatalf("the branch did not start: %v\n%s", err, bp.Output())
	}
	// The IPsec branch, as its router's documentation configures it,
	// answering only: the pair initiates (tunnels.ipsec[].initiator), so
	// the node that takes over must start IKE again by itself. (A branch
	// that initiates finds the new node through its dead peer detection
	// instead: 7-9 s here with DPD every 2 s.)
	l.swan = swanbranch.Start(t, swanNS, ipsec.DefaultCharon, swanbranch.BackendLibipsec, t.TempDir(), swanbranch.Conn{
		Name: "hq", Local: haSwan, Remote: haWANVIP,
		LocalID: "br2.corp.example", RemoteID: "hq.corp.example",
		LocalTS:  []string{"10.30.0.0/16", "10.200.2.1/32"},
		RemoteTS: []string{"10.1.0.0/24", "10.200.2.0/32"},
		PSK:      haSwanPSK, Initiate: false,
	}.Swanctl())

	// The remote user: stock wg-quick and wireguard-go, no keepalive (a
	// silent client is the hard case: it notices nothing by itself).
	priv, err := os.ReadFile(userKey)
	must(t, err)
	l.userIf = l.lab.ID() + "u"
	conf := filepath.Join(keys, l.userIf+".conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = %s/32

[Peer]
PublicKey = %s
Endpoint = %s:51820
AllowedIPs = 100.96.0.0/12, 10.1.0.0/24
`, strings.TrimSpace(string(priv)), haUserTun, pairPub, haWANVIP)), 0o600))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.user.Exec(ctx, "wg-quick", "down", conf)
	})
	if out, err := l.user.Command("wg-quick", "up", conf).CombinedOutput(); err != nil {
		t.Fatalf("wg-quick up: %v\n%s", err, out)
	}
	return l
}

// master waits for one node to be master and the other backup, and
// returns the master's index.
func (l *haLab) master(deadline time.Duration) int {
	l.t.Helper()
	m := -1
	testkit.Eventually(l.t, deadline, "one master, one backup", func() error {
		var roles [2]string
		for i, n := range l.nodes {
			r, err := n.role()
			if err != nil {
				return err
			}
			roles[i] = r
		}
		switch roles {
		case [2]string{ha.RoleMaster, ha.RoleBackup}:
			m = 0
		case [2]string{ha.RoleBackup, ha.RoleMaster}:
			m = 1
		default:
			return fmt.Errorf("roles %v", roles)
		}
		return nil
	})
	return m
}

// ping sends one echo request from the user through the tunnel to the LAN
// host.
func (l *haLab) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := l.user.Exec(ctx, "ping", "-c1", "-W1", haLANHost)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", haLANHost, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pingBranch sends one echo request from the LAN host through the active
// node's GRE tunnel to the branch's LAN.
func (l *haLab) pingBranch() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := l.lan.Exec(ctx, "ping", "-c1", "-W1", haBranchLAN)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", haBranchLAN, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pingSwan sends one echo request from the LAN host through the active
// node's IPsec tunnel to the strongSwan branch's LAN.
func (l *haLab) pingSwan() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := l.lan.Exec(ctx, "ping", "-c1", "-W1", haSwanLAN)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", haSwanLAN, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// userEndpoint is the address the user's client last heard the pair from.
func (l *haLab) userEndpoint() string {
	l.t.Helper()
	f := strings.Fields(run(l.t, l.user, "wg", "show", l.userIf, "endpoints"))
	if len(f) != 2 {
		l.t.Fatalf("wg show endpoints: %v", f)
	}
	return f[1]
}

// takeover is the node's WireGuard takeover counters from its status.
func (n *haNode) takeover() (*wireguard.TakeoverStats, error) {
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
	var s haStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	for _, tu := range s.Tunnels {
		if tu.WireGuard != nil && tu.WireGuard.Takeover != nil {
			return tu.WireGuard.Takeover, nil
		}
	}
	return nil, fmt.Errorf("%s: no WireGuard takeover in the status", n.ns)
}

// stream is a TCP transfer from the LAN host through the pair's
// masquerade to the WAN server: the host writes 16 KiB every 10 ms and
// the server counts what arrives. Any error on either end (a reset) is
// kept.
type stream struct {
	received atomic.Int64
	mu       sync.Mutex
	err      error
	stop     chan struct{}
	done     sync.WaitGroup
}

func startStream(t testing.TB, l *haLab) *stream {
	t.Helper()
	ln, err := l.wan.Listen("tcp", haServer+":5001")
	must(t, err)
	s := &stream{stop: make(chan struct{})}
	accepted := make(chan net.Conn, 1)
	s.done.Add(1)
	go func() { // owned by the stream: ends when the listener or conn closes
		defer s.done.Done()
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			s.fail(fmt.Errorf("accept: %w", err))
			close(accepted)
			return
		}
		accepted <- c
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			s.received.Add(int64(n))
			if err != nil {
				select {
				case <-s.stop:
				default:
					s.fail(fmt.Errorf("server read: %w", err))
				}
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := l.lan.DialContext(ctx, "tcp", haServer+":5001")
	must(t, err)
	srv := <-accepted
	s.done.Add(1)
	go func() { // the writer, owned by the stream
		defer s.done.Done()
		chunk := make([]byte, 16<<10)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			c.SetWriteDeadline(time.Now().Add(60 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				s.fail(fmt.Errorf("client write: %w", err))
				return
			}
		}
	}()
	t.Cleanup(func() {
		s.close()
		c.Close()
		if srv != nil {
			srv.Close()
		}
		s.done.Wait()
	})
	return s
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *stream) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}

// flowing waits until more than `more` bytes arrived after now, and fails
// on any error of the stream.
func (s *stream) flowing(t testing.TB, deadline time.Duration, more int64) {
	t.Helper()
	base := s.received.Load()
	testkit.Eventually(t, deadline, "the TCP transfer goes on", func() error {
		if err := s.Err(); err != nil {
			return err // a reset does not heal: Eventually reports it at its deadline
		}
		if got := s.received.Load() - base; got <= more {
			return fmt.Errorf("%d bytes since", got)
		}
		return nil
	})
}

// TestHAFailover is the done criteria for remote users and the
// LAN: two real edgegw nodes with keepalived and conntrackd, a stock
// WireGuard user connected to the WAN virtual address, a LAN host whose
// gateway is the LAN virtual address, and a TCP transfer from that host
// through the masquerade to a WAN server. The active node is killed with
// kill -9, then (the old one back, and standby: preemption is off) the
// new active node's WAN link is pulled. After each: the user's ping
// through the tunnel resumes well before a stock client would start a
// handshake by itself (about 15 s: the new active node initiates it, from
// the virtual address), and the transfer goes on without a reset.
func TestHAFailover(t *testing.T) {
	// The device registry both nodes see: one PostgreSQL (reached over its
	// unix socket from every namespace), and one OpenID provider.
	pg := pgtest.Start(t)
	_, store := pg.NewDB(t)
	var op *enrolltest.OP
	l := newHALab(t, func(l *haLab) (string, string) {
		op = startProvider(t, l.user, l.nodes[0].ns, l.nodes[1].ns)
		secret := filepath.Join(t.TempDir(), "web.secret")
		must(t, os.WriteFile(secret, []byte("web-secret\n"), 0o600))
		return fmt.Sprintf(`identity:
  store: %q
  providers:
    - name: corp
      issuer: %s
      client_id: edgegw-web
      client_secret_file: %s
      device_client_id: edgegw-cli
access:
  listen: 0.0.0.0:8443
`, store, op.Issuer, secret), `    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff
          action: allow
          include: [{group: staff}]
`
	})
	const deadline = 30 * time.Second // VRRP needs ~1 s; CI load adds more
	m := l.master(deadline)
	testkit.Eventually(t, deadline, "user pings the LAN host", l.ping)
	if ep := l.userEndpoint(); ep != haWANVIP+":51820" {
		t.Fatalf("the user hears the pair at %s, not the WAN virtual address", ep)
	}
	// Each node reaches the WAN from its own address, the standby too:
	// its Logpush, DNS upstreams and identity provider are out there.
	for i, n := range l.nodes {
		testkit.Eventually(t, deadline, fmt.Sprintf("n%d reaches the WAN server", i+1), func() error { return tcpHello(n.ns, l.wan) })
	}
	testkit.Eventually(t, deadline, "LAN host pings the branch over GRE", l.pingBranch)
	testkit.Eventually(t, deadline, "LAN host pings the branch over IPsec", l.pingSwan)
	// The active node marks the user's session for the peer (conntrackd
	// copies it to the standby).
	testkit.Eventually(t, deadline, "session marked", func() error {
		s, err := l.nodes[m].takeover()
		if err != nil {
			return err
		}
		if s.Marked == 0 {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	st := startStream(t, l)
	st.flowing(t, deadline, 256<<10)

	// failover checks what a failover from node `from` must leave behind.
	enrolls, enrolled := 0, ""
	failover := func(t *testing.T, from int, fail func()) {
		to := 1 - from
		before, err := l.nodes[to].takeover()
		must(t, err)
		start := time.Now()
		fail()
		// A stock client without a new handshake from the pair waits 15 s
		// after its last answer; 10 s leaves CI load room and still shows
		// that the node reached out.
		testkit.Eventually(t, 10*time.Second, "user's ping back", l.ping)
		t.Logf("user's ping back %v after the failure", time.Since(start).Round(10*time.Millisecond))
		// GRE: the tunnel ends on the virtual address; the new active
		// node's health checks find it up again (3 probes at rate high).
		testkit.Eventually(t, 10*time.Second, "GRE branch back", l.pingBranch)
		t.Logf("GRE branch back %v after the failure", time.Since(start).Round(10*time.Millisecond))
		// IPsec: the new active node's charon, which kept retrying IKE
		// from the virtual address while it was not here, now reaches
		// the branch.
		testkit.Eventually(t, 30*time.Second, "IPsec branch back", l.pingSwan)
		t.Logf("IPsec branch back %v after the failure", time.Since(start).Round(10*time.Millisecond))
		after, err := l.nodes[to].takeover()
		must(t, err)
		if after.Takeovers <= before.Takeovers || after.Initiated <= before.Initiated || after.Last == nil {
			t.Errorf("n%d took over without initiating: before %+v, after %+v", to+1, before, after)
		}
		if ep := l.userEndpoint(); ep != haWANVIP+":51820" {
			out, _ := l.nodes[to].ns.Exec(context.Background(), "conntrack", "-L", "-p", "udp")
			t.Errorf("the user hears the pair at %s, not the WAN virtual address; n%d's UDP sessions:\n%s", ep, to+1, out)
		}
		must(t, l.nodes[to].wantRole(ha.RoleMaster)())
		st.flowing(t, deadline, 256<<10)
		// A device enrolls at the virtual address: the new active node
		// answers, and the other node sees the device in the registry.
		enrolls++
		name := fmt.Sprintf("laptop-%d", enrolls)
		out, err := enrollCmd(t, l.user, op, op.Username(), "https://"+haWANVIP+":8443", name, filepath.Join(t.TempDir(), name+".conf"))
		if err != nil {
			t.Fatalf("edgegw enroll at the virtual address: %v\n%s", err, out)
		}
		enrolled = name
	}
	// sees is nil once node i lists the device enrolled last.
	sees := func(i int) func() error {
		return func() error {
			resp, err := l.nodes[i].admin().Get("http://localhost" + enroll.PathDevices)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var devs []enroll.Device
			if err := json.NewDecoder(resp.Body).Decode(&devs); err != nil {
				return err
			}
			for _, d := range devs {
				if d.Name == enrolled {
					return nil
				}
			}
			return fmt.Errorf("n%d lists %d devices, not %s", i+1, len(devs), enrolled)
		}
	}

	// Audit records on both nodes while the receiver refuses them: each
	// node holds its own in its spool, and the active node is killed
	// with them there (once they are written ahead: a crash loses at most
	// the last 500 ms, logpush.Options.SyncInterval). It delivers them
	// when it comes back; the other node delivers its own.
	l.hec.SetDown(true)
	var ids []string
	for _, n := range l.nodes {
		nids := n.audited(t)
		testkit.Eventually(t, deadline, "audit records spooled on "+n.ns.Name(), n.spooled(nids))
		ids = append(ids, nids...)
	}
	ok := t.Run("kill -9", func(t *testing.T) {
		failover(t, m, func() {
			must(t, syscall.Kill(l.nodes[m].proc.Pid(), syscall.SIGKILL))
			<-l.nodes[m].proc.Done()
		})
		// The old active node comes back and stays standby.
		l.nodes[m].start()
		testkit.Eventually(t, deadline, "returning node backup", l.nodes[m].wantRole(ha.RoleBackup))
		testkit.Eventually(t, deadline, "the returning node sees the device enrolled meanwhile", sees(m))
		if got := l.master(deadline); got != 1-m {
			t.Fatalf("n%d took the addresses back", got+1)
		}
		st.flowing(t, deadline, 256<<10)
	})
	l.hec.SetDown(false)
	if !ok {
		return // the roles are unknown
	}
	m = 1 - m

	t.Run("WAN link pulled", func(t *testing.T) {
		// The returning node must have the sessions and their marks
		// (conntrackd's startup resync) before it can take over.
		testkit.Eventually(t, deadline, "marked session synced to the standby", l.marked(1-m))
		failover(t, m, func() { run(t, l.nodes[m].ns, "ip", "link", "set", l.wanLinks[m], "down") })
		run(t, l.nodes[m].ns, "ip", "link", "set", l.wanLinks[m], "up")
		testkit.Eventually(t, deadline, "node with its link back is backup", l.nodes[m].wantRole(ha.RoleBackup))
		testkit.Eventually(t, deadline, "the standby sees the device enrolled meanwhile", sees(m))
		must(t, l.nodes[1-m].wantRole(ha.RoleMaster)())
		st.flowing(t, deadline, 256<<10)
	})
	if err := st.Err(); err != nil {
		t.Fatalf("the TCP transfer broke: %v", err)
	}
	// Nothing lost from Logpush: every audit record of both nodes,
	// including those of the node killed with records in its spool.
	// Senders back off while the receiver is down (doubling from 1 s).
	testkit.Eventually(t, 2*deadline, "audit records delivered", l.delivered(ids))
}

// marked is nil once node i's conntrack table holds the user's WireGuard
// session marked with the user's tunnel address: what a node needs to
// reach the user when it takes over.
func (l *haLab) marked(i int) func() error {
	return func() error {
		out, err := l.nodes[i].ns.Exec(context.Background(), "conntrack", "-L", "-p", "udp", "--dport", "51820", "--dst", haWANVIP)
		if err != nil {
			return fmt.Errorf("conntrack: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "mark="+strconv.FormatUint(uint64(tunMark(haUserTun)), 10)) {
			return fmt.Errorf("no marked session on n%d: %s", i+1, out)
		}
		return nil
	}
}

// tcpHello opens a TCP connection from ns to a one-shot server on the WAN
// server's address and reads its greeting.
func tcpHello(ns, wan *netlab.NS) error {
	ln, err := wan.Listen("tcp", haServer+":0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() { // ends when the listener closes
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello\n"))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return fmt.Errorf("%s: %w", ns, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello\n" {
		return fmt.Errorf("%s: read %q, %v", ns, b, err)
	}
	return nil
}

// forwardTo makes the test process's TCP address to reachable at addr
// inside ns (a receiver in the test process, seen on a lab network).
func forwardTo(t testing.TB, ns *netlab.NS, addr, to string) {
	ln, err := ns.Listen("tcp", addr)
	must(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() { // the acceptor, until the listener closes
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { // one connection, until either end closes
				defer wg.Done()
				defer c.Close()
				up, err := net.DialTimeout("tcp", to, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
}

// audited makes n audit three events (reloads that change nothing) and
// returns the ids of every audit event the node holds.
func (n *haNode) audited(t testing.TB) []string {
	t.Helper()
	c := n.admin()
	for range 3 {
		resp, err := c.Post("http://localhost/api/v1/reload", "", nil)
		must(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: reload: %s", n.ns, resp.Status)
		}
	}
	resp, err := c.Get("http://localhost/api/v1/audit")
	must(t, err)
	defer resp.Body.Close()
	var entries []struct {
		ID string `json:"id"`
	}
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	if err := json.Unmarshal(body, &entries); err != nil {
		t.Fatalf("%s: /api/v1/audit: %v: %s", n.ns, err, body)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	if len(ids) < 3 {
		t.Fatalf("%s: %d audit events", n.ns, len(ids))
	}
	return ids
}

// spooled is nil once each of ids is in a finished batch of the node's
// Logpush spool (a gzip file; write-ahead segments, "wal-*", are left
// out), where a crash does not lose it.
func (n *haNode) spooled(ids []string) func() error {
	return func() error {
		var all []byte
		dir := filepath.Join(n.dir, "state", "logpush", "audit")
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), "wal-") {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return nil // sent and removed meanwhile
			}
			defer f.Close()
			zr, err := gzip.NewReader(f)
			if err != nil {
				return nil // not a batch (a temporary file being written)
			}
			b, _ := io.ReadAll(zr)
			all = append(all, b...)
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			if !bytes.Contains(all, []byte(id)) {
				return fmt.Errorf("%s: %s not in the spool yet", n.ns, id)
			}
		}
		return nil
	}
}

// admin is a client of the node's admin socket.
func (n *haNode) admin() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(n.dir, "admin.sock"))
		}}}
}

// delivered is nil once the receiver holds an audit_logs record for each
// of ids.
func (l *haLab) delivered(ids []string) func() error {
	return func() error {
		got := map[string]bool{}
		for _, e := range l.hec.Events() {
			var r struct{ ID string }
			if json.Unmarshal(e.Event, &r) == nil {
				got[r.ID] = true
			}
		}
		var missing []string
		for _, id := range ids {
			if !got[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d audit records not delivered: %v", len(missing), len(ids), missing)
		}
		return nil
	}
}

// tunMark is the conntrack mark naming a peer: its tunnel address.
func tunMark(addr string) uint32 {
	b := netip.MustParseAddr(addr).As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// echoFlow is a UDP flow from the remote user through the tunnel to an
// echo on the LAN host, one datagram every 10 ms; the longest gap between
// echoes is how long the user's traffic was gone.
type echoFlow struct {
	mu      sync.Mutex
	replies []time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startUserEcho(tb testing.TB, l *haLab) *echoFlow {
	tb.Helper()
	f := &echoFlow{stop: make(chan struct{})}
	srv, err := l.lan.ListenPacket("udp", haLANHost+":7001")
	must(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.user.DialContext(ctx, "udp", haLANHost+":7001")
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	f.wg.Add(3)
	go func() { // the echo, until its socket closes
		defer f.wg.Done()
		buf := make([]byte, 64)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	go func() { // the user sends every 10 ms until stop
		defer f.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		b := make([]byte, 8)
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			c.Write(b) // a moment without a path is what is measured
		}
	}()
	go func() { // the user records echoes until its socket closes
		defer f.wg.Done()
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				select {
				case <-f.stop:
					return
				default:
					continue // refused while no node holds the address
				}
			}
			f.mu.Lock()
			f.replies = append(f.replies, time.Now())
			f.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		close(f.stop)
		srv.Close()
		c.Close()
		f.wg.Wait()
	})
	return f
}

// gap is the longest time without an echo between from and to.
func (f *echoFlow) gap(from, to time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	last, worst := from, time.Duration(0)
	for _, r := range f.replies {
		if r.Before(from) || r.After(to) {
			continue
		}
		worst = max(worst, r.Sub(last))
		last = r
	}
	return max(worst, to.Sub(last))
}

// BenchmarkHAFailover measures ten failovers of two real edgegw nodes
// (VRRPv3, 300 ms adverts) for each way to fail: "kill", kill -9 of the
// active node's edgegw (its keepalived and conntrackd go with it), which
// then starts again and stays standby; "wan-down", the active node's WAN
// link goes down and comes back. Each round fails the other node.
// Reported, median and worst: the time until the WAN virtual address is
// on the other node; the longest gap in a remote user's UDP flow through
// WireGuard to the LAN (100 datagrams a second: the user's traffic back);
// and the TCP transfers from the LAN host through the masquerade that
// broke (a reset or any error; must be 0). Run with -benchtime 1x.
func BenchmarkHAFailover(b *testing.B) {
	for _, wan := range []bool{false, true} {
		name := "kill"
		if wan {
			name = "wan-down"
		}
		b.Run(name, func(b *testing.B) {
			l := newHALab(b, nil)
			const deadline = 30 * time.Second
			active := l.master(deadline)
			testkit.Eventually(b, deadline, "user pings the LAN host", l.ping)
			echo := startUserEcho(b, l)
			steady := func(since time.Time) func() error {
				return func() error {
					if time.Since(since) < time.Second || echo.gap(time.Now().Add(-time.Second), time.Now()) > 100*time.Millisecond {
						return fmt.Errorf("the user's flow is not steady")
					}
					return nil
				}
			}
			testkit.Eventually(b, deadline, "user's flow steady", steady(time.Now()))
			st := startStream(b, l)
			st.flowing(b, deadline, 256<<10)
			resets := 0
			var moved, back []time.Duration
			for range 10 {
				standby := 1 - active
				testkit.Eventually(b, deadline, "the standby has the user's session", l.marked(standby))
				t0 := time.Now()
				if wan {
					run(b, l.nodes[active].ns, "ip", "link", "set", l.wanLinks[active], "down")
				} else {
					must(b, syscall.Kill(l.nodes[active].proc.Pid(), syscall.SIGKILL))
				}
				var t1 time.Time
				testkit.Eventually(b, deadline, "VIP moved", func() error {
					if err := l.nodes[standby].wantVIP(true)(); err != nil {
						return err
					}
					t1 = time.Now()
					return nil
				})
				moved = append(moved, t1.Sub(t0))
				testkit.Eventually(b, deadline, "user's flow back", steady(t1))
				back = append(back, echo.gap(t0, time.Now()))
				if err := st.Err(); err != nil {
					resets++
					b.Logf("transfer broke: %v", err)
					st = startStream(b, l)
				}
				st.flowing(b, deadline, 256<<10)
				if st.Err() != nil {
					b.Fatalf("a new transfer does not flow: %v", st.Err())
				}
				if wan {
					run(b, l.nodes[active].ns, "ip", "link", "set", l.wanLinks[active], "up")
				} else {
					<-l.nodes[active].proc.Done()
					l.nodes[active].start()
				}
				testkit.Eventually(b, deadline, "failed node back as standby", l.nodes[active].wantRole(ha.RoleBackup))
				active = standby
			}
			report := func(name string, d []time.Duration) {
				slices.Sort(d)
				b.ReportMetric(float64(d[len(d)/2].Milliseconds()), name+"-median-ms")
				b.ReportMetric(float64(d[len(d)-1].Milliseconds()), name+"-worst-ms")
				b.Logf("%s: %v", name, d)
			}
			report("vip-moved", moved)
			report("user-back", back)
			b.ReportMetric(float64(resets), "tcp-resets")
		})
	}
}
