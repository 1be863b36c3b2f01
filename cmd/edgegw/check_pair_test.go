package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// pairTemplate is one node's file of a pair, rendered per node as an
// admin would: NAME, WAN, PRIO and PEER vary; the rest is the pair's.
const pairTemplate = `appliance:
  name: NAME
  state_dir: DIR/NAME
interfaces:
  wan: WAN
  lan: [eth1]
identity:
  store: postgres://edgegw@db.corp.example:5432/edgegw?sslmode=verify-full
tunnels:
  wireguard:
    interface: wg0
    address: 100.96.0.1/16
    listen_port: 51820
    private_key_file: WGKEY
firewall:
  lists:
    admins: [10.0.0.0/28]
  rules:
    - id: no-telnet
      expression: tcp.dstport == 23
      action: block
gateway:
  dns:
    listen: [10.0.0.1:53]
    upstreams: [9.9.9.9:53]
    policies:
      - id: block-ads
        expression: dns.fqdn == "ads.example"
        action: block
logpush:
  - name: flows
    dataset: network_analytics_logs
    destination: file://DIR/NAME-spool-out
ha:
  priority: PRIO
  peer: PEER
  interface: sync0
  vrid: 51
  preempt: false
  auth_key_file: HAKEY
  virtual_addresses:
    wan: [203.0.113.10/24]
    lan: [10.0.0.1/24]
`

// at is the position of the value of the first line containing key (or
// starting with it, for a key that starts with ^): the column where value
// starts on it.
func at(t *testing.T, text, key, value string) string {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if k, ok := strings.CutPrefix(key, "^"); ok && strings.HasPrefix(l, k) || !ok && strings.Contains(l, key) {
			c := strings.Index(l, value)
			if c < 0 {
				t.Fatalf("line %q lacks %q", l, value)
			}
			return fmt.Sprintf("%d:%d", i+1, c+1)
		}
	}
	t.Fatalf("no line contains %q", key)
	return ""
}

func TestCheckPair(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func(name string) (string, string) {
		k, err := wireguard.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return write(name, k.String()+"\n"), k.PublicKey().String()
	}
	wgKey, wgPub := key("wg.key")
	otherKey, otherPub := key("wg-other.key")
	haKey := write("ha.key", "s3cr3tpw\n")
	otherHAKey := write("ha-other.key", "other-pw\n")
	render := func(name, wan, prio, peer string) string {
		return strings.NewReplacer("NAME", name, "WAN", wan, "PRIO", prio, "PEER", peer,
			"DIR", dir, "WGKEY", wgKey, "HAKEY", haKey).Replace(pairTemplate)
	}
	textA := render("gw-a", "eth0", "200", "10.255.0.2")
	textB := render("gw-b", "wan0", "100", "10.255.0.1") // interface names may differ
	a := write("node-a.yaml", textA)

	tests := []struct {
		name   string
		b      string // node B's text
		skip   bool
		code   int
		stdout string
		errs   []string // substrings of stderr, each a reported problem
		never  []string // never in the output: secrets
	}{
		{name: "agree", b: textB, code: 0, stdout: "pair: the halves agree (digest "},
		{name: "agree without files", b: textB, skip: true, code: 0, stdout: "file contents not compared (--skip-files)"},
		{name: "equal priorities, preempt off", b: strings.Replace(textB, "priority: 100", "priority: 200", 1), code: 0, stdout: "agree"},
		{name: "vrid", b: strings.Replace(textB, "vrid: 51", "vrid: 52", 1), code: 1, errs: []string{
			"node-a.yaml:" + at(t, textA, "vrid:", "51") + ": ha.vrid: 51 here, 52 in " + dir + "/node-b.yaml:" + at(t, textA, "vrid:", "51")}},
		{name: "virtual address", b: strings.Replace(textB, "203.0.113.10/24", "203.0.113.11/24", 1), code: 1, errs: []string{
			":" + at(t, textA, "wan: [203", "[203") + ": ha.virtual_addresses.wan: [203.0.113.10/24] here, [203.0.113.11/24] in"}},
		{name: "vrrp version defaulted on one side", b: strings.NewReplacer("  vrid: 51\n", "  vrid: 51\n  vrrp_version: 3\n  advert_interval: 300ms\n",
			"  auth_key_file: "+haKey+"\n", "").Replace(textB), code: 1, errs: []string{
			// not in node A's file: reported at its ha: section
			"node-a.yaml:" + at(t, textA, "priority:", "priority") + ": ha.vrrp_version: 2 here, 3 in",
			": ha.advert_interval: 1s here, 300ms in",
			"node-a.yaml:" + at(t, textA, "auth_key_file:", "/") + ": ha.auth_key_file: set here but not in " + dir + "/node-b.yaml: both nodes of a pair need it"}},
		{name: "auth key content", b: strings.Replace(textB, haKey, otherHAKey, 1), code: 1,
			errs:  []string{": ha.auth_key_file: the content differs from " + dir + "/node-b.yaml:" + at(t, textA, "auth_key_file:", "/")},
			never: []string{"s3cr3tpw", "other-pw"}},
		{name: "wireguard key", b: strings.Replace(textB, wgKey, otherKey, 1), code: 1, errs: []string{
			":" + at(t, textA, "private_key_file:", "/") + ": tunnels.wireguard.private_key_file: " + wgPub + " here, " + otherPub + " in"}},
		{name: "wireguard key per node", b: strings.Replace(textB, "    private_key_file: "+wgKey+"\n", "", 1), code: 1, errs: []string{
			"node-b.yaml:" + at(t, textA, "interface: wg0", "interface") + ": tunnels.wireguard.private_key_file: a pair answers remote users with one WireGuard key"}},
		{name: "listen port", b: strings.Replace(textB, "listen_port: 51820", "listen_port: 51821", 1), code: 1, errs: []string{
			":" + at(t, textA, "listen_port:", "51820") + ": tunnels.wireguard.listen_port: 51820 here, 51821 in"}},
		{name: "firewall rule", b: strings.Replace(textB, "tcp.dstport == 23", "tcp.dstport == 2323", 1), code: 1, errs: []string{
			":" + at(t, textA, "- id: no-telnet", "-") + ": firewall.rules: differs from " + dir + "/node-b.yaml:" + at(t, textA, "- id: no-telnet", "-") + " (digest "}},
		{name: "firewall list", b: strings.Replace(textB, "10.0.0.0/28", "10.0.0.0/27", 1), code: 1, errs: []string{
			":" + at(t, textA, "admins:", "admins") + ": firewall.lists: differs from"}},
		{name: "dns policy", b: strings.Replace(textB, `action: block
logpush`, `action: allow
logpush`, 1), code: 1, errs: []string{
			":" + at(t, textA, "- id: block-ads", "-") + ": gateway.dns.policies: differs from"}},
		{name: "logpush dataset", b: strings.Replace(textB, "dataset: network_analytics_logs", "dataset: gateway_dns", 1), code: 1, errs: []string{
			":" + at(t, textA, "- name: flows", "-") + ": logpush: datasets [network_analytics_logs] here, datasets [gateway_dns] in"}},
		{name: "registry database", b: strings.Replace(textB, "5432/edgegw?", "5432/other?", 1), code: 1,
			errs:  []string{": identity.store: postgres://db.corp.example:5432/edgegw here, postgres://db.corp.example:5432/other in"},
			never: []string{"edgegw@db"}},
		{name: "sqlite in a pair", b: strings.Replace(textB, "store: postgres://edgegw@db.corp.example:5432/edgegw?sslmode=verify-full", "store: sqlite", 1), code: 1, errs: []string{
			"node-b.yaml:" + at(t, textA, "store:", "postgres") + ": identity.store: a pair needs one device registry both nodes see"}},
		{name: "same peer", b: strings.Replace(textB, "peer: 10.255.0.1", "peer: 10.255.0.2", 1), code: 1, errs: []string{
			"node-a.yaml:" + at(t, textA, "peer:", "10.") + ": ha.peer: 10.255.0.2 is also the peer in"}},
		{name: "equal priorities, preempt on", b: strings.NewReplacer("priority: 100", "priority: 200", "preempt: false", "preempt: true").Replace(textB), code: 1, errs: []string{
			": ha.priority: 200 is also the priority in",
			": ha.preempt: false here, true in"}},
		{name: "not a pair", b: textB[:strings.Index(textB, "ha:\n")], code: 1, errs: []string{
			"node-b.yaml: ha: missing: a file checked with --pair is one node of an HA pair"}},
		{name: "broken half", b: strings.Replace(textB, "vrid: 51", "vrid: 300", 1), code: 1, errs: []string{
			"node-b.yaml:" + at(t, textA, "vrid:", "51") + ": ha.vrid: must be between 1 and 255"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := write("node-b.yaml", tt.b)
			args := []string{"check", "--config", a, "--pair", b}
			if tt.skip {
				args = append(args, "--skip-files")
			}
			var out, errb bytes.Buffer
			code := run(args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, out.String())
			}
			for _, e := range tt.errs {
				if !strings.Contains(errb.String(), e) {
					t.Errorf("stderr lacks %q:\n%s", e, errb.String())
				}
			}
			if n := strings.Count(errb.String(), "\n"); tt.code == 1 && n != len(tt.errs)+1 {
				t.Errorf("%d lines on stderr, want %d problems and the summary:\n%s", n, len(tt.errs), errb.String())
			}
			for _, s := range tt.never {
				if strings.Contains(out.String()+errb.String(), s) {
					t.Errorf("output shows %q:\n%s%s", s, out.String(), errb.String())
				}
			}
		})
	}

	t.Run("same file twice", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"check", "--config", a, "--pair", a}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "is both halves") {
			t.Errorf("exit %d, stderr %s", code, errb.String())
		}
	})
}

// TestCheckPairExample checks a pair made of the whole commented example
// (every section the facts come from: Access, DNS lists, tunnels, BGP,
// Logpush), with its ha: section turned on: the halves agree, and a change
// in the Access section is found.
func TestCheckPairExample(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	on := false
	for _, l := range strings.SplitAfter(string(config.ExampleYAML()), "\n") {
		switch {
		case strings.HasPrefix(l, "#ha:"):
			on = true
		case on && !strings.HasPrefix(l, "#  "):
			on = false
		}
		if on {
			l = l[1:]
		}
		b.WriteString(l)
	}
	text := strings.NewReplacer(
		"store: sqlite", "store: postgres://edgegw@db.corp.example:5432/edgegw?sslmode=verify-full",
		"    listen_port: 51820\n", "    listen_port: 51820\n    private_key_file: /etc/edgegw/wg.key\n",
		"  # cookie_key_file:", "  cookie_key_file:", "  # signing_key_file:", "  signing_key_file:").Replace(b.String())
	if !strings.Contains(text, "\nha:\n  priority: 200") {
		t.Fatalf("the example's ha: section was not turned on:\n%s", text)
	}
	a := filepath.Join(dir, "a.yaml")
	if err := os.WriteFile(a, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	other := strings.NewReplacer("priority: 200 ", "priority: 100 ", "peer: 10.255.0.2", "peer: 10.255.0.1").Replace(text)
	for _, tt := range []struct {
		name, b string
		code    int
		want    string
	}{
		{"agree", other, 0, "pair: the halves agree"},
		{"access app", strings.Replace(other, "upstream: http://10.0.0.5:8080", "upstream: http://10.0.0.6:8080", 1), 1,
			"a.yaml:" + at(t, text, "^  listen: 0.0.0.0:443", "listen") + ": access: differs from"},
		{"no shared access keys", strings.Replace(other, "  cookie_key_file:", "  # cookie_key_file:", 1), 1,
			"access.cookie_key_file: a pair keeps Access sessions across a failover only with the same cookie key on both nodes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bp := filepath.Join(dir, "b.yaml")
			if err := os.WriteFile(bp, []byte(tt.b), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := run([]string{"check", "--skip-files", "--config", a, "--pair", bp}, &out, &errb)
			if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.want) {
				t.Errorf("exit %d (want %d), output lacks %q:\n%s%s", code, tt.code, tt.want, out.String(), errb.String())
			}
		})
	}
}

// TestCheckPairOnNode runs the check inside node A's namespace, whose
// sync0 has 10.255.0.1: there the other file's peer must be that address.
func TestCheckPairOnNode(t *testing.T) {
	lab := netlab.NewT(t)
	na, err := lab.NS("pa")
	if err != nil {
		t.Fatal(err)
	}
	nb, err := lab.NS("pb")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(na, "sync0", "10.255.0.1/30", nb, "sync0", "10.255.0.2/30"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const half = "interfaces:\n  wan: eth0\nha:\n  priority: PRIO\n  peer: PEER\n  interface: sync0\n  virtual_addresses:\n    wan: [203.0.113.10/24]\n"
	render := func(prio, peer string) string {
		return strings.NewReplacer("PRIO", prio, "PEER", peer).Replace(half)
	}
	a := write("a.yaml", render("200", "10.255.0.2"))
	for _, tt := range []struct {
		name, a, b string
		code       int
		want       []string
	}{
		{"peers right", render("200", "10.255.0.2"), render("100", "10.255.0.1"), 0, []string{"pair: the halves agree"}},
		{"other names a stranger", render("200", "10.255.0.2"), render("100", "10.255.0.9"), 1, []string{
			"b.yaml:5:9: ha.peer: 10.255.0.9 is not this node's address on sync0 (10.255.0.1): the other node's peer must name it"}},
		{"this file names itself", render("200", "10.255.0.1"), render("100", "10.255.0.1"), 1, []string{
			"a.yaml:5:9: ha.peer: 10.255.0.1 is also the peer in",
			"a.yaml:5:9: ha.peer: 10.255.0.1 is this host's own address on sync0: name the other node"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			write("a.yaml", tt.a)
			b := write("b.yaml", tt.b)
			var out, errb bytes.Buffer
			code := -1
			if err := na.Do(func() error {
				code = run([]string{"check", "--skip-files", "--config", a, "--pair", b}, &out, &errb)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit %d, want %d:\n%s%s", code, tt.code, out.String(), errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String()+errb.String(), w) {
					t.Errorf("output lacks %q:\n%s%s", w, out.String(), errb.String())
				}
			}
		})
	}
	// Off the node (this process's namespace has no sync0 of the lab's),
	// the same files pass: nothing is read from another host's kernel.
	write("a.yaml", render("200", "10.255.0.2"))
	b := write("b.yaml", render("100", "10.255.0.9"))
	if _, err := os.Stat("/sys/class/net/sync0"); err == nil {
		t.Fatal("this host has a sync0 of its own: the off-node case cannot run here")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--skip-files", "--config", a, "--pair", b}, &out, &errb); code != 0 {
		t.Errorf("off the node: exit %d:\n%s%s", code, out.String(), errb.String())
	}
}
