package gateway_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestFirewallThroughGateway enforces Magic-Firewall rules on traffic from
// a remote WireGuard user to the office: an identity rule (the user's
// groups, from the peer's config), a list, and rule counters, with reloads
// that change list contents and identities without re-applying rules.
func TestFirewallThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	key, pub := wgKey(t, ra.User, s.dir, "alice")
	peer := func(groups string) {
		s.peers = []string{fmt.Sprintf(`
      - name: alice
        public_key: %q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [%s]`, pub, groups)}
	}
	rules := func(blocked string) {
		s.extras = fmt.Sprintf(`firewall:
  lists:
    blocked: [%s]
  rules:
    - id: drop-blocked
      expression: ip.src in $blocked
      action: block
    - id: ssh-engineering
      expression: tcp.dstport == 22 and not identity.groups contains "engineering"
      action: block
`, blocked)
	}
	peer("it-ops")
	rules("192.0.2.200/32")
	s.writeConfig()
	s.start()
	s.client(ra.User, s.lab.ID()+"u", "alice", key)
	echoServer(t, ra.LAN, ":22")
	echoServer(t, ra.LAN, ":80")

	dial := func(port string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", "10.0.0.5:"+port)
		if err == nil {
			c.Close()
		}
		return err
	}
	netlab.Eventually(t, 15*time.Second, "tunnel up", func() error { return ra.User.Ping("10.0.0.5") })
	if err := dial("80"); err != nil {
		t.Fatalf("port 80 should pass: %v", err)
	}
	if err := dial("22"); err == nil {
		t.Fatal("alice (it-ops) reached SSH; rule ssh-engineering should block her")
	}
	if n := counter(t, s, "ssh-engineering"); n == 0 {
		t.Error("the ssh-engineering counter did not move")
	}

	// alice joins engineering: an identity change, applied in place.
	peer("it-ops, engineering")
	s.writeConfig()
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	netlab.Eventually(t, 5*time.Second, "SSH after joining engineering", func() error { return dial("22") })

	// Her address lands on the blocked list: a list update, in place.
	rules("192.0.2.200/32, 100.96.0.10/32")
	s.writeConfig()
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 2)
	if !strings.Contains(s.proc.Output(), "firewall list updated in place") {
		t.Error("the list change was not applied in place")
	}
	netlab.Eventually(t, 5*time.Second, "blocked after the list update", func() error {
		if ra.User.Ping("10.0.0.5") == nil {
			return fmt.Errorf("ping still passes")
		}
		return nil
	})
	if n := counter(t, s, "drop-blocked"); n == 0 {
		t.Error("the drop-blocked counter did not move")
	}
}

func counter(t *testing.T, s *site, rule string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^edgegw_firewall_rule_packets_total\{rule="` + regexp.QuoteMeta(rule) + `"\} (\S+)$`)
	m := re.FindStringSubmatch(s.get("/metrics"))
	if m == nil {
		t.Fatalf("no counter for rule %s", rule)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestFirewallLANAndWAN enforces rules written with the ingress aliases
// "wan" and "lan" (interfaces.wan eth0, interfaces.lan [eth1]) on TCP, UDP
// and ICMP: from the internet towards the office (the wan namespace routes
// the office network to the gateway, as a routed office prefix would be)
// and from the office towards the internet (masqueraded on the WAN).
func TestFirewallLANAndWAN(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	s.extras = `firewall:
  rules:
    - id: wan-no-ssh
      expression: ingress == "wan" and tcp.dstport == 22
      action: block
    - id: wan-no-dns
      expression: ingress == "wan" and udp.dstport == 53
      action: block
    - id: wan-no-ping-office
      expression: ingress == "wan" and icmp.type == 8 and ip.dst == 10.0.0.0/24
      action: block
    - id: lan-no-telnet
      expression: ingress == "lan" and tcp.dstport == 23
      action: block
    - id: lan-no-udp-9999
      expression: ingress == "lan" and udp.dstport == 9999
      action: block
    - id: lan-no-ping-user
      expression: ingress == "lan" and icmp.type == 8 and ip.dst == 192.0.2.2
      action: block
    - id: not-lan-telnet
      expression: ingress != "lan" and tcp.dstport == 2323
      action: block
`
	s.writeConfig()
	s.start()
	must(t, ra.WAN.Route("10.0.0.0/24", ra.GWWANAddr.String()))

	// Servers: TCP and UDP on the office server and on the remote host.
	for _, port := range []string{":22", ":80", ":2323"} {
		echoServer(t, ra.LAN, port)
	}
	for _, port := range []string{":23", ":80", ":2323"} {
		echoServer(t, ra.User, port)
	}
	tcpOK := func(from *netlab.NS, addr string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := from.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	udpOK := func(from, to *netlab.NS, host, port string) bool {
		pc, err := to.ListenPacket("udp", ":"+port)
		must(t, err)
		defer pc.Close()
		c, err := from.DialContext(context.Background(), "udp", host+":"+port)
		must(t, err)
		defer c.Close()
		buf := make([]byte, 64)
		for range 3 { // a first datagram may wait for ARP
			if _, err := c.Write([]byte("hello")); err != nil {
				return false
			}
			_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, _, err := pc.ReadFrom(buf); err == nil {
				return true
			}
		}
		return false
	}
	netlab.Eventually(t, 10*time.Second, "office reachable from the internet", func() error {
		return ra.User.Ping("198.51.100.2")
	})
	cases := []struct {
		name string
		ok   func() bool
		want bool
	}{
		{"wan tcp 80 to office", func() bool { return tcpOK(ra.User, "10.0.0.5:80") }, true},
		{"wan tcp 22 to office", func() bool { return tcpOK(ra.User, "10.0.0.5:22") }, false},
		{"wan tcp 2323 (not lan)", func() bool { return tcpOK(ra.User, "10.0.0.5:2323") }, false},
		{"wan udp 54 to office", func() bool { return udpOK(ra.User, ra.LAN, "10.0.0.5", "54") }, true},
		{"wan udp 53 to office", func() bool { return udpOK(ra.User, ra.LAN, "10.0.0.5", "53") }, false},
		{"wan ping gateway", func() bool { return ra.User.Ping("198.51.100.2") == nil }, true},
		{"wan ping office", func() bool { return ra.User.Ping("10.0.0.5") == nil }, false},
		{"lan tcp 80 to internet", func() bool { return tcpOK(ra.LAN, "192.0.2.2:80") }, true},
		{"lan tcp 2323 to internet", func() bool { return tcpOK(ra.LAN, "192.0.2.2:2323") }, true},
		{"lan tcp 23 to internet", func() bool { return tcpOK(ra.LAN, "192.0.2.2:23") }, false},
		{"lan udp 9998 to internet", func() bool { return udpOK(ra.LAN, ra.User, "192.0.2.2", "9998") }, true},
		{"lan udp 9999 to internet", func() bool { return udpOK(ra.LAN, ra.User, "192.0.2.2", "9999") }, false},
		{"lan ping internet router", func() bool { return ra.LAN.Ping("192.0.2.1") == nil }, true},
		{"lan ping remote host", func() bool { return ra.LAN.Ping("192.0.2.2") == nil }, false},
	}
	for _, tc := range cases {
		if got := tc.ok(); got != tc.want {
			t.Errorf("%s: passed=%v, want %v", tc.name, got, tc.want)
		}
	}
	for _, rule := range []string{"wan-no-ssh", "wan-no-dns", "wan-no-ping-office", "lan-no-telnet",
		"lan-no-udp-9999", "lan-no-ping-user", "not-lan-telnet"} {
		if n := counter(t, s, rule); n == 0 {
			t.Errorf("the %s counter did not move", rule)
		}
	}
	if t.Failed() {
		t.Logf("nft list table inet edgegw:\n%s", run(t, ra.GW, "nft", "list", "table", "inet", "edgegw"))
	}
}
