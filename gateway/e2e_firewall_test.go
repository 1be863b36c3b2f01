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
