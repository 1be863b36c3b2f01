package wireguard

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// floodRate is what each flood sends: 1000 initiations of 148 bytes a
// second, the 150 KB/s that locked every enrolled device out while the
// lookup budget was one for all sources.
const floodRate = 1000

// flood sends initiations from a pool at floodRate, at most max, on a
// goroutine that wait joins.
type flood struct {
	sent atomic.Int64
	wg   sync.WaitGroup
}

func runFlood(ctx context.Context, pool [][]byte, max int64, send func(msg []byte)) *flood {
	f := &flood{}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for f.sent.Load() < max {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// Catch up with the rate after a stall of a busy machine, in
			// bursts of at most a tenth of a second's worth.
			due := min(max, int64(time.Since(start).Seconds()*floodRate))
			for n := 0; f.sent.Load() < due && n < floodRate/10; n++ {
				send(pool[f.sent.Add(1)%int64(len(pool))])
			}
		}
	}()
	return f
}

func (f *flood) wait() int64 { f.wg.Wait(); return f.sent.Load() }

// spoofedUDP builds an IPv4/UDP datagram from src to dst carrying payload,
// for a raw IPPROTO_RAW socket (the kernel fills in the IP checksum and
// identification; a zero UDP checksum means none, which IPv4 allows).
func spoofedUDP(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// TestOnDemandFlood floods the gateway's WireGuard port with handshake
// initiations that have a valid mac1 (anyone who knows the gateway's
// public key can make them) from random static keys, and checks that
// enrolled devices at another source still connect:
//
//  1. from one source address (192.0.2.3), 1000 a second: that source
//     gets its own budget (10 lookups a second), the device is not under
//     load, and a stock wireguard-go client at 192.0.2.2 connects at once;
//  2. the same plus 1000 a second from spoofed random sources: the device
//     goes under load and answers them with cookie replies (to addresses
//     that never answer), not lookups; the stock client, now with another
//     enrolled key, gets a cookie reply, answers it with mac2 on its next
//     attempt and connects.
func TestOnDemandFlood(t *testing.T) {
	if testing.Short() {
		// The appliance VM runs the test pack in short mode under
		// emulation, where 1,000 initiations a second take every cycle of
		// the emulated CPU: a load test measures the host, so make test
		// runs it there.
		t.Skip("-short: a flood load test (make test runs it)")
	}
	l := newLab(t)
	gwIf, clIf := "wgf"+l.suffix, "wgd"+l.suffix
	const port = 51873
	laptopPriv, phonePriv := genKey(t), genKey(t)
	laptop := Peer{Name: "laptop", PublicKey: laptopPriv.PublicKey(), AllowedIPs: pfx("100.96.0.10/32")}
	phone := Peer{Name: "phone", PublicKey: phonePriv.PublicKey(), AllowedIPs: pfx("100.96.0.10/32")}
	src := &mapSource{peers: map[Key]Peer{laptop.PublicKey: laptop}}

	var d *Device
	var err error
	l.inNetns(l.a, func() {
		d, err = New(Config{Interface: gwIf, ListenPort: port, Address: netip.MustParsePrefix("100.96.0.1/12")},
			Options{StateDir: t.TempDir(), Logger: testLogger(t)})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetPeerSource(src)
	gwAddr := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)

	// Cookie replies to the spoofed sources are routed back towards B,
	// which drops them (not its addresses, no forwarding).
	l.ip("-n", l.a, "route", "add", "198.18.0.0/15", "via", "192.0.2.2")
	l.ip("-n", l.b, "addr", "add", "192.0.2.3/24", "dev", "vb"+l.suffix)

	fl := newFlooder(d.PublicKey())
	pool := make([][]byte, 512)
	for i := range pool {
		pool[i] = fl.initiation(t)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const maxPerFlood = 60 * floodRate // bounded whatever happens: a minute

	// 1. One source.
	var one *net.UDPConn
	l.inNetns(l.b, func() {
		one, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 3)})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	oneFlood := runFlood(ctx, pool, maxPerFlood, func(msg []byte) { one.WriteToUDPAddrPort(msg, gwAddr) })
	defer oneFlood.wait()
	start, before := time.Now(), d.OnDemandStats()
	testkit.Eventually(t, 15*time.Second, "the one-source flood is limited", func() error {
		if s := d.OnDemandStats(); s.LimitedSource < 500 {
			return fmt.Errorf("stats: %v", s)
		}
		return nil
	})

	l.startStockClient(l.b, clIf)
	dir := t.TempDir()
	conf := filepath.Join(dir, "client.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\n[Peer]\nPublicKey = %s\nEndpoint = 192.0.2.1:%d\nAllowedIPs = 100.96.0.0/12\n",
		laptopPriv, d.PublicKey(), port)), 0o600)
	l.mustExec(l.b, "wg", "setconf", clIf, conf)
	l.mustExec(l.b, "ip", "addr", "add", "100.96.0.10/12", "dev", clIf)
	l.mustExec(l.b, "ip", "link", "set", clIf, "up")
	connect := time.Now()
	testkit.Eventually(t, 15*time.Second, "the laptop connects during the one-source flood", func() error { return l.ping(l.b, "100.96.0.1") })
	t.Logf("laptop connected after %v during a one-source flood", time.Since(connect).Round(time.Millisecond))
	s := d.OnDemandStats()
	if s.UnderLoad || s.Cookies != before.Cookies {
		t.Errorf("one source put the device under load: %v", s)
	}
	if _, ok := d.od.held()[laptop.PublicKey]; !ok {
		t.Errorf("laptop not held: %v", s)
	}
	// The flood's own lookups: its burst and 10 a second, and the laptop's.
	if n, bound := s.LookedUp-before.LookedUp, uint64(sourceBurst+sourceRate*(time.Since(start).Seconds()+1)+3); n > bound {
		t.Errorf("%d lookups in %v, want at most %d", n, time.Since(start).Round(time.Millisecond), bound)
	}
	t.Logf("one source: %v", s)

	// 2. Spoofed sources as well.
	var raw int
	l.inNetns(l.b, func() { raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW) })
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw)
	to := &unix.SockaddrInet4{Addr: [4]byte{192, 0, 2, 1}}
	spoofPool := make([][]byte, 4096)
	for i := range spoofPool {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18 + byte(rand.IntN(2)), byte(rand.IntN(256)), byte(rand.IntN(256))}), uint16(1024+rand.IntN(60000)))
		spoofPool[i] = spoofedUDP(from, gwAddr, pool[i%len(pool)])
	}
	spoofed := runFlood(ctx, spoofPool, maxPerFlood, func(msg []byte) { unix.Sendto(raw, msg, 0, to) })
	defer spoofed.wait()
	testkit.Eventually(t, 15*time.Second, "spoofed sources put the device under load", func() error {
		if s := d.OnDemandStats(); !s.UnderLoad || s.Cookies < 500 {
			return fmt.Errorf("stats: %v", s)
		}
		return nil
	})
	loaded, loadedSent := d.OnDemandStats(), spoofed.sent.Load()+oneFlood.sent.Load()

	// The client becomes another enrolled device (the laptop is revoked):
	// its next initiation comes from an unknown key under load.
	src.mu.Lock()
	src.peers = map[Key]Peer{phone.PublicKey: phone}
	src.mu.Unlock()
	d.SetPeerSource(src)
	keyFile := filepath.Join(dir, "phone.key")
	os.WriteFile(keyFile, []byte(phonePriv.String()+"\n"), 0o600)
	l.mustExec(l.b, "wg", "set", clIf, "private-key", keyFile)
	connect = time.Now()
	// wireguard-go answers a cookie reply on its next attempt, 5 s on.
	testkit.Eventually(t, 40*time.Second, "the phone connects under load", func() error { return l.ping(l.b, "100.96.0.1") })
	t.Logf("phone connected after %v under load (cookie round trip)", time.Since(connect).Round(time.Millisecond))
	s = d.OnDemandStats()
	if _, ok := d.od.held()[phone.PublicKey]; !ok || !s.UnderLoad {
		t.Errorf("phone not held, or the device left load: %v", s)
	}
	// Under load, initiations without a valid mac2 get a cookie reply and
	// no lookup: nearly all the floods sent since (a machine too busy to
	// keep the floods at rate may leave load for a moment, when up to
	// loadThreshold are looked up).
	sent := spoofed.sent.Load() + oneFlood.sent.Load() - loadedSent
	cookies, lookups := s.Cookies-loaded.Cookies, s.LookedUp-loaded.LookedUp
	if cookies < uint64(sent)*8/10 || lookups > uint64(sent)/20+5 {
		t.Errorf("under load, of %d sent: %d cookie replies, %d lookups", sent, cookies, lookups)
	}
	if s.CookieErrors != 0 || s.InvalidMAC1 != 0 {
		t.Errorf("stats: %v", s)
	}
	cancel()
	t.Logf("sent %d from one source and %d spoofed; under load %d sent, %d cookie replies, %d lookups; %v",
		oneFlood.wait(), spoofed.wait(), sent, cookies, lookups, s)
}
