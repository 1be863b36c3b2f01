//go:build linux

package gre

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// pair is two namespaces joined by a veth, a and b, with 192.0.2.1 and
// 192.0.2.2.
type pair struct {
	lab  *netlab.Lab
	a, b *netlab.NS
}

func newPair(t testing.TB) *pair {
	t.Helper()
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "eth0", "192.0.2.1/24", b, "eth0", "192.0.2.2/24"); err != nil {
		t.Fatal(err)
	}
	return &pair{lab: lab, a: a, b: b}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// open starts a userspace tunnel inside ns. The backend is explicit so
// that these tests exercise the userspace dataplane on kernels with ip_gre
// too (the appliance image), where the automatic choice is the kernel.
func open(t testing.TB, ns *netlab.NS, c Config, eps *Endpoints) *Tunnel {
	t.Helper()
	c.SetDefaults()
	c.HealthCheck.SetDefaults()
	var tun *Tunnel
	err := ns.Do(func() error {
		var err error
		tun, err = New(c, Options{Logger: testLogger(t), Endpoints: eps, Backend: BackendUserspace})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

func cfg(name, local, remote, addr string) Config {
	return Config{Name: name, Local: netip.MustParseAddr(local), Remote: netip.MustParseAddr(remote), Address: netip.MustParsePrefix(addr)}
}

func TestTunnelPing(t *testing.T) {
	p := newPair(t)
	key := uint32(42)
	ca := cfg("gre-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	cb := cfg("gre-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31")
	ca.Key, cb.Key = &key, &key
	ca.Sequence, cb.Sequence = true, true
	ta := open(t, p.a, ca, nil)
	tb := open(t, p.b, cb, nil)
	netlab.Eventually(t, 5*time.Second, "ping through tunnel", func() error { return p.a.Ping("10.200.1.1") })
	sa, sb := ta.Status(), tb.Status()
	if sa.TxPackets == 0 || sa.RxPackets == 0 || sb.RxPackets == 0 {
		t.Errorf("counters: a %+v b %+v", sa, sb)
	}
	for _, s := range []Status{sa, sb} {
		for r, n := range s.Drops {
			if n != 0 {
				t.Errorf("%s: %d drops %s", s.Name, n, r)
			}
		}
	}
	out, err := p.a.IP("-d", "link", "show", "gre-a")
	if err != nil || !strings.Contains(string(out), "mtu 1476") {
		t.Errorf("link: %s %v", out, err)
	}
	if out, err := p.a.IP("-6", "addr", "show", "dev", "gre-a"); err != nil || len(out) != 0 {
		t.Errorf("IPv6 on the tunnel interface: %s %v", out, err)
	}
	ta.Close()
	tb.Close()
	if out, err := p.a.IP("link", "show", "gre-a"); err == nil {
		t.Errorf("interface left after Close: %s", out)
	}
	netlab.Eventually(t, 5*time.Second, "goroutines stopped", leftGoroutines)
}

// leftGoroutines reports goroutines of this package or the TUN device
// still running.
func leftGoroutines() error {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "tunnel/gre.(*") || strings.Contains(g, "wireguard/tun.") {
			return fmt.Errorf("still running:\n%s", g)
		}
	}
	return nil
}

// TestSharedSocketKeys runs two keyed tunnels between the same two
// addresses over one socket per side, and a third whose key the other
// side does not know: its packets are counted as wrong_key, not delivered.
func TestSharedSocketKeys(t *testing.T) {
	p := newPair(t)
	epsA, epsB := NewEndpoints(nil), NewEndpoints(nil)
	defer epsA.Close()
	defer epsB.Close()
	var tb []*Tunnel
	for i, key := range []uint32{1, 2} {
		ca := cfg(fmt.Sprintf("ka%d", i), "192.0.2.1", "192.0.2.2", fmt.Sprintf("10.201.%d.0/31", i))
		cb := cfg(fmt.Sprintf("kb%d", i), "192.0.2.2", "192.0.2.1", fmt.Sprintf("10.201.%d.1/31", i))
		ca.Key, cb.Key = u32(key), u32(key)
		open(t, p.a, ca, epsA)
		tb = append(tb, open(t, p.b, cb, epsB))
	}
	stray := cfg("ka9", "192.0.2.1", "192.0.2.2", "10.201.9.0/31")
	stray.Key = u32(9)
	open(t, p.a, stray, epsA)
	for i := range 2 {
		netlab.Eventually(t, 5*time.Second, "ping", func() error { return p.a.Ping(fmt.Sprintf("10.201.%d.1", i)) })
	}
	if err := p.a.Ping("10.201.9.1"); err == nil {
		t.Error("ping through a tunnel with an unknown key got through")
	}
	var wrong uint64
	for _, tn := range tb {
		wrong += tn.Status().Drops["wrong_key"]
		if tn.Status().RxPackets == 0 {
			t.Errorf("%s received nothing", tn.Name())
		}
	}
	if wrong == 0 {
		t.Error("wrong-key packets not counted")
	}
}

// TestScapyPeer checks edgegw's GRE against an independent
// implementation: a scapy script in the other namespace decapsulates our
// echo requests and answers through its own GRE encapsulation.
func TestScapyPeer(t *testing.T) {
	const py = "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import scapy.all").CombinedOutput(); err != nil {
		testkit.Unavailable(t, fmt.Sprintf("scapy not installed: apt-get install python3-scapy (make deps installs it): %v %s", err, out))
	}
	p := newPair(t)
	c := cfg("sc-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	c.Key, c.Sequence, c.TTL = u32(0x1234), true, 17
	ta := open(t, p.a, c, nil)
	peer, err := p.b.Start(py, "testdata/scapy_peer.py", "192.0.2.2", "192.0.2.1", fmt.Sprint(0x1234))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Stop()
	netlab.Eventually(t, 30*time.Second, "scapy ready", func() error {
		if !strings.Contains(peer.Output(), "ready") {
			return fmt.Errorf("output %q", peer.Output())
		}
		return nil
	})
	netlab.Eventually(t, 20*time.Second, "ping answered by scapy", func() error { return p.a.Ping("10.200.1.1") })
	netlab.Eventually(t, 5*time.Second, "scapy's log", func() error {
		if out := peer.Output(); !strings.Contains(out, "answered 10.200.1.0 -> 10.200.1.1 ttl 17 seq") {
			return fmt.Errorf("scapy saw: %s", out)
		}
		return nil
	})
	if s := ta.Status(); s.RxPackets == 0 || s.Drops["out_of_order"] != 0 || s.Drops["wrong_key"] != 0 {
		t.Errorf("status %+v", s)
	}
}

// TestWiresharkDecodes captures the tunnel's packets with tshark and checks
// that Wireshark's GRE dissector reads the outer and inner addresses, the
// key, the sequence number and the TTL we sent.
func TestWiresharkDecodes(t *testing.T) {
	testkit.NeedTool(t, "tshark", "tshark")
	p := newPair(t)
	ca := cfg("ws-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	cb := cfg("ws-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31")
	ca.Key, cb.Key = u32(0xabcdef), u32(0xabcdef)
	ca.Sequence, cb.Sequence, ca.TTL = true, true, 23
	open(t, p.a, ca, nil)
	open(t, p.b, cb, nil)
	capture, err := p.b.Start("tshark", "-l", "-i", "eth0", "-f", "ip proto 47 and src host 192.0.2.1", "-c", "6",
		"-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "ip.dst", "-e", "ip.ttl", "-e", "gre.key", "-e", "gre.sequence_number", "-e", "icmp.type")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	netlab.Eventually(t, 30*time.Second, "tshark capturing", func() error {
		if !strings.Contains(capture.Output(), "Capturing on") {
			return fmt.Errorf("output %q", capture.Output())
		}
		return nil
	})
	deadline := time.After(20 * time.Second)
wait:
	for {
		select {
		case <-capture.Done():
			break wait
		case <-deadline:
			t.Fatalf("tshark saw fewer than 6 packets: %s", capture.Output())
		default:
			p.a.Ping("10.200.1.1")
		}
	}
	var lines []string
	for _, l := range strings.Split(capture.Output(), "\n") {
		if strings.Count(l, "|") == 5 && strings.HasSuffix(l, "|8") { // echo requests, not IPv6 ND
			lines = append(lines, l)
		}
	}
	// Outer and inner addresses, outer and inner TTL, key, sequence
	// number (increasing), ICMP echo request.
	want := "192.0.2.1,10.200.1.0|192.0.2.2,10.200.1.1|23,64|0x00abcdef|%d|8"
	if len(lines) < 3 {
		t.Fatalf("decoded: %q", capture.Output())
	}
	prev := -1
	for i, l := range lines {
		var seq int
		fmt.Sscanf(strings.Split(l, "|")[4], "%d", &seq)
		if w := fmt.Sprintf(want, seq); l != w || seq <= prev {
			t.Errorf("packet %d: %s, want %s (sequence after %d)", i, l, w, prev)
		}
		prev = seq
	}
}

// TestGROSuperPackets gives the WAN a NIC's receive path (threaded NAPI
// with GRO, see nicReceive), so that the kernel coalesces GRE segments
// before the raw socket, and sends a TCP stream through the tunnel: it must
// arrive intact and in order, and the receiving tunnel must have passed
// coalesced packets to its TUN device as TSO packets (gro.go).
func TestGROSuperPackets(t *testing.T) {
	p := newPair(t)
	nicReceive(t, p.a, p.b)
	open(t, p.a, cfg("gro-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31"), nil)
	tb := open(t, p.b, cfg("gro-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31"), nil)
	netlab.Eventually(t, 5*time.Second, "ping through tunnel", func() error { return p.a.Ping("10.200.1.1") })
	ln, err := p.b.Listen("tcp", "10.200.1.1:5555")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 32 << 20
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		got <- result{n: n, sum: [32]byte(h.Sum(nil)), err: err}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, err := p.a.DialContext(ctx, "tcp", "10.200.1.1:5555")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	src := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(io.MultiWriter(c, h), src, size); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-got
	if r.err != nil || r.n != size || r.sum != [32]byte(h.Sum(nil)) {
		t.Fatalf("received %d of %d bytes (err %v), digest match %v", r.n, size, r.err, r.sum == [32]byte(h.Sum(nil)))
	}
	s := tb.Status()
	t.Logf("receiving end: %d packets, %d coalesced, drops %v", s.RxPackets, s.RxCoalesced, nonZero(s.Drops))
	if s.RxCoalesced == 0 {
		t.Error("no coalesced packets passed to the TUN device")
	}
	for r, n := range s.Drops {
		if n != 0 {
			t.Errorf("%d drops %s", n, r)
		}
	}
}

// TestSequenceRequired sends real GRE packets from a raw socket in the
// other namespace to a userspace tunnel that requires sequence numbers
// (sequence: true): each carries an echo request to the tunnel address,
// so the kernel behind the tunnel answers every packet that got through.
// In order, reordered within the window and after a jump they arrive; a
// replay, one too far behind and one without a sequence number are
// dropped and counted, and never answered.
func TestSequenceRequired(t *testing.T) {
	p := newPair(t)
	ca := cfg("gre-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	ca.Sequence = true
	ta := open(t, p.a, ca, nil)

	var fd int
	if err := p.b.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_GRE)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	const id = 0x5e9
	send := func(icmpSeq uint16, greSeq *uint32) {
		t.Helper()
		inner := echoRequest([4]byte{10, 200, 1, 1}, [4]byte{10, 200, 1, 0}, id, icmpSeq)
		h := Header{Proto: ProtoIPv4}
		if greSeq != nil {
			h.HasSequence, h.Sequence = true, *greSeq
		}
		b := make([]byte, h.Len()+len(inner))
		copy(b[h.Len():], inner)
		h.Put(b)
		if err := unix.Sendto(fd, b, 0, &unix.SockaddrInet4{Addr: [4]byte{192, 0, 2, 1}}); err != nil {
			t.Fatalf("send GRE: %v", err)
		}
	}
	answered := map[uint16]bool{}
	read := func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return // timeout: nothing more for now
			}
			o, err := parseIPv4(buf[:n])
			if err != nil || o.src != [4]byte{192, 0, 2, 1} {
				continue
			}
			_, in, err := Parse(o.payload)
			if err != nil || len(in) < 28 || in[9] != 1 || in[20] != 0 || binary.BigEndian.Uint16(in[24:]) != id {
				continue
			}
			answered[binary.BigEndian.Uint16(in[26:])] = true
		}
	}
	seq := func(n uint32) *uint32 { return &n }
	steps := []struct {
		icmpSeq uint16
		greSeq  *uint32
		through bool
	}{
		{1, seq(1000), true},
		{2, seq(1002), true},
		{3, seq(1001), true},       // reordered, within the window
		{4, seq(1001), false},      // replayed
		{5, seq(1002 - 64), false}, // 64 behind the newest
		{6, nil, false},            // no sequence number
		{7, seq(5000), true},       // a jump ahead
		{8, seq(4999), true},       // and one just behind it
		{9, seq(1003), false},      // now far behind
	}
	for _, s := range steps {
		send(s.icmpSeq, s.greSeq)
	}
	netlab.Eventually(t, 10*time.Second, "answers to what got through", func() error {
		read()
		for _, s := range steps {
			if s.through && !answered[s.icmpSeq] {
				return fmt.Errorf("echo %d not answered yet; answered %v", s.icmpSeq, answered)
			}
		}
		return nil
	})
	for _, s := range steps {
		if !s.through && answered[s.icmpSeq] {
			t.Errorf("echo %d was dropped by the rules yet answered", s.icmpSeq)
		}
	}
	want := map[string]uint64{"replayed": 1, "out_of_order": 2, "missing_sequence": 1}
	for r, n := range ta.Status().Drops {
		if n != want[r] {
			t.Errorf("drops %s = %d, want %d", r, n, want[r])
		}
	}
	if st := ta.Status(); st.RxPackets != 5 {
		t.Errorf("%d packets received, want 5", st.RxPackets)
	}
}
