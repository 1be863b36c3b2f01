//go:build linux

package ingest_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/ingest"
)

func readDatagrams(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out
}

// TestMalformedStorm: while one exporter floods a listener with garbage,
// another's valid datagrams are still decoded and counted; the garbage is
// counted by reason; Close stops the reader.
func TestMalformedStorm(t *testing.T) {
	lab := netlab.NewT(t)
	a, err := lab.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(a, "v0", "10.78.0.1/24", b, "v1", "10.78.0.2/24"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("v0", "10.78.0.3/24"); err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	srv, err := ingest.New(ingest.Options{Listen: []string{"10.78.0.2:0", "10.78.0.2:0"}, Sink: s, ListenPacket: b.ListenPacket})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addrs()[0].(*net.UDPAddr).Port

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bad, err := a.DialContext(ctx, "udp", fmt.Sprintf("10.78.0.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	stormDone := make(chan struct{})
	go func() { // owned by this test; stops with ctx
		defer close(stormDone)
		r := rand.New(rand.NewPCG(1, 2))
		v9 := readDatagrams(t, "softflowd-v9-sampled.bin")[0]
		for ctx.Err() == nil {
			p := make([]byte, r.IntN(200))
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			if len(p) > 2 && r.IntN(2) == 0 { // plausible headers, broken bodies
				binary.BigEndian.PutUint16(p, []uint16{5, 9, 10}[r.IntN(3)])
			}
			if r.IntN(4) == 0 { // a real datagram, truncated
				p = v9[:r.IntN(len(v9))]
			}
			bad.Write(p)
		}
	}()

	// The valid exporter: another address of a.
	var goodConn net.Conn
	if err := a.Do(func() error {
		var err error
		goodConn, err = (&net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("10.78.0.3")}}).DialContext(ctx, "udp", fmt.Sprintf("10.78.0.2:%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer goodConn.Close()
	pkts := readDatagrams(t, "softflowd-ipfix-sampled.bin")
	netlab.Eventually(t, 30*time.Second, "records from the valid exporter", func() error {
		for _, p := range pkts {
			goodConn.Write(p)
		}
		for _, r := range s.records() {
			if v, _ := field(r, "SamplerAddress"); v == "10.78.0.3" {
				if st := srv.Stats(); st.Dropped[ingest.ReasonMalformed]+st.Dropped[ingest.ReasonBadVersion] == 0 {
					return fmt.Errorf("no garbage counted yet: %+v", st)
				}
				return nil
			}
		}
		return fmt.Errorf("none yet; stats %+v", srv.Stats())
	})
	cancel()
	<-stormDone
	if n := testutil.CollectAndCount(srv.Collector(), "edgegw_netflow_ingest_dropped_total"); n != len(ingest.Reasons) {
		t.Errorf("%d dropped series, want %d", n, len(ingest.Reasons))
	}
	if st := srv.Stats(); st.Dropped[ingest.ReasonPanic] != 0 {
		t.Errorf("decoder panics: %+v", st)
	}
	closed := make(chan error)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}
