package wireguard

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

func TestPeerMark(t *testing.T) {
	for _, tc := range []struct {
		allowed []netip.Prefix
		mark    uint32
		ok      bool
	}{
		{pfx("100.96.0.10/32"), 0x6460000a, true},
		{pfx("10.20.0.0/24", "fd00::7/128", "100.96.0.11/32"), 0x6460000b, true},
		{pfx("fd00::7/128"), 0, false},
		{nil, 0, false},
	} {
		m, ok := peerMark(tc.allowed)
		if m != tc.mark || ok != tc.ok {
			t.Errorf("peerMark(%v) = %#x, %v; want %#x, %v", tc.allowed, m, ok, tc.mark, tc.ok)
		}
		if ok && markAddr(m) != tc.allowed[len(tc.allowed)-1].Addr() {
			t.Errorf("markAddr(%#x) = %v", m, markAddr(m))
		}
	}
}

// TestTakeover plays a failover on one gateway namespace, whose conntrack
// table stands for the one conntrackd keeps in step on both nodes: a
// device holding the virtual address marks a stock client's session with
// the client's tunnel address; the address goes, the device is replaced by
// one without sessions (the other node), the address comes back, and the
// new device completes a handshake with the silent client by itself,
// answered at the virtual address.
//
// Over IPv4 and over IPv6: a client whose endpoint is the pair's virtual
// IPv6 address is marked and taken over from it (the IPv4 address, which
// keepalived moves with it, is what the Takeover follows).
func TestTakeover(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testTakeover(t, false) })
	t.Run("IPv6", func(t *testing.T) { testTakeover(t, true) })
}

func testTakeover(t *testing.T, v6 bool) {
	l := newLab(t)
	testkit.NeedTool(t, "nft", "nftables")
	gwIf, clIf := "wgt"+l.suffix, "wgu"+l.suffix
	const port, clientPort = 51890, 51891
	vip := netip.MustParseAddr("192.0.2.10")
	veth := "va" + l.suffix
	// Conntrack runs in a namespace only once a ruleset needs it.
	l.mustExec(l.a, "nft", "add table inet tk; add chain inet tk in { type filter hook input priority 0; ct state established accept; }")
	vip6 := netip.MustParseAddr("2001:db8:2::10")
	// The address the client sends to; with v6, the virtual IPv6 address
	// (and the IPv4 one, which moves with it, unused by the client).
	target, vip6cfg := vip, netip.Addr{}
	if v6 {
		target, vip6cfg = vip6, vip6
		l.ip("-n", l.a, "addr", "add", "2001:db8:2::1/64", "dev", veth, "nodad")
		l.ip("-n", l.b, "addr", "add", "2001:db8:2::2/64", "dev", "vb"+l.suffix, "nodad")
	}
	addVIPs := func(op string) {
		l.ip("-n", l.a, "addr", op, vip.String()+"/24", "dev", veth)
		if v6 && op == "add" {
			// keepalived adds them one by one: the IPv6 address may
			// arrive polls after the IPv4 one (as it did in the VM).
			time.Sleep(200 * time.Millisecond)
		}
		if v6 {
			args := []string{"-n", l.a, "addr", op, vip6.String() + "/64", "dev", veth}
			if op == "add" {
				args = append(args, "nodad")
			}
			l.ip(args...)
		}
	}
	addVIPs("add")

	clientPriv, _ := GeneratePrivateKey()
	laptop := Peer{Name: "dev_laptop", PublicKey: clientPriv.PublicKey(), AllowedIPs: pfx("100.96.0.10/32")}
	src := &mapSource{peers: map[Key]Peer{laptop.PublicKey: laptop}}
	lookup := func(a netip.Addr) (Peer, bool) {
		src.mu.Lock()
		defer src.mu.Unlock()
		for _, p := range src.peers {
			if m, ok := peerMark(p.AllowedIPs); ok && markAddr(m) == a {
				return p, true
			}
		}
		return Peer{}, false
	}
	cfg := Config{Interface: gwIf, ListenPort: port, Address: netip.MustParsePrefix("100.96.0.1/12")}
	stateDir := t.TempDir()
	start := func() (*Device, *Takeover) {
		var d *Device
		var err error
		l.inNetns(l.a, func() { d, err = New(cfg, Options{StateDir: stateDir, Logger: testLogger(t), KeepSource: true}) })
		if err != nil {
			t.Fatal(err)
		}
		d.SetPeerSource(src)
		// From the test's namespace: the Takeover uses the device's.
		tk, err := d.FollowTakeover(TakeoverConfig{VIP: vip, VIP6: vip6cfg, Lookup: lookup, MarkEvery: 200 * time.Millisecond, Poll: 50 * time.Millisecond})
		if err != nil {
			d.Close()
			t.Fatal(err)
		}
		return d, tk
	}
	d, tk := start()
	defer func() {
		tk.Close()
		d.Close()
	}()
	// It holds the address from the start: a takeover with no sessions.
	testkit.Eventually(t, 10*time.Second, "first takeover", func() error {
		if s := tk.Stats(); s.Takeovers != 1 || s.Initiated != 0 {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})

	l.startStockClient(l.b, clIf)
	conf := filepath.Join(t.TempDir(), "client.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = %d\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = 100.96.0.0/12\n",
		clientPriv, clientPort, d.PublicKey(), netip.AddrPortFrom(target, port))), 0o600)
	l.mustExec(l.b, "wg", "setconf", clIf, conf)
	l.mustExec(l.b, "ip", "addr", "add", "100.96.0.10/12", "dev", clIf)
	l.mustExec(l.b, "ip", "link", "set", clIf, "up")
	testkit.Eventually(t, 10*time.Second, "client pings the gateway", func() error { return l.ping(l.b, "100.96.0.1") })
	testkit.Eventually(t, 10*time.Second, "session marked", func() error {
		if s := tk.Stats(); s.Marked == 0 || s.Errors != 0 {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	// While it holds the address, what has no sticky source leaves from it.
	if a := d.bind.defaultSrc.Load(); a == nil || *a != vip {
		t.Errorf("default source %v while holding %v", a, vip)
	}
	if a := d.bind.defaultSrc6.Load(); v6 && (a == nil || *a != vip6) || !v6 && a != nil {
		t.Errorf("default IPv6 source %v (v6 %v)", a, v6)
	}

	// Failover: the address leaves, the other node (a new device, no
	// sessions) gets it back.
	addVIPs("del")
	// The node that gave the address up drops its sessions: its
	// wireguard-go must not retry handshakes from its own address.
	testkit.Eventually(t, 10*time.Second, "sessions dropped", func() error {
		if s := tk.Stats(); s.Released != 1 || len(d.Status().Peers) != 0 {
			return fmt.Errorf("%+v, peers %+v", s, d.Status().Peers)
		}
		return nil
	})
	if a := d.bind.defaultSrc.Load(); a != nil {
		t.Errorf("default source %v after the address left", *a)
	}
	if a := d.bind.defaultSrc6.Load(); a != nil {
		t.Errorf("default IPv6 source %v after the address left", *a)
	}
	tk.Close()
	d.Close()
	d, tk = start()
	if s := tk.Stats(); s.Takeovers != 0 {
		t.Fatalf("a takeover without the address: %+v", s)
	}
	addVIPs("add")
	testkit.Eventually(t, 10*time.Second, "handshake initiated and completed", func() error {
		for _, p := range d.Status().Peers {
			if p.PublicKey == laptop.PublicKey && !p.LastHandshake.IsZero() {
				return nil
			}
		}
		return fmt.Errorf("no handshake: %+v, %+v", tk.Stats(), d.Status().Peers)
	})
	if s := tk.Stats(); s.Takeovers != 1 || s.Initiated != 1 || s.Last == nil || s.Last.Sessions != 1 {
		t.Errorf("takeover stats: %+v", s)
	}
	if ep := strings.Fields(l.mustExec(l.b, "wg", "show", clIf, "endpoints"))[1]; ep != netip.AddrPortFrom(target, port).String() {
		t.Errorf("the client hears the gateway at %s, not the virtual address", ep)
	}
	if err := l.ping(l.a, "100.96.0.10"); err != nil {
		t.Error(err)
	}
}
