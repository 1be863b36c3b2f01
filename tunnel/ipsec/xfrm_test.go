//go:build linux

package ipsec

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestAllocIfID: an if_id carries edgegw's mark, is the same for the same
// name from run to run, skips ids other tunnels hold, and is never the
// bare mark (low bits 0).
func TestAllocIfID(t *testing.T) {
	a := allocIfID("branch-fra", nil)
	if !ownIfID(a) || a&^ifIDMask == 0 {
		t.Fatalf("if_id %#x lacks edgegw's mark or tunnel bits", a)
	}
	if b := allocIfID("branch-fra", map[uint32]bool{}); b != a {
		t.Errorf("not stable: %#x then %#x", a, b)
	}
	if b := allocIfID("branch-fra", map[uint32]bool{a: true}); b == a || !ownIfID(b) {
		t.Errorf("taken id %#x handed out again (%#x)", a, b)
	}
	// Wrap around past 0xffff, skipping the bare mark.
	taken := map[uint32]bool{}
	for low := a & 0xffff; low <= 0xffff; low++ {
		taken[ifIDMark|low] = true
	}
	if b := allocIfID("branch-fra", taken); b != ifIDMark|1 {
		t.Errorf("after wrapping: %#x, want %#x", b, ifIDMark|1)
	}
	if ownIfID(0) || ownIfID(42) {
		t.Error("foreign if_ids taken for edgegw's")
	}
}

// TestConfByBackend: the kernel backend's charon loads no
// kernel-libipsec and installs no routes into xfrm interfaces; the
// userspace one loads kernel-libipsec before kernel-netlink.
func TestConfByBackend(t *testing.T) {
	for _, c := range []struct {
		backend   string
		want, not []string
	}{
		{BackendKernel, []string{"load = random", " kernel-netlink ", "install_routes = no", "install_routes_xfrmi = no"},
			[]string{"kernel-libipsec kernel-netlink", "kernel-libipsec {"}},
		{BackendLibipsec, []string{"kernel-libipsec kernel-netlink", "install_routes = no", "allow_peer_ts = no"},
			[]string{"install_routes_xfrmi"}},
	} {
		path := filepath.Join(t.TempDir(), "strongswan.conf")
		err := writeConf(path, confParams{Plugins: pluginList(c.backend), Backend: c.backend, Socket: "/run/x.vici", Cookie: 10, Block: 5, Table: charonTable})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		for _, w := range c.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s: conf lacks %q:\n%s", c.backend, w, b)
			}
		}
		for _, n := range c.not {
			if strings.Contains(string(b), n) {
				t.Errorf("%s: conf has %q:\n%s", c.backend, n, b)
			}
		}
	}
}

// TestKernelLeftovers (kernel backend): xfrm interfaces, states and
// policies with edgegw's if_ids, as a crashed edgegw and a killed charon
// leave them, are removed when the engine starts; those of others stay.
func TestKernelLeftovers(t *testing.T) {
	if testBackend() != BackendKernel {
		t.Skipf("kernel backend only (this run: %s)", testBackend())
	}
	x := newLab(t)
	key := "0x" + strings.Repeat("11", 20) // AES-GCM-128 key and salt
	for _, c := range []struct{ name, ifID, spi string }{{"branch1", "0x6567abcd", "0x100"}, {"other0", "7", "0x200"}} {
		cmds := [][]string{
			{"link", "add", c.name, "type", "xfrm", "if_id", c.ifID},
			{"xfrm", "state", "add", "src", "203.0.113.10", "dst", "198.51.100.20", "proto", "esp", "spi", c.spi,
				"mode", "tunnel", "aead", "rfc4106(gcm(aes))", key, "128", "if_id", c.ifID},
			{"xfrm", "policy", "add", "dir", "out", "src", "0.0.0.0/0", "dst", "0.0.0.0/0", "if_id", c.ifID,
				"tmpl", "src", "203.0.113.10", "dst", "198.51.100.20", "proto", "esp", "mode", "tunnel"},
		}
		for _, args := range cmds {
			if out, err := x.gwNS.IP(args...); err != nil {
				t.Fatalf("ip %v: %v %s", args, err, out)
			}
		}
	}
	x.startEngine(t)
	if !strings.Contains(x.log.String(), "removed xfrm interfaces, states and policies left by an earlier edgegw") {
		t.Error("removal not logged")
	}
	links, _ := x.gwNS.IP("-d", "link", "show", "type", "xfrm")
	states, _ := x.gwNS.IP("xfrm", "state")
	pols, _ := x.gwNS.IP("xfrm", "policy")
	for what, out := range map[string][]byte{"links": links, "states": states, "policies": pols} {
		if strings.Contains(string(out), "0x6567abcd") {
			t.Errorf("edgegw's leftover %s remain:\n%s", what, out)
		}
		if !strings.Contains(string(out), "if_id 0x7") && !strings.Contains(string(out), "if_id 7") {
			t.Errorf("someone else's %s were removed:\n%s", what, out)
		}
	}
	// The tunnel gets its interface back under its own name.
	x.set(t, x.gwTunnel(t, "leftover-psk-of-20-characters", "", "", false))
	out, err := x.gwNS.IP("-d", "addr", "show", "dev", "branch1")
	if err != nil || !strings.Contains(string(out), "xfrm if_id 0x6567") || !strings.Contains(string(out), "10.200.3.0/31") ||
		!strings.Contains(string(out), "mtu 1450") {
		t.Errorf("branch1's xfrm interface: %v\n%s", err, out)
	}
	if st := x.status("branch1"); st.Backend != BackendKernel || st.Device != "branch1" || st.MTU != 1450 {
		t.Errorf("status: backend %q device %q mtu %d", st.Backend, st.Device, st.MTU)
	}
}

// TestKernelECMP (kernel backend): two IPsec tunnels to two branches, each
// on its own xfrm interface, carry one prefix together through a
// multipath route, which kernel-libipsec's shared device cannot do.
// Flows to the branch LAN leave through both tunnels' SAs.
func TestKernelECMP(t *testing.T) {
	if testBackend() != BackendKernel {
		t.Skipf("kernel backend only (this run: %s)", testBackend())
	}
	x := newLab(t)
	br2, err := x.l.NS("br2")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.l.Link(br2, "eth0", "192.0.2.30/24", x.wan, "tobr2", "192.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := br2.Route("default", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := br2.IP("addr", "add", "10.200.4.1/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	// Spread flows by ports too, not only by addresses.
	if err := x.gwNS.Sysctl("net.ipv4.fib_multipath_hash_policy", "1"); err != nil {
		t.Fatal(err)
	}
	x.startEngine(t)
	t1 := x.gwTunnel(t, "ecmp-psk-of-20-characters", "", "", false)
	t2 := t1
	t2.Name, t2.Remote, t2.RemoteID = "branch2", netip.MustParseAddr("192.0.2.30"), "fra2.corp.example"
	t2.Address = netip.MustParsePrefix("10.200.4.0/31")
	if err := x.eng.Set([]Tunnel{t1, t2}); err != nil {
		t.Fatal(err)
	}
	x.startBranch(t, branchConf("ecmp-psk-of-20-characters", "aes256gcm16-prfsha256-ecp384", "aes256gcm16-ecp384", true))
	conf2 := strings.NewReplacer("198.51.100.20", "192.0.2.30", "fra.corp.example", "fra2.corp.example",
		"10.200.3.", "10.200.4.").Replace(branchConf("ecmp-psk-of-20-characters", "aes256gcm16-prfsha256-ecp384", "aes256gcm16-ecp384", true))
	startStrongSwan(t, br2, t.TempDir(), conf2)
	x.waitUp(t, "branch1", 20*time.Second)
	x.waitUp(t, "branch2", 20*time.Second)
	if d1, d2 := x.eng.Device("branch1"), x.eng.Device("branch2"); d1 != "branch1" || d2 != "branch2" {
		t.Fatalf("devices %q %q, want one per tunnel", d1, d2)
	}
	if out, err := x.gwNS.IP("route", "replace", "10.20.0.0/16", "nexthop", "dev", "branch1", "nexthop", "dev", "branch2"); err != nil {
		t.Fatalf("multipath route: %v %s", err, out)
	}
	before1, before2 := x.status("branch1").PacketsOut, x.status("branch2").PacketsOut
	// 64 UDP flows (one datagram each) from the office LAN.
	err = x.lan.Do(func() error {
		for port := 1000; port < 1064; port++ {
			c, err := net.Dial("udp4", fmt.Sprintf("10.20.0.2:%d", port))
			if err != nil {
				return err
			}
			c.Write([]byte("ecmp"))
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	netlab.Eventually(t, 10*time.Second, "flows through both tunnels", func() error {
		p1, p2 := x.status("branch1").PacketsOut-before1, x.status("branch2").PacketsOut-before2
		if p1 == 0 || p2 == 0 || p1+p2 < 64 {
			return fmt.Errorf("packets out: branch1 %d, branch2 %d", p1, p2)
		}
		t.Logf("64 flows: %d through branch1, %d through branch2", p1, p2)
		return nil
	})
}
