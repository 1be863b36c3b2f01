package wireguard

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// initiationFrom has a real wireguard-go device with private key client
// send a handshake initiation to a gateway whose public key is gw, and
// returns the 148 bytes it sent.
func initiationFrom(t testing.TB, client, gw Key) []byte {
	t.Helper()
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tn := tuntest.NewChannelTUN()
	d := device.NewDevice(tn.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, ""))
	defer d.Close()
	if err := d.IpcSet(fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=0.0.0.0/0\n",
		client.Hex(), gw.Hex(), ln.LocalAddr())); err != nil {
		t.Fatal(err)
	}
	if err := d.Up(); err != nil {
		t.Fatal(err)
	}
	tn.Outbound <- tuntest.Ping(netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.9.9.1"))
	buf := make([]byte, 2048)
	ln.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, _, err := ln.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no initiation from wireguard-go: %v", err)
		}
		if n == sizeInitiation && buf[0] == msgInitiation {
			return buf[:n]
		}
	}
}

func genKey(t testing.TB) Key {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestResponderReadsInitiator: the initiator's key is read from what stock
// wireguard-go sends, and anything altered or meant for another gateway
// gives nothing.
func TestResponderReadsInitiator(t *testing.T) {
	gw, client, other := genKey(t), genKey(t), genKey(t)
	msg := initiationFrom(t, client, gw.PublicKey())
	r, err := newResponder(gw)
	if err != nil {
		t.Fatal(err)
	}
	if !r.validMAC1(msg) {
		t.Fatal("mac1 of wireguard-go's initiation does not verify")
	}
	if k, ok := r.initiator(msg); !ok || k != client.PublicKey() {
		t.Fatalf("initiator %v %v, want %v", k, ok, client.PublicKey())
	}
	ro, _ := newResponder(other)
	if ro.validMAC1(msg) {
		t.Error("mac1 verifies for another gateway's key")
	}
	if _, ok := ro.initiator(msg); ok {
		t.Error("another gateway reads the initiator")
	}
	for _, i := range []int{0, offEphemeral, offStatic, offStatic + 47, offMAC1} {
		bad := append([]byte(nil), msg...)
		bad[i] ^= 1
		k, ok := r.initiator(bad)
		if ok && k == client.PublicKey() && i != offMAC1 {
			t.Errorf("byte %d flipped: initiator still read", i)
		}
		if i == offMAC1 && r.validMAC1(bad) {
			t.Error("mac1 flipped: still valid")
		}
	}
	if _, ok := r.initiator(msg[:100]); ok {
		t.Error("a short message gives an initiator")
	}
}

// FuzzInitiator: any bytes give a key or nothing, never a panic; the
// cookie path (mac2 check, cookie reply) takes any 148 bytes and an
// address, and a reply it makes is a well-formed cookie reply.
func FuzzInitiator(f *testing.F) {
	gw, client := genKey(f), genKey(f)
	f.Add(initiationFrom(f, client, gw.PublicKey()))
	f.Add(make([]byte, sizeInitiation))
	f.Add([]byte{1, 0, 0, 0})
	r, err := newResponder(gw)
	if err != nil {
		f.Fatal(err)
	}
	src := []byte{192, 0, 2, 2, 0x20, 0xca}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == sizeInitiation {
			r.validMAC1(b)
			if r.validMAC2(b, src) {
				t.Fatalf("mac2 valid without a cookie handed out: % x", b)
			}
			reply, err := r.cookieReply(b, src)
			if err != nil || len(reply) != sizeCookieReply || !wellFormed(reply) || reply[0] != msgCookieReply ||
				!bytes.Equal(reply[4:8], b[4:8]) {
				t.Fatalf("cookie reply % x, %v", reply, err)
			}
		}
		r.initiator(b)
	})
}

func BenchmarkInitiator(b *testing.B) {
	gw, client := genKey(b), genKey(b)
	msg := initiationFrom(b, client, gw.PublicKey())
	r, _ := newResponder(gw)
	for b.Loop() {
		if !r.validMAC1(msg) {
			b.Fatal("mac1")
		}
		if _, ok := r.initiator(msg); !ok {
			b.Fatal("no initiator")
		}
	}
}
