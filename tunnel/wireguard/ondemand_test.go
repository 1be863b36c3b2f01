package wireguard

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// mapSource is a PeerSource over a map, as the gateway's registry view is.
type mapSource struct {
	mu    sync.Mutex
	peers map[Key]Peer
}

func (s *mapSource) OnDemandPeer(k Key) (Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[k]
	return p, ok
}

// TestOnDemandPeers: a device with no configured peers accepts a stock
// client that its PeerSource knows, creating the peer on the client's
// first initiation; refuses one it does not know; drops the peer when the
// source does (a revocation); and reaps it once idle.
func TestOnDemandPeers(t *testing.T) {
	l := newLab(t)
	gwIf, clIf := "wgo"+l.suffix, "wgc"+l.suffix
	const port = 51870
	clientPriv, _ := GeneratePrivateKey()
	laptop := Peer{Name: "dev_laptop", PublicKey: clientPriv.PublicKey(), AllowedIPs: pfx("100.96.0.10/32"), Email: "ops@corp.example"}
	src := &mapSource{peers: map[Key]Peer{laptop.PublicKey: laptop}}
	cfg := Config{Interface: gwIf, ListenPort: port, Address: netip.MustParsePrefix("100.96.0.1/12")}

	baseline := runtime.NumGoroutine()
	var d *Device
	var err error
	l.inNetns(l.a, func() { d, err = New(cfg, Options{StateDir: t.TempDir(), UAPI: true, Logger: testLogger(t)}) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Close()
		noLeak(t, baseline)
	}()
	d.SetPeerSource(src)

	l.startStockClient(l.b, clIf)
	conf := filepath.Join(t.TempDir(), "client.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\n[Peer]\nPublicKey = %s\nEndpoint = 192.0.2.1:%d\nAllowedIPs = 100.96.0.0/12\n",
		clientPriv, d.PublicKey(), port)), 0o600)
	l.mustExec(l.b, "wg", "setconf", clIf, conf)
	l.mustExec(l.b, "ip", "addr", "add", "100.96.0.10/12", "dev", clIf)
	l.mustExec(l.b, "ip", "link", "set", clIf, "up")

	// The first initiation creates the peer and is answered at once: no
	// 5-second retry on the client's side.
	start := time.Now()
	testkit.Eventually(t, 10*time.Second, "client pings the gateway", func() error { return l.ping(l.b, "100.96.0.1") })
	t.Logf("first ping through an on-demand peer after %v", time.Since(start).Round(time.Millisecond))
	if hs := strings.Fields(l.mustExec(l.b, "wg", "show", clIf, "latest-handshakes")); len(hs) != 2 || hs[1] == "0" {
		t.Errorf("client handshakes: %v", hs)
	}
	st := d.Status()
	if len(st.Peers) != 1 || st.Peers[0].Name != "dev_laptop" || st.Peers[0].Email != "ops@corp.example" ||
		st.Peers[0].PublicKey != laptop.PublicKey || st.Peers[0].LastHandshake.IsZero() {
		t.Errorf("Status = %+v", st)
	}
	if err := l.ping(l.a, "100.96.0.10"); err != nil {
		t.Errorf("gateway → client: %v", err)
	}
	if s := d.OnDemandStats(); s.Held != 1 || s.Created != 1 {
		t.Errorf("stats: %v", s)
	}
	if s := d.Status().OnDemand; s.Held != 1 || s.Created != 1 {
		t.Errorf("Status().OnDemand = %v", s)
	}
	if n := testutil.CollectAndCount(d.Collector(), "edgegw_wireguard_ondemand_peers"); n != 1 {
		t.Errorf("%d on-demand gauge series", n)
	}

	// A configuration change keeps the on-demand peer and its session.
	more := cfg
	more.MTU = 1380
	if err := d.Set(more); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.od.held()[laptop.PublicKey]; !ok || len(d.Status().Peers) != 1 {
		t.Fatalf("Set dropped the on-demand peer: %+v", d.Status().Peers)
	}
	if err := l.ping(l.b, "100.96.0.1"); err != nil {
		t.Errorf("after Set: %v", err)
	}

	t.Run("unknown key", func(t *testing.T) {
		stranger, _ := GeneratePrivateKey()
		msg := initiationFrom(t, stranger, d.PublicKey())
		before := d.OnDemandStats().Unknown
		l.inNetns(l.b, func() {
			c, err := net.Dial("udp4", fmt.Sprintf("192.0.2.1:%d", port))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.Write(msg)
		})
		testkit.Eventually(t, 5*time.Second, "unknown initiation counted", func() error {
			if s := d.OnDemandStats(); s.Unknown == before {
				return fmt.Errorf("stats: %v", s)
			}
			return nil
		})
		if s := d.OnDemandStats(); s.Held != 1 {
			t.Errorf("a stranger became a peer: %v", s)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		src.mu.Lock()
		delete(src.peers, laptop.PublicKey)
		src.mu.Unlock()
		d.SetPeerSource(src)
		if out := l.mustExec(l.a, "wg", "show", gwIf, "peers"); strings.TrimSpace(out) != "" {
			t.Errorf("peer still held after the source dropped it: %q", out)
		}
		if s := d.OnDemandStats(); s.Held != 0 || s.Revoked != 1 {
			t.Errorf("stats: %v", s)
		}
		if err := l.ping(l.b, "100.96.0.1"); err == nil {
			t.Error("the revoked client still reaches the gateway")
		}
	})

	t.Run("back in the source, then idle", func(t *testing.T) {
		src.mu.Lock()
		src.peers[laptop.PublicKey] = laptop
		src.mu.Unlock()
		d.SetPeerSource(src)
		// The client re-initiates on its own once its session goes
		// unanswered (Keepalive-Timeout + Rekey-Timeout, 15 s).
		testkit.Eventually(t, 30*time.Second, "client reconnects", func() error { return l.ping(l.b, "100.96.0.1") })
		d.mu.Lock()
		d.od.idleAfter = time.Hour
		d.mu.Unlock()
		d.od.reap()
		if s := d.OnDemandStats(); s.Held != 1 {
			t.Fatalf("reaped a peer that talked just now: %v", s)
		}
		d.mu.Lock()
		d.od.idleAfter = 0
		d.mu.Unlock()
		d.od.reap()
		if s := d.OnDemandStats(); s.Held != 0 || s.Idle != 1 {
			t.Errorf("stats after reaping: %v", s)
		}
		if out := l.mustExec(l.a, "wg", "show", gwIf, "peers"); strings.TrimSpace(out) != "" {
			t.Errorf("idle peer still held: %q", out)
		}
	})
}

// BenchmarkOnDemandCreate is what a device's first handshake costs past
// the lookup (BenchmarkInitiator): wireguard-go creating the peer, which
// precomputes its static Diffie-Hellman secret, through the configuration
// protocol. Peers accumulate, as in a wave of reconnections after a
// restart.
func BenchmarkOnDemandCreate(b *testing.B) {
	l := newLab(b)
	var d *Device
	var err error
	l.inNetns(l.a, func() {
		d, err = New(Config{Interface: "wgb" + l.suffix, ListenPort: 51871, Address: netip.MustParsePrefix("100.96.0.1/12")},
			Options{StateDir: b.TempDir()})
	})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var k Key
		rand.Read(k[:])
		a := netip.AddrFrom4([4]byte{100, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		if !d.od.add(odRequest{key: k, peer: Peer{Name: strconv.Itoa(i), PublicKey: k, AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)}}}) {
			b.Fatal("not created")
		}
	}
	b.ReportMetric(float64(d.OnDemandStats().Held), "peers")
}
