//go:build linux

package bgp

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// bgpMessage frames body as a BGP message of type typ (RFC 4271 4.1).
func bgpMessage(typ byte, body []byte) []byte {
	m := make([]byte, 19, 19+len(body))
	for i := range 16 {
		m[i] = 0xff
	}
	binary.BigEndian.PutUint16(m[16:], uint16(19+len(body)))
	m[18] = typ
	return append(m, body...)
}

// readMessage reads one BGP message: its type and body.
func readMessage(r io.Reader) (byte, []byte, error) {
	var h [19]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(h[16:]))
	if n < 19 || n > 4096 {
		return 0, nil, fmt.Errorf("message length %d", n)
	}
	body := make([]byte, n-19)
	_, err := io.ReadFull(r, body)
	return h[18], body, err
}

// TestMalformedUpdateTearsDown: a hand-written peer opens a session and
// sends an UPDATE whose path attribute length runs past the message.
// edgegw answers with a NOTIFICATION (UPDATE Message Error) and closes
// the session, logs why, and installs nothing.
func TestMalformedUpdateTearsDown(t *testing.T) {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	gw, err := lab.NS("gw")
	must(t, err)
	peer, err := lab.NS("peer")
	must(t, err)
	must(t, lab.Link(gw, "eth0", "192.0.2.1/24", peer, "eth0", "192.0.2.2/24"))
	var logs testkit.Buffer
	m := newSpeakerOpts(t, gw, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, Config{
		ASN: 65000, RouterID: netip.MustParseAddr("192.0.2.1"),
		Neighbors: []Neighbor{{Name: "raw", Address: netip.MustParseAddr("192.0.2.2"), RemoteAS: 65020, Passive: true, HoldTime: 9}},
	})

	var c net.Conn
	testkit.Eventually(t, 10*time.Second, "connect to edgegw's BGP port", func() error {
		var err error
		c, err = peer.DialContext(t.Context(), "tcp4", "192.0.2.1:179")
		return err
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	// OPEN: version 4, AS 65020, hold time 9, BGP identifier, no
	// optional parameters (IPv4 unicast is implied).
	open := []byte{4, 0, 0, 0, 9, 192, 0, 2, 2, 0}
	binary.BigEndian.PutUint16(open[1:], 65020)
	if _, err := c.Write(bgpMessage(1, open)); err != nil {
		t.Fatal(err)
	}
	typ, _, err := readMessage(r)
	if err != nil || typ != 1 {
		t.Fatalf("want edgegw's OPEN, got type %d, %v", typ, err)
	}
	if _, err := c.Write(bgpMessage(4, nil)); err != nil { // KEEPALIVE
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "session established", func() error {
		if n := neighbor(m, "raw"); n.State != "established" {
			return fmt.Errorf("state %s", n.State)
		}
		return nil
	})

	// UPDATE: no withdrawn routes, 100 bytes of path attributes announced,
	// none sent.
	if _, err := c.Write(bgpMessage(2, []byte{0, 0, 0, 100})); err != nil {
		t.Fatal(err)
	}
	var code, sub byte
	for code == 0 {
		typ, body, err := readMessage(r)
		if err != nil {
			t.Fatalf("no NOTIFICATION before the session ended: %v", err)
		}
		if typ == 3 && len(body) >= 2 {
			code, sub = body[0], body[1]
		}
	}
	if code != 3 {
		t.Errorf("NOTIFICATION %d/%d, want 3 (UPDATE Message Error)", code, sub)
	}
	if _, _, err := readMessage(r); err != io.EOF {
		t.Errorf("after the NOTIFICATION: %v, want the connection closed", err)
	}
	testkit.Eventually(t, 10*time.Second, "edgegw logs the session's end", func() error {
		if n := neighbor(m, "raw"); n.State == "established" {
			return fmt.Errorf("still established")
		}
		if !strings.Contains(logs.String(), `level=WARN msg="session ended"`) ||
			!strings.Contains(logs.String(), "notification-sent code 3(update) subcode 1(malformed attribute list)") {
			return fmt.Errorf("log:\n%s", logs.String())
		}
		return nil
	})
}
