package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
)

const firewallConfig = `appliance:
  name: fw-test
  state_dir: /var/lib/edgegw
interfaces:
  wan: eth0
  lan: [eth1, eth2]
tunnels:
  wireguard:
    peers:
      - name: alice
        public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [engineering]
      - name: bob
        public_key: "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
        allowed_ips: [100.96.0.11/32]
        email: bob@corp.example
firewall:
  lists:
    blocked: [192.0.2.0/24]
  rules:
    - id: drop-blocked
      expression: ip.src in $blocked
      action: block
    - id: ssh-engineering
      description: only engineering may reach SSH
      expression: tcp.dstport == 22 and not identity.groups contains "engineering"
      action: block
    - id: ping-limit
      expression: icmp.type == 8 and ingress == "wan"
      action: rate_limit
      rate: 10/second
    - id: office-dns
      expression: udp.dstport == 53 and ingress == "lan"
      action: allow
    - id: no-dns
      expression: udp.dstport == 53
      action: block
netflow:
  sample_rate: 100
`

// firewallCLI runs cmdFirewall and maps its error to an exit status as
// run does.
func firewallCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	err := cmdFirewall(args, &out, &errb)
	var cerrs *config.Errors
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		code = 2
	case errors.As(err, &cerrs):
		fmt.Fprintln(&errb, cerrs.Error())
		code = 1
	default:
		fmt.Fprintln(&errb, "edgegw:", err)
		code = 1
	}
	return code, out.String(), errb.String()
}

func TestFirewallCLI(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgegw.yaml")
	if err := os.WriteFile(cfg, []byte(firewallConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(firewallConfig, "tcp.dstport == 22", "tcp.dstport == abc", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args   []string
		code   int
		stdout []string // substrings, in order
		stderr string   // substring
	}{
		{args: nil, code: 2, stderr: "edgegw firewall test"},
		{args: []string{"--help"}, code: 0, stdout: []string{"edgegw firewall show"}},
		{args: []string{"frob"}, code: 2, stderr: `unknown command "frob"`},
		{args: []string{"test", "--config", cfg}, code: 2, stderr: "Usage: edgegw firewall test"},
		{args: []string{"test", "--bogus", "x"}, code: 2, stderr: "flag provided but not defined"},
		{args: []string{"show", "--config", cfg, "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{args: []string{"test", "--config", cfg, "ip.src == 192.0.2.7 and tcp.dstport == 443"}, code: 0,
			stdout: []string{"packet:  ip.src == 192.0.2.7 and ip.proto == 6 and tcp.dstport == 443", "rule:    drop-blocked (rules[0])\n", "verdict: block\n"}},
		{args: []string{"test", "--config", cfg, "ip.src == 10.0.0.9 and tcp.dstport == 22"}, code: 0,
			stdout: []string{"rule:    ssh-engineering (rules[1]) \"only engineering may reach SSH\"\n", "verdict: block\n"}},
		// alice is in engineering: her peer address carries her identity.
		{args: []string{"test", "--config", cfg, "ip.src == 100.96.0.10 and tcp.dstport == 22"}, code: 0,
			stdout: []string{`identity.email == "alice@corp.example" and identity.groups contains "engineering"`, "rule:    none matched (the default allows)\n", "verdict: allow\n"}},
		{args: []string{"test", "--config", cfg, "ip.src == 100.96.0.11 and tcp.dstport == 22"}, code: 0,
			stdout: []string{`identity.email == "bob@corp.example"`, "rule:    ssh-engineering", "verdict: block\n"}},
		// The description may be several words, and flags may come after it.
		{args: []string{"test", "tcp.dstport", "==", "22", "and", `identity.groups contains "engineering"`, "--config", cfg}, code: 0,
			stdout: []string{"verdict: allow\n"}},
		{args: []string{"test", "--config", cfg, `icmp.type == 8 and ingress == "wan"`}, code: 0,
			stdout: []string{`ingress == "eth0"`, "rule:    ping-limit (rules[2])\n", "verdict: rate_limit 10/second (allowed up to the rate per source address, dropped above it)\n"}},
		{args: []string{"test", "--config", cfg, `icmp.type == 8 and ingress == "eth0"`}, code: 0,
			stdout: []string{"rule:    ping-limit"}},
		{args: []string{"test", "--config", cfg, `icmp.type == 8 and ingress == "eth1"`}, code: 0,
			stdout: []string{"verdict: allow\n"}},
		{args: []string{"test", "--config", cfg, `udp.dstport == 53 and ingress == "eth2"`}, code: 0,
			stdout: []string{"rule:    office-dns (rules[3])\n", "verdict: allow\n"}},
		{args: []string{"test", "--config", cfg, `udp.dstport == 53 and ingress == "lan"`}, code: 0,
			stdout: []string{`ingress == "eth1"`, "rule:    office-dns"}},
		{args: []string{"test", "--config", cfg, `udp.dstport == 53 and ingress == "wg0"`}, code: 0,
			stdout: []string{"rule:    no-dns (rules[4])\n", "verdict: block\n"}},
		{args: []string{"test", "--config", cfg, "tcp.dstport == abc"}, code: 2, stderr: "expected port number"},
		{args: []string{"test", "--config", cfg, "tcp.dstport == 22 or tcp.dstport == 23"}, code: 2, stderr: "or joins conditions"},
		{args: []string{"test", "--config", bad, "tcp.dstport == 22"}, code: 1, stderr: "firewall.rules[1].expression"},
		{args: []string{"test", "--config", "/nonexistent.yaml", "tcp.dstport == 22"}, code: 1, stderr: "no such file"},
		// The built-in default has no rules: everything is allowed.
		{args: []string{"test", "tcp.dstport == 22"}, code: 0, stdout: []string{"verdict: allow\n"}},
		{args: []string{"show", "--config", cfg}, code: 0, stdout: []string{
			"table inet edgegw {",
			`counter r1 { } # rule "ssh-engineering"`,
			`elements = { "lan", "eth1", "eth2" }`,
			`elements = { "wan", "eth0" }`,
			"numgen random mod 100 0 goto s_rules",
			`tcp dport 22 jump r1`,
			`log prefix "ef/0/a" group 6100 accept`,
			`oifname "eth0" counter masquerade`,
		}},
		{args: []string{"show", "--config", bad}, code: 1, stderr: "expected port number"},
		{args: []string{"show"}, code: 0, stdout: []string{"# interfaces.wan is not set", "chain postrouting"}},
		// What show prints is what the gateway applies: the anti-spoofing
		// stage for the WireGuard prefix is in it (gateway.FirewallSpec).
		{args: []string{"show"}, code: 0, stdout: []string{
			"elements = { 100.96.0.0-100.111.255.255 : jump spoof_0 }",
			`counter name "spoof_0" drop`,
		}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := firewallCLI(tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errs)
			}
			rest := out
			for _, want := range tt.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("stdout lacks %q (in order):\n%s", want, out)
					break
				}
				rest = rest[i+len(want):]
			}
			if !strings.Contains(errs, tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, errs)
			}
		})
	}
}
