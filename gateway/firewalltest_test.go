package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

const testPacketYAML = `appliance:
  name: t
interfaces:
  wan: eth0
  lan: [eth1]
tunnels:
  wireguard:
    interface: wg0
    listen_port: 51820
    address: 100.96.0.1/12
    peers:
      - name: alice
        public_key: "hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q="
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [staff]
firewall:
  rules:
    - id: no-ssh
      description: no SSH from the internet
      expression: tcp.dstport == 22 and ingress == "wan"
      action: block
    - id: staff-web
      expression: identity.groups contains "staff" and tcp.dstport == 80
      action: allow
    - id: dns-flood
      expression: udp.dstport == 53
      action: rate_limit
      rate: 100/second
`

func testPacketPlan(t testing.TB) (*config.Config, *Plan) {
	t.Helper()
	cfg, err := config.Parse("edgegw.yaml", []byte(testPacketYAML), config.Options{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := Prepare(cfg, PrepareOptions{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, pl
}

// TestTestPacket: the console's "test a packet" answers the first rule a
// described packet meets and its verdict, after the ingress alias and the
// identity behind the source are filled in as `edgegw firewall test`
// does; none met is allowed; a description that does not parse is the
// caller's error.
func TestTestPacket(t *testing.T) {
	cfg, pl := testPacketPlan(t)
	for _, tc := range []struct {
		name, packet    string
		rule, verdict   string
		rate, packetHas string
		bad             bool
	}{
		{name: "ssh from the internet", packet: `ip.src == 198.51.100.7 and tcp.dstport == 22 and ingress == "wan"`,
			rule: "no-ssh", verdict: "block", packetHas: `ingress == "eth0"`},
		{name: "ssh from the LAN", packet: `ip.src == 10.0.0.9 and tcp.dstport == 22 and ingress == "lan"`, verdict: "allow"},
		{name: "identity from the source", packet: `ip.src == 100.96.0.10 and tcp.dstport == 80`,
			rule: "staff-web", verdict: "allow", packetHas: `identity.email == "alice@corp.example"`},
		{name: "no identity, no match", packet: `ip.src == 100.96.0.11 and tcp.dstport == 80`, verdict: "allow"},
		{name: "rate limit", packet: `ip.src == 10.0.0.9 and udp.dstport == 53`, rule: "dns-flood", verdict: "rate_limit", rate: "100/second"},
		{name: "does not parse", packet: `tcp.dstport ==`, bad: true},
		{name: "unknown field", packet: `tcp.nosuch == 1`, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := TestPacket(cfg, &pl.Firewall, tc.packet)
			if tc.bad {
				if !errors.Is(err, admin.ErrBadPacket) {
					t.Fatalf("err %v, want ErrBadPacket", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict != tc.verdict {
				t.Errorf("verdict %q, want %q", res.Verdict, tc.verdict)
			}
			switch {
			case tc.rule == "" && res.Rule != nil:
				t.Errorf("met %+v, want none", res.Rule)
			case tc.rule != "" && (res.Rule == nil || res.Rule.ID != tc.rule):
				t.Errorf("met %+v, want %s", res.Rule, tc.rule)
			case tc.rate != "" && res.Rule.Rate != tc.rate:
				t.Errorf("rate %q, want %s", res.Rule.Rate, tc.rate)
			}
			if !strings.Contains(res.Packet, tc.packetHas) {
				t.Errorf("packet %q lacks %q", res.Packet, tc.packetHas)
			}
		})
	}
}

// FuzzTestPacket: any description is answered or refused as the caller's
// error, never a panic or another error.
func FuzzTestPacket(f *testing.F) {
	cfg, pl := testPacketPlan(f)
	for _, s := range []string{`ip.src == 100.96.0.10 and tcp.dstport == 80`, `ingress == "wan"`, `tcp.dstport ==`, `ip.src in {10.0.0.0/8}`, `udp.dstport == 53 and ip.ttl == 1`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, desc string) {
		res, err := TestPacket(cfg, &pl.Firewall, desc)
		if err != nil {
			if !errors.Is(err, admin.ErrBadPacket) {
				t.Fatalf("%q: %v", desc, err)
			}
			return
		}
		if res.Verdict == "" || (res.Rule == nil) != (res.Verdict == "allow" && res.Rule == nil) {
			t.Fatalf("%q: %+v", desc, res)
		}
	})
}
