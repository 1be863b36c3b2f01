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

// TestSourcedEndpoint: the endpoint Initiate sends through carries the
// chosen source address as wireguard-go reads it back, for both families,
// and a source of the other family is refused.
func TestSourcedEndpoint(t *testing.T) {
	for _, tc := range []struct {
		dst, src string
		ok       bool
	}{
		{"198.51.100.7:51820", "203.0.113.10", true},
		{"[2001:db8::7]:51820", "2001:db8:1::10", true},
		{"[::ffff:198.51.100.7]:51820", "203.0.113.10", true},
		{"198.51.100.7:51820", "2001:db8:1::10", false},
		{"[2001:db8::7]:51820", "203.0.113.10", false},
	} {
		t.Run(tc.dst+" from "+tc.src, func(t *testing.T) {
			ep, err := sourcedEndpoint(netip.MustParseAddrPort(tc.dst), netip.MustParseAddr(tc.src))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if got := ep.SrcIP(); got != netip.MustParseAddr(tc.src) {
				t.Errorf("SrcIP = %v", got)
			}
			if got, want := ep.DstIP(), netip.MustParseAddrPort(tc.dst).Addr().Unmap(); got != want {
				t.Errorf("DstIP = %v, want %v", got, want)
			}
		})
	}
}

// TestInitiateFromVirtualAddress is a gateway that holds a second address
// (an HA pair's virtual one, 192.0.2.10) on its link, and a stock client
// whose Endpoint is that address. The client's own handshakes are answered
// from the virtual address (its endpoint stays there; a reply from the
// gateway's own address would move it). Then, as after a failover, the
// gateway starts over without sessions and initiates itself: the client,
// silent meanwhile, completes the handshake without sending a thing, and
// sees it come from the virtual address.
func TestInitiateFromVirtualAddress(t *testing.T) {
	l := newLab(t)
	gwIf, clIf := "wgv"+l.suffix, "wgk"+l.suffix
	const port, clientPort = 51880, 51881
	vip := netip.MustParseAddr("192.0.2.10")
	l.ip("-n", l.a, "addr", "add", vip.String()+"/24", "dev", "va"+l.suffix)
	clientPriv, _ := GeneratePrivateKey()
	laptop := Peer{Name: "dev_laptop", PublicKey: clientPriv.PublicKey(), AllowedIPs: pfx("100.96.0.10/32")}
	src := &mapSource{peers: map[Key]Peer{laptop.PublicKey: laptop}}
	cfg := Config{Interface: gwIf, ListenPort: port, Address: netip.MustParsePrefix("100.96.0.1/12")}
	stateDir := t.TempDir()
	start := func() *Device {
		var d *Device
		var err error
		l.inNetns(l.a, func() { d, err = New(cfg, Options{StateDir: stateDir, Logger: testLogger(t), KeepSource: true}) })
		if err != nil {
			t.Fatal(err)
		}
		d.SetPeerSource(src)
		return d
	}
	d := start()
	defer func() { d.Close() }()

	l.startStockClient(l.b, clIf)
	conf := filepath.Join(t.TempDir(), "client.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = %d\n[Peer]\nPublicKey = %s\nEndpoint = %s:%d\nAllowedIPs = 100.96.0.0/12\n",
		clientPriv, clientPort, d.PublicKey(), vip, port)), 0o600)
	l.mustExec(l.b, "wg", "setconf", clIf, conf)
	l.mustExec(l.b, "ip", "addr", "add", "100.96.0.10/12", "dev", clIf)
	l.mustExec(l.b, "ip", "link", "set", clIf, "up")
	endpoint := func() string {
		return strings.TrimSpace(strings.Fields(l.mustExec(l.b, "wg", "show", clIf, "endpoints"))[1])
	}

	testkit.Eventually(t, 10*time.Second, "client pings the gateway", func() error { return l.ping(l.b, "100.96.0.1") })
	if ep := endpoint(); ep != fmt.Sprintf("%s:%d", vip, port) {
		t.Fatalf("the gateway answered from %s, not its virtual address", ep)
	}

	// A new device: no session with the client, which sends nothing, and
	// no traffic for it: only the initiation can make the handshake.
	d.Close()
	d = start()
	n, err := d.Initiate(vip, []Target{{Peer: laptop, Endpoint: netip.MustParseAddrPort(fmt.Sprintf("192.0.2.2:%d", clientPort))}})
	if err != nil || n != 1 {
		t.Fatalf("Initiate = %d, %v", n, err)
	}
	testkit.Eventually(t, 10*time.Second, "handshake completed", func() error {
		for _, p := range d.Status().Peers {
			if p.PublicKey == laptop.PublicKey && !p.LastHandshake.IsZero() {
				return nil
			}
		}
		return fmt.Errorf("no handshake with the client: %+v", d.Status().Peers)
	})
	if err := l.ping(l.a, "100.96.0.10"); err != nil {
		t.Error(err)
	}
	if ep := endpoint(); ep != fmt.Sprintf("%s:%d", vip, port) {
		t.Errorf("the initiation came from %s, not the virtual address", ep)
	}
	if s := d.OnDemandStats(); s.Held != 1 || s.Created != 1 {
		t.Errorf("on-demand stats after Initiate: %v", s)
	}

	// A target without an endpoint is named, the others still go out.
	n, err = d.Initiate(vip, []Target{{Peer: laptop}, {Peer: laptop, Endpoint: netip.MustParseAddrPort(fmt.Sprintf("192.0.2.2:%d", clientPort))}})
	if n != 1 || err == nil || !strings.Contains(err.Error(), "no endpoint") {
		t.Errorf("Initiate with a bad target = %d, %v", n, err)
	}
}
