//go:build linux

package gre

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// openBackend starts a tunnel on the given backend inside ns; it skips the
// test where the kernel has no ip_gre.
func openBackend(t *testing.T, ns *netlab.NS, c Config, b Backend) *Tunnel {
	t.Helper()
	c.SetDefaults()
	c.HealthCheck.SetDefaults()
	var tun *Tunnel
	err := ns.Do(func() error {
		var err error
		tun, err = New(c, Options{Logger: testLogger(t), Backend: b})
		return err
	})
	if errors.Is(err, ErrNoKernelGRE) {
		t.Skipf("kernel GRE backend: %v (the appliance image has ip_gre; this kernel does not)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// echoRequest builds an ICMP echo request from src to dst, with valid
// IPv4 and ICMP checksums (a packet socket sends it as it is).
func echoRequest(src, dst [4]byte, id, seq uint16) []byte {
	p := make([]byte, 20+8+8)
	p[0], p[8], p[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
	icmp := p[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], "edgegw!!")
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	return p
}

// TestKernelBackend runs the ip_gre backend where the kernel has it (the
// appliance image; it skips elsewhere). It needs only ip and ping, and
// uses tshark and iperf3 where installed: the interface is configured as
// asked (key, sequence numbers, TTL, MTU), pings cross it, health-check
// packets go out through Inject and their answers reach the probe
// handler, counters come from the kernel, the automatic choice picks the
// kernel and replaces a stale interface, and Close removes the interface.
func TestKernelBackend(t *testing.T) {
	p := newPair(t)
	ca := cfg("kgre-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
	cb := cfg("kgre-b", "192.0.2.2", "192.0.2.1", "10.200.1.1/31")
	ca.Key, cb.Key = u32(0xabcdef), u32(0xabcdef)
	ca.Sequence, cb.Sequence, ca.TTL = true, true, 23
	ta := openBackend(t, p.a, ca, BackendKernel)
	tb := openBackend(t, p.b, cb, BackendKernel)
	if ta.Backend() != BackendKernel || tb.Status().Backend != BackendKernel {
		t.Fatalf("backends %s, %s", ta.Backend(), tb.Status().Backend)
	}
	out, err := p.a.IP("-d", "link", "show", "kgre-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mtu 1476", "gre remote 192.0.2.2", "local 192.0.2.1", "ttl 23", "ikey", "okey", "iseq", "oseq"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ip -d link show kgre-a: no %q in\n%s", want, out)
		}
	}
	if out, err := p.a.IP("-4", "addr", "show", "dev", "kgre-a"); err != nil || !strings.Contains(string(out), "10.200.1.0/31") {
		t.Errorf("address: %s %v", out, err)
	}

	var capture *netlab.Proc
	if _, err := exec.LookPath("tshark"); err == nil {
		capture, err = p.b.Start("tshark", "-l", "-i", "eth0", "-f", "ip proto 47 and src host 192.0.2.1", "-c", "3",
			"-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "ip.dst", "-e", "ip.ttl", "-e", "gre.key", "-e", "icmp.type")
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
	} else {
		t.Log("tshark not installed: not checking the wire format")
	}
	netlab.Eventually(t, 10*time.Second, "ping through the kernel tunnel", func() error { return p.a.Ping("10.200.1.1") })

	// A health check's path: inject an echo request, see the reply.
	var replies atomic.Int32
	ta.SetProbeHandler(func(pkt []byte) bool {
		if len(pkt) >= 28 && pkt[20] == 0 && binary.BigEndian.Uint16(pkt[24:]) == 0x4567 {
			replies.Add(1)
			return true
		}
		return false
	})
	netlab.Eventually(t, 10*time.Second, "echo reply to an injected request", func() error {
		if err := ta.Inject(echoRequest([4]byte{10, 200, 1, 0}, [4]byte{10, 200, 1, 1}, 0x4567, 1)); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
		if replies.Load() == 0 {
			return errors.New("no reply seen by the probe handler")
		}
		return nil
	})
	ta.SetProbeHandler(nil)

	if capture != nil {
		select {
		case <-capture.Done():
		case <-time.After(20 * time.Second):
			t.Errorf("tshark saw fewer than 3 packets: %s", capture.Output())
		}
		for _, l := range strings.Split(capture.Output(), "\n") {
			if strings.Count(l, "|") != 4 {
				continue
			}
			if want := "192.0.2.1,10.200.1.0|192.0.2.2,10.200.1.1|23,64|0x00abcdef|8"; l != want {
				t.Errorf("tshark decoded %q, want %q", l, want)
			}
		}
	}

	if _, err := exec.LookPath("iperf3"); err == nil {
		srv, err := p.b.Start("iperf3", "-s")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Stop()
		var r iperfResult
		netlab.Eventually(t, 10*time.Second, "iperf3 through the kernel tunnel", func() (err error) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			r, err = iperf3(ctx, p.a, "10.200.1.1", 2)
			return err
		})
		t.Logf("iperf3 through ip_gre: %.2f Gbit/s, %d retransmits", r.bps/1e9, r.retransmits)
	} else {
		t.Log("iperf3 not installed: no throughput figure")
	}

	sa, sb := ta.Status(), tb.Status()
	if sa.TxPackets == 0 || sa.RxPackets == 0 || sb.RxPackets == 0 || sb.TxBytes == 0 {
		t.Errorf("kernel counters: a %+v b %+v", sa, sb)
	}
	for _, s := range []Status{sa, sb} {
		if len(s.Drops) != len(kernelDropNames) || s.Drops["out_of_order"] != 0 || s.Drops["malformed"] != 0 {
			t.Errorf("%s drops: %v", s.Name, s.Drops)
		}
	}

	// The automatic choice takes the kernel, replacing an interface of
	// the same name that a crashed edgegw left.
	if _, err := p.a.IP("link", "add", "kgre-auto", "type", "gre", "local", "192.0.2.1", "remote", "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	auto := openBackend(t, p.a, cfg("kgre-auto", "192.0.2.1", "192.0.2.3", "10.200.2.0/31"), BackendAuto)
	if auto.Backend() != BackendKernel {
		t.Errorf("automatic backend %s", auto.Backend())
	}
	if out, err := p.a.IP("-d", "link", "show", "kgre-auto"); err != nil || !strings.Contains(string(out), "remote 192.0.2.3") {
		t.Errorf("stale interface not replaced: %s %v", out, err)
	}

	for _, tn := range []*Tunnel{ta, auto} {
		if err := tn.Close(); err != nil {
			t.Errorf("close %s: %v", tn.Name(), err)
		}
		if out, err := p.a.IP("link", "show", tn.Name()); err == nil {
			t.Errorf("interface left after Close: %s", out)
		}
	}
	if err := ta.Inject(echoRequest([4]byte{10, 200, 1, 0}, [4]byte{10, 200, 1, 1}, 1, 1)); err == nil {
		t.Error("Inject after Close succeeded")
	}
	tb.Close()
	netlab.Eventually(t, 5*time.Second, "goroutines stopped", leftGoroutines)
}

// TestKernelBackendRefused checks the other side of the choice on a kernel
// without ip_gre: BackendKernel fails with ErrNoKernelGRE and leaves
// nothing, and BackendAuto falls back to userspace.
func TestKernelBackendRefused(t *testing.T) {
	p := newPair(t)
	var err error
	p.a.Do(func() error {
		var tn *Tunnel
		c := cfg("kref-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
		c.SetDefaults()
		tn, err = New(c, Options{Backend: BackendKernel})
		if err == nil {
			tn.Close()
		}
		return nil
	})
	if err == nil {
		t.Skip("this kernel has ip_gre: TestKernelBackend covers it")
	}
	if !errors.Is(err, ErrNoKernelGRE) || !strings.Contains(err.Error(), `"kref-a"`) {
		t.Fatalf("BackendKernel without ip_gre: %v", err)
	}
	if out, err := p.a.IP("link", "show", "kref-a"); err == nil {
		t.Errorf("interface left behind: %s", out)
	}
	var tn *Tunnel
	if err := p.a.Do(func() (err error) {
		c := cfg("kref-a", "192.0.2.1", "192.0.2.2", "10.200.1.0/31")
		c.SetDefaults()
		tn, err = New(c, Options{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	if tn.Backend() != BackendUserspace || tn.Status().Backend != BackendUserspace {
		t.Errorf("automatic backend %s", tn.Backend())
	}
}

// TestProbeSocket checks the kernel backend's packet socket on a device
// this kernel does have, a TUN device standing in for the ip_gre
// interface (both are L3 devices without link-layer headers): its filter
// passes arriving ICMP only, the probe handler sees it, and Inject sends
// out of the interface.
func TestProbeSocket(t *testing.T) {
	p := newPair(t)
	var dev tun.Device
	var tn *Tunnel
	err := p.a.Do(func() (err error) {
		if dev, err = tun.CreateTUN("ptun0", 1476); err != nil {
			return err
		}
		go func() {
			for range dev.Events() {
			}
		}()
		link, err := netlink.LinkByName("ptun0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.9.0.1/24")
		if err := errors.Join(netlink.AddrAdd(link, addr), netlink.LinkSetUp(link)); err != nil {
			return err
		}
		sock, err := probeSocket(link.Attrs().Index)
		if err != nil {
			return err
		}
		tn = &Tunnel{log: slog.New(slog.DiscardHandler), ifindex: link.Attrs().Index, kern: &kernelTunnel{sock: sock, done: make(chan struct{})}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	arrive := func(pkt []byte) {
		t.Helper()
		if _, err := dev.Write([][]byte{append(make([]byte, tunOffset), pkt...)}, tunOffset); err != nil {
			t.Fatal(err)
		}
	}
	reply := echoRequest([4]byte{10, 9, 0, 2}, [4]byte{10, 9, 0, 1}, 0x77, 1)
	reply[20] = 0 // echo reply
	binary.BigEndian.PutUint16(reply[22:], 0)
	binary.BigEndian.PutUint16(reply[22:], checksum(reply[20:]))
	udp := echoRequest([4]byte{10, 9, 0, 2}, [4]byte{10, 9, 0, 1}, 0x78, 1)
	udp[9] = 17
	binary.BigEndian.PutUint16(udp[10:], 0)
	binary.BigEndian.PutUint16(udp[10:], checksum(udp[:20]))

	// The filter, read from the socket itself: of a UDP packet and an
	// echo reply arriving, only the reply comes through.
	arrive(udp)
	arrive(reply)
	rc, _ := tn.kern.sock.SyscallConn()
	var got [][]byte
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		buf := make([]byte, 2048)
		var n int
		var rerr error
		rc.Control(func(fd uintptr) { n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT) })
		if rerr == nil {
			got = append(got, buf[:n])
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if len(got) != 1 || string(got[0]) != string(reply) {
		t.Fatalf("packet socket passed %d packets (% x), want the echo reply only", len(got), got)
	}

	// The reader hands arriving ICMP to the probe handler.
	go tn.kernelProbeLoop()
	defer func() { tn.kern.sock.Close(); <-tn.kern.done }()
	seen := make(chan []byte, 10)
	tn.SetProbeHandler(func(pkt []byte) bool { seen <- append([]byte(nil), pkt...); return true })
	arrive(reply)
	select {
	case pkt := <-seen:
		if string(pkt) != string(reply) {
			t.Fatalf("probe handler saw % x, want the echo reply", pkt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("probe handler saw nothing")
	}

	// Inject: the packet leaves through the interface as it is.
	req := echoRequest([4]byte{10, 9, 0, 1}, [4]byte{10, 9, 0, 2}, 0x79, 3)
	if err := tn.kernelInject(req); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 65535)}, []int{0}
	for {
		n, err := dev.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 && string(bufs[0][:sizes[0]]) == string(req) {
			break // anything else is the kernel's own
		}
	}
}
