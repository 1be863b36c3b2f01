//go:build linux

package ipsec

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// icmpEcho builds an IPv4 ICMP echo (typ 8) or echo reply (typ 0) with
// valid checksums.
func icmpEcho(typ byte, src, dst netip.Addr, id, seq uint16) []byte {
	p := make([]byte, 20+8+8)
	p[0], p[8], p[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20]))
	m := p[20:]
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "edgegw!!")
	binary.BigEndian.PutUint16(m[2:], inetChecksum(m))
	return p
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// TestProbeOnlyFromTunnel: the health-check path hands a tunnel's
// handler only ICMP that arrived on the tunnel's device. An echo reply
// forged on the WAN with the tunnel's addresses (a "healthy" answer for
// a tunnel that may be down) reaches the gateway's stack, but is not
// taken as an answer; the branch's real answer through the tunnel is.
func TestProbeOnlyFromTunnel(t *testing.T) {
	const psk = "probe-psk-of-20-characters"
	x := newLab(t)
	x.startEngine(t)
	x.set(t, x.gwTunnel(t, psk, "", "", false))
	x.startBranch(t, branchConf(psk, "aes256gcm16-prfsha256-ecp384", "aes256gcm16-ecp384", true))
	x.waitUp(t, "branch1", 20*time.Second)

	local, peer := netip.MustParseAddr("10.200.3.0"), netip.MustParseAddr("10.200.3.1")
	const id = 0x7e57
	seen := make(chan uint16, 16)
	path := x.eng.Path("branch1")
	path.SetProbeHandler(func(p []byte) bool {
		if len(p) < 28 || p[20] != 0 || binary.BigEndian.Uint16(p[24:]) != id ||
			netip.AddrFrom4([4]byte(p[12:16])) != peer || netip.AddrFrom4([4]byte(p[16:20])) != local {
			return false
		}
		seen <- binary.BigEndian.Uint16(p[26:])
		return true
	})
	defer path.SetProbeHandler(nil)

	// Forged on the WAN: sent to the gateway's WAN address, with the
	// tunnel's addresses inside.
	var fd int
	if err := x.wan.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	wrongBefore := x.eng.probe.wrongIf.Load()
	for seq := uint16(100); seq < 110; seq++ {
		if err := unix.Sendto(fd, icmpEcho(0, peer, local, id, seq), 0, &unix.SockaddrInet4{Addr: [4]byte{203, 0, 113, 10}}); err != nil {
			t.Fatal(err)
		}
	}
	netlab.Eventually(t, 10*time.Second, "forged replies reach the gateway and are refused", func() error {
		if n := x.eng.probe.wrongIf.Load() - wrongBefore; n < 10 {
			return fmt.Errorf("%d of 10 forged replies seen on the wrong interface", n)
		}
		return nil
	})

	// The real thing: probes through the tunnel, answered by the branch,
	// one a second until an answer arrives (the first packets through a
	// new SA can be lost on a slow, emulated machine, as a health check's
	// would be). Their sequence numbers stay below the forged ones.
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	sent := uint16(0)
wait:
	for {
		if sent < 90 {
			sent++
			if err := path.Inject(icmpEcho(8, local, peer, id, sent)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case seq := <-seen:
			if seq == 0 || seq > sent {
				t.Fatalf("handler took echo %d, a forged one", seq)
			}
			break wait
		case <-tick.C:
		case <-deadline:
			t.Fatalf("none of the branch's answers to %d probes through the tunnel reached the handler", sent)
		}
	}
	// Late answers to earlier probes may still come; forged ones must not.
	time.Sleep(500 * time.Millisecond)
	for {
		select {
		case seq := <-seen:
			if seq == 0 || seq > sent {
				t.Errorf("handler took echo %d, a forged one", seq)
			}
			continue
		default:
		}
		break
	}
}
