//go:build linux

package ipsec

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// ikeSAInit builds a well-formed IKE_SA_INIT request offering
// aes256-sha256-modp2048 with a random (never completed) key exchange.
func ikeSAInit() []byte {
	transform := func(last bool, typ byte, id uint16, keyLen uint16) []byte {
		b := []byte{3, 0, 0, 8, typ, 0, 0, 0}
		if last {
			b[0] = 0
		}
		binary.BigEndian.PutUint16(b[6:], id)
		if keyLen > 0 {
			b = append(b, 0x80, 0x0e, byte(keyLen>>8), byte(keyLen))
		}
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}
	var ts []byte
	ts = append(ts, transform(false, 1, 12, 256)...) // ENCR_AES_CBC 256
	ts = append(ts, transform(false, 2, 5, 0)...)    // PRF_HMAC_SHA2_256
	ts = append(ts, transform(false, 3, 12, 0)...)   // AUTH_HMAC_SHA2_256_128
	ts = append(ts, transform(true, 4, 14, 0)...)    // modp2048
	prop := append([]byte{0, 0, 0, 0, 1, 1, 0, 4}, ts...)
	binary.BigEndian.PutUint16(prop[2:], uint16(len(prop)))
	payload := func(next byte, body []byte) []byte {
		b := append([]byte{next, 0, 0, 0}, body...)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}
	ke := make([]byte, 4+256)
	binary.BigEndian.PutUint16(ke, 14)
	rand.Read(ke[4:])
	ke[4] = 0x7f // below the prime
	nonce := make([]byte, 32)
	rand.Read(nonce)
	body := append(append(payload(34, prop), payload(40, ke)...), payload(0, nonce)...)
	h := make([]byte, 28)
	rand.Read(h[:8])
	h[16], h[17], h[18], h[19] = 33, 0x20, 34, 0x08
	binary.BigEndian.PutUint32(h[24:], uint32(28+len(body)))
	return append(h, body...)
}

// TestIKESAInitFlood floods charon with IKE_SA_INIT requests from 20
// addresses: past the cookie threshold charon answers with COOKIE
// notifies instead of keeping state, and the branch still gets its
// tunnel up.
func TestIKESAInitFlood(t *testing.T) {
	x := newLab(t)
	x.startEngine(t)
	x.set(t, x.gwTunnel(t, "flood-psk-of-20-characters", "", "", false))
	var conns []net.Conn
	for i := range 20 {
		addr := fmt.Sprintf("203.0.113.%d", 100+i)
		if _, err := x.wan.IP("addr", "add", addr+"/24", "dev", "togw"); err != nil {
			t.Fatal(err)
		}
	}
	err := x.wan.Do(func() error {
		for i := range 20 {
			d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("203.0.113.%d", 100+i)), Port: 500}}
			c, err := d.Dial("udp4", "203.0.113.10:500")
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	answers, cookies := 0, 0
	for range 5 {
		for _, c := range conns {
			c.Write(ikeSAInit())
		}
		// One answer per request, or none once a source is blocked.
		deadline := time.Now().Add(time.Second)
		for _, c := range conns {
			c.SetReadDeadline(deadline)
			b := make([]byte, 2048)
			n, err := c.Read(b)
			if err != nil {
				continue
			}
			answers++
			// A notify payload first, of type COOKIE (16390).
			if n >= 36 && b[16] == 41 && binary.BigEndian.Uint16(b[34:]) == 16390 {
				cookies++
			}
		}
	}
	t.Logf("100 IKE_SA_INIT requests: %d answers, %d of them COOKIE challenges", answers, cookies)
	if cookies == 0 {
		t.Errorf("no COOKIE challenges under the flood (%d answers)", answers)
	}
	x.startBranch(t, branchConf("flood-psk-of-20-characters", "aes256gcm16-prfsha256-ecp384", "aes256gcm16-ecp384", true))
	x.waitUp(t, "branch1", 20*time.Second)
	x.routeGW(t)
	netlab.Eventually(t, 5*time.Second, "ping through the tunnel", func() error { return x.lan.Ping("10.20.0.2") })
}
