package gateway

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
)

const postureYAML = `
identity:
  providers:
    - name: corp
      issuer: https://sso.corp.example
      client_id: edgegw
      client_secret_file: /nonexistent/secret
access:
  listen: 0.0.0.0:8443
tunnels:
  wireguard:
    interface: wg0
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      policies:
        - name: staff
          action: allow
          include: [{everyone: true}]
posture:
  rules:
    - name: kernel
      type: os_version
      os: linux
      operator: ">="
      version: "6.1"
  quarantine_allow: [192.0.2.80/32]
`

// TestQuarantineRule: with posture:, a block rule goes in front of the
// configured ones; a quarantined device reaches only the gateway's DNS
// and Access port and quarantine_allow; other devices are not affected.
func TestQuarantineRule(t *testing.T) {
	for _, withFirewall := range []bool{false, true} {
		y := postureYAML
		if withFirewall {
			y += `
firewall:
  rules:
    - id: ssh
      expression: tcp.dstport == 22 and not identity.groups contains "engineering"
      action: block
`
		}
		cfg, err := config.Parse("t.yaml", []byte(y), config.Options{SkipFiles: true})
		if err != nil {
			t.Fatal(err)
		}
		pl, err := Prepare(cfg, PrepareOptions{SkipFiles: true})
		if err != nil {
			t.Fatal(err)
		}
		rules := pl.Firewall.Rules.Rules()
		if rules[0].ID != QuarantineRuleID || (withFirewall && (len(rules) != 2 || rules[1].ID != "ssh")) {
			t.Fatalf("rules %+v", rules)
		}
		if withFirewall && len(cfg.Firewall.Rules) != 1 {
			t.Fatal("the configured section was changed")
		}
		for _, tc := range []struct {
			pkt     string
			blocked bool
		}{
			{`identity.groups contains "edgegw:quarantined" and ip.src == 100.96.0.9 and ip.dst == 10.0.0.5 and ip.proto == "icmp"`, true},
			{`identity.groups contains "edgegw:quarantined" and ip.src == 100.96.0.9 and ip.dst == 100.96.0.1 and udp.dstport == 53`, false},
			{`identity.groups contains "edgegw:quarantined" and ip.src == 100.96.0.9 and ip.dst == 100.96.0.1 and tcp.dstport == 8443`, false},
			{`identity.groups contains "edgegw:quarantined" and ip.src == 100.96.0.9 and ip.dst == 100.96.0.1 and tcp.dstport == 22`, true},
			{`identity.groups contains "edgegw:quarantined" and ip.src == 100.96.0.9 and ip.dst == 10.0.0.1 and udp.dstport == 53`, true},
			{`identity.groups contains "edgegw:quarantined" and ip.src == 100.96.0.9 and ip.dst == 192.0.2.80 and tcp.dstport == 443`, false},
			{`identity.groups contains "staff" and ip.src == 100.96.0.9 and ip.dst == 10.0.0.5 and ip.proto == "icmp"`, false},
		} {
			pkt, err := firewall.ParsePacket(tc.pkt)
			if err != nil {
				t.Fatal(err)
			}
			r, ok := pl.Firewall.Match(pkt)
			if got := ok && r.ID == QuarantineRuleID; got != tc.blocked {
				t.Errorf("%s: matched %v %q, want blocked by quarantine %v", tc.pkt, ok, r.ID, tc.blocked)
			}
		}
	}
}

// TestDeviceIdentityQuarantine: a quarantined device loses its email and
// groups to the quarantine group, only when posture is on; a provider
// group named like the quarantine group never reaches the sets.
func TestDeviceIdentityQuarantine(t *testing.T) {
	d := identity.Device{Email: "a@corp.example", Groups: []string{"eng", QuarantineGroup}, Address: netip.MustParseAddr("100.96.0.9")}
	if e, g := deviceIdentity(d, true); e != "a@corp.example" || !slices.Equal(g, []string{"eng"}) {
		t.Errorf("compliant device: %q %v", e, g)
	}
	d.Quarantined = true
	if e, g := deviceIdentity(d, true); e != "" || !slices.Equal(g, []string{QuarantineGroup}) {
		t.Errorf("quarantined device: %q %v", e, g)
	}
	if e, g := deviceIdentity(d, false); e != "a@corp.example" || !slices.Equal(g, []string{"eng"}) {
		t.Errorf("posture off: %q %v", e, g)
	}
	if !slices.Equal(d.Groups, []string{"eng", QuarantineGroup}) {
		t.Error("the snapshot's groups were modified")
	}
}
