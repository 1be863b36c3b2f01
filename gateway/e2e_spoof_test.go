package gateway_test

import (
	"context"
	bin "encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// rawSender sends hand-made IPv4 packets from a namespace, with whatever
// source address the test wants: an attacker's tool.
type rawSender struct{ fd int }

// newRawSender opens a raw IPv4 socket (IP_HDRINCL) in ns; it stays in
// ns for its life.
func newRawSender(t testing.TB, ns *netlab.NS) *rawSender {
	t.Helper()
	r := &rawSender{fd: -1}
	must(t, ns.Do(func() (err error) {
		r.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}))
	t.Cleanup(func() { unix.Close(r.fd) })
	return r
}

// send writes one IPv4 packet of protocol proto with the transport header
// and payload l4 (its checksum already filled in).
func (r *rawSender) send(src, dst netip.Addr, proto byte, l4 []byte) error {
	pkt := make([]byte, 20+len(l4))
	pkt[0] = 0x45
	bin.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = proto
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	bin.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20], 0))
	copy(pkt[20:], l4)
	for {
		err := unix.Sendto(r.fd, pkt, 0, &unix.SockaddrInet4{Addr: d})
		if err != unix.EINTR {
			return err
		}
	}
}

// syn sends a TCP SYN from src:sport to dst:dport.
func (r *rawSender) syn(src, dst netip.Addr, sport, dport uint16) error {
	tcp := make([]byte, 20)
	bin.BigEndian.PutUint16(tcp[0:], sport)
	bin.BigEndian.PutUint16(tcp[2:], dport)
	bin.BigEndian.PutUint32(tcp[4:], 0x5eed0000|uint32(sport))
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	bin.BigEndian.PutUint16(tcp[14:], 64240)
	bin.BigEndian.PutUint16(tcp[16:], checksum(tcp, pseudo(src, dst, unix.IPPROTO_TCP, len(tcp))))
	return r.send(src, dst, unix.IPPROTO_TCP, tcp)
}

// pseudo is the sum of the IPv4 pseudo header.
func pseudo(src, dst netip.Addr, proto byte, n int) uint32 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	for _, b := range [][4]byte{s, d} {
		sum += uint32(bin.BigEndian.Uint16(b[0:])) + uint32(bin.BigEndian.Uint16(b[2:]))
	}
	return sum + uint32(proto) + uint32(n)
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(bin.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// capture counts, in ns's own netfilter (prerouting, before anything else
// there), the packets that match each named nft expression: what actually
// arrived at that host. It is the test's packet capture.
func capture(t testing.TB, ns *netlab.NS, counters map[string]string) func(name string) uint64 {
	t.Helper()
	var b strings.Builder
	b.WriteString("table inet capture {\n")
	for name := range counters {
		fmt.Fprintf(&b, "\tcounter %s {}\n", name)
	}
	b.WriteString("\tchain pre {\n\t\ttype filter hook prerouting priority -500; policy accept;\n")
	for name, match := range counters {
		fmt.Fprintf(&b, "\t\t%s counter name %s\n", match, name)
	}
	b.WriteString("\t}\n}\n")
	f := filepath.Join(t.TempDir(), "capture.nft")
	must(t, os.WriteFile(f, []byte(b.String()), 0o600))
	run(t, ns, "nft", "-f", f)
	re := regexp.MustCompile(`packets (\d+)`)
	return func(name string) uint64 {
		t.Helper()
		m := re.FindStringSubmatch(run(t, ns, "nft", "list", "counter", "inet", "capture", name))
		if m == nil {
			t.Fatalf("capture counter %s unreadable", name)
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n
	}
}

// spoofedMetric reads edgegw_firewall_spoofed_packets_total for ifc.
func spoofedMetric(t testing.TB, s *site, ifc string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^edgegw_firewall_spoofed_packets_total\{interface="` + regexp.QuoteMeta(ifc) + `"\} (\S+)$`)
	m := re.FindStringSubmatch(s.get("/metrics"))
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestSpoofedTunnelSources forges a remote user's tunnel address from
// every direction an attacker has, with the appliance's loose sysctls
// (ip_forward=1, rp_filter=2), at a LAN port that only that user's group
// may reach:
//
//	user (alice, WireGuard, 100.96.0.10) ── wan ── gw (edgegw) ── lan 10.0.0.5 :22
//	                                         │      │  └─eth2── lan2 10.0.1.5 (a LAN host)
//	             a WAN neighbour (wan itself)┘      └─GRE── bgw (a branch, edgegw at 203.0.113.20)
//
// 200 SYNs with source 100.96.0.10 from the LAN host, 200 from the WAN
// and 200 inside the GRE tunnel from the branch must not reach the
// server, and are counted as spoofed; alice through WireGuard connects.
func TestSpoofedTunnelSources(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	lan2, err := s.lab.NS("lan2")
	must(t, err)
	must(t, s.lab.Link(ra.GW, "eth2", "10.0.1.1/24", lan2, "eth0", "10.0.1.5/24"))
	must(t, lan2.Route("default", "10.0.1.1"))
	bgw, err := s.lab.NS("bgw")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth2", "203.0.113.1/24", bgw, "eth0", "203.0.113.20/24"))
	must(t, bgw.Route("default", "203.0.113.1"))
	// The WAN neighbour routes the office towards the gateway, as a
	// provider's router on the uplink's segment can.
	must(t, ra.WAN.Route("10.0.0.0/24", ra.GWWANAddr.String()))

	key, pub := wgKey(t, ra.User, s.dir, "alice")
	tun := s.lab.ID() + "t"
	gre := func(local, remote, addr, route string) string {
		return fmt.Sprintf(`  gre:
    - name: %s
      local: %s
      remote: %s
      address: %s
routes:
  - prefix: %s
    via: %s
`, tun, local, remote, addr, route, tun)
	}
	must(t, os.WriteFile(s.cfg, []byte(fmt.Sprintf(`appliance:
  name: office
  state_dir: %s/state
interfaces:
  wan: eth0
  lan: [eth1, eth2]
admin:
  listen: 127.0.0.1:9100
  socket: %s/admin.sock
tunnels:
  wireguard:
    interface: %s
    listen_port: 51820
    address: 100.96.0.1/12
    peers:
      - name: alice
        public_key: %q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [engineering]
%sfirewall:
  rules:
    - id: ssh-engineering-only
      expression: tcp.dstport == 22 and not identity.groups contains "engineering"
      action: block
`, s.dir, s.dir, s.wgIf, pub, gre("198.51.100.2", "203.0.113.20", "10.200.1.0/31", "10.20.0.0/16"))), 0o600))
	bcfg := filepath.Join(s.dir, "branch.yaml")
	must(t, os.WriteFile(bcfg, []byte(fmt.Sprintf(`appliance:
  name: branch
  state_dir: %s/branch
interfaces:
  wan: eth0
admin:
  socket: %s/branch-admin.sock
tunnels:
%s`, s.dir, s.dir, gre("203.0.113.20", "198.51.100.2", "10.200.1.1/31", "10.0.0.0/24"))), 0o600))

	// What reaches the office server: forged SYNs carry source ports
	// 1000-1999, the controls 2000-2999. (A forged SYN that got through
	// would also draw a RST from alice's real host, with the same ports:
	// only SYNs are counted.)
	got := capture(t, ra.LAN, map[string]string{
		"forged":  "ip saddr 100.96.0.10 tcp dport 22 tcp sport 1000-1999 tcp flags & (syn | ack | rst) == syn",
		"control": "tcp sport 2000-2999",
	})
	server := ra.ServerAddr
	alice := netip.MustParseAddr("100.96.0.10")
	fromLAN, fromWAN, fromBranch := newRawSender(t, lan2), newRawSender(t, ra.WAN), newRawSender(t, bgw)
	forge := func(r *rawSender, sport uint16, n int) {
		t.Helper()
		for i := range n {
			must(t, r.syn(alice, server, sport+uint16(i), 22))
		}
	}

	// Control, before edgegw runs: the gateway forwards (ip_forward=1,
	// as the appliance did) and the forged packets are well-formed: they
	// arrive.
	forge(fromLAN, 1000, 5)
	forge(fromWAN, 1100, 5)
	netlab.Eventually(t, 5*time.Second, "forged SYNs arrive with no edgegw", func() error {
		if n := got("forged"); n != 10 {
			return fmt.Errorf("%d of 10 arrived", n)
		}
		return nil
	})
	before := got("forged")

	s.start()
	branch, err := bgw.Start(binary, "run", "--config", bcfg)
	must(t, err)
	t.Cleanup(func() { branch.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := branch.WaitOutput(ctx, "edgegw is up"); err != nil {
		t.Fatalf("branch did not start: %v\n%s", err, branch.Output())
	}
	// edgegw made reverse-path filtering strict on its WireGuard
	// interface, LAN and WAN (conf/all 1), loose for tunnels it makes.
	for ifc, want := range map[string]string{"all": "1", "default": "2", s.wgIf: "1", "eth0": "1", "eth1": "1", "eth2": "1", tun: "2"} {
		if got := strings.TrimSpace(run(t, ra.GW, "cat", "/proc/sys/net/ipv4/conf/"+ifc+"/rp_filter")); got != want {
			t.Errorf("rp_filter of %s = %s, want %s", ifc, got, want)
		}
	}
	// The appliance's loose reverse-path filter on every interface, so
	// that only the firewall stands between the forgeries and the server
	// (edgegw made the WireGuard interface, LAN and WAN strict).
	for _, ifc := range []string{"all", "default", "eth0", "eth1", "eth2", s.wgIf, tun} {
		must(t, ra.GW.Sysctl("net.ipv4.conf."+ifc+".rp_filter", "2"))
	}
	must(t, ra.GW.Sysctl("net.ipv4.ip_forward", "1"))

	s.client(ra.User, s.lab.ID()+"u", "alice", key)
	netlab.Eventually(t, 15*time.Second, "alice reaches the server", func() error { return ra.User.Ping(server.String()) })
	echoServer(t, ra.LAN, ":22")
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", server.String()+":22")
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("alice (engineering) through WireGuard to port 22: %v", err)
	}
	// The branch reaches the office through GRE with its own addresses
	// (a control for the path the forgery takes).
	branchAddr := netip.MustParseAddr("10.20.0.77")
	netlab.Eventually(t, 15*time.Second, "GRE tunnel carries the branch's packets", func() error {
		if err := fromBranch.syn(branchAddr, server, 2000, 80); err != nil {
			return err
		}
		if got("control") == 0 {
			return fmt.Errorf("no control SYN from the branch arrived")
		}
		return nil
	})

	forge(fromLAN, 1000, 200)
	forge(fromWAN, 1200, 200)
	forge(fromBranch, 1400, 200)
	netlab.Eventually(t, 10*time.Second, "600 forged SYNs counted as spoofed", func() error {
		if n := spoofedMetric(t, s, s.wgIf); n < 600 {
			return fmt.Errorf("edgegw_firewall_spoofed_packets_total{interface=%q} = %v", s.wgIf, n)
		}
		return nil
	})
	if n := got("forged") - before; n != 0 {
		t.Errorf("%d of 600 SYNs forged with alice's tunnel address reached the server", n)
	}
	if err := dial(); err != nil {
		t.Errorf("alice after the attack: %v", err)
	}
}
