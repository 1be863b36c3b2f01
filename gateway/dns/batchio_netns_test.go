//go:build linux

package dns

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestBatchIOLinkLocal: a query from an IPv6 link-local address (a LAN
// client answering on fe80::, as many resolvers' clients on an office
// LAN do) is read with its interface as the zone, and the answer leaves
// by that interface back to it: the scope travels with the raw source
// address recvmmsg gave, which is what sendmmsg sends to.
func TestBatchIOLinkLocal(t *testing.T) {
	lab := netlab.NewT(t)
	gw, err := lab.NS("gw")
	if err != nil {
		t.Fatal(err)
	}
	client, err := lab.NS("client")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(gw, "lan0", "", client, "eth0", ""); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns   *netlab.NS
		dev  string
		addr string
	}{{gw, "lan0", "fe80::1/64"}, {client, "eth0", "fe80::2/64"}} {
		if out, err := s.ns.IP("addr", "add", s.addr, "dev", s.dev, "nodad"); err != nil {
			t.Fatalf("%s: %v: %s", s.ns, err, out)
		}
	}
	pc, err := gw.ListenPacket("udp6", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	b, err := newBatchIO(pc.(*net.UDPConn), udpBatch)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, "udp6", net.JoinHostPort("fe80::1%eth0", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	in := []ipv4.Message{{Buffers: [][]byte{make([]byte, udpBufSize)}, OOB: make([]byte, oobSize)}}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	// In the gateway's namespace: the zone is the name of the interface
	// the index stands for there.
	var n int
	if err := gw.Do(func() error { n, err = b.read(in); return err }); err != nil || n != 1 {
		t.Fatalf("read %d: %v", n, err)
	}
	src := in[0].Addr.(*net.UDPAddr)
	if src.IP.String() != "fe80::2" || src.Zone != "lan0" {
		t.Errorf("source %v, want fe80::2%%lan0", src)
	}
	if n, err := b.write([]ipv4.Message{{Buffers: [][]byte{[]byte("answer")}, Addr: in[0].Addr}}); n != 1 || err != nil {
		t.Fatalf("sent %d: %v", n, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "answer" {
		t.Errorf("the client got %q: %v", buf[:n], err)
	}
}
