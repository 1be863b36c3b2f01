//go:build linux

package ingest_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/ingest"
)

// exporterNS is a namespace linked to the collector's, running softflowd
// on its side of the link and sending traffic across it.
type exporterNS struct {
	ns      *netlab.NS
	addr    string // the exporter's address, the records' SamplerAddress
	peer    string // the collector's address on this link
	ctl     string // softflowd's control socket
	sf      *netlab.Proc
	traffic net.Conn
}

// startExporter links a new namespace to col over 10.79.<subnet>.0/24 and
// runs softflowd there, exporting IPFIX to col's listener on port.
func startExporter(t *testing.T, lab *netlab.Lab, col *netlab.NS, name string, subnet, port int) *exporterNS {
	t.Helper()
	ns, err := lab.NS(name)
	if err != nil {
		t.Fatal(err)
	}
	e := &exporterNS{ns: ns, addr: fmt.Sprintf("10.79.%d.1", subnet), peer: fmt.Sprintf("10.79.%d.2", subnet)}
	if err := lab.Link(ns, "lan0", e.addr+"/24", col, "lan"+strconv.Itoa(subnet), e.peer+"/24"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e.ctl = filepath.Join(dir, "ctl")
	if e.sf, err = ns.Start("softflowd", "-d", "-v", "10", "-i", "lan0", "-n", net.JoinHostPort(e.peer, strconv.Itoa(port)),
		"-c", e.ctl, "-p", filepath.Join(dir, "pid"), "-t", "maxlife=300", "udp and dst port 7777"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.sf.Stop() })
	testkit.Eventually(t, 10*time.Second, "softflowd control socket", func() error {
		select {
		case <-e.sf.Done():
			return fmt.Errorf("softflowd exited: %s", e.sf.Output())
		default:
		}
		_, err := os.Stat(e.ctl)
		return err
	})
	if e.traffic, err = ns.DialContext(context.Background(), "udp", net.JoinHostPort(e.peer, "7777")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.traffic.Close() })
	return e
}

// send sends n datagrams across the link and makes softflowd export
// every flow it holds. Many datagrams per call: softflowd's libpcap
// hands packets over a ring block at a time.
func (e *exporterNS) send(t *testing.T, n int) {
	for range n {
		e.traffic.Write(make([]byte, 200))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := e.ns.Exec(ctx, "softflowctl", "-c", e.ctl, "expire-all"); err != nil {
		t.Logf("softflowctl: %v: %s", err, out)
	}
}

// recordsFrom counts the records whose SamplerAddress is addr.
func recordsFrom(s *sink, addr string) int {
	n := 0
	for _, r := range s.records() {
		if v, _ := field(r, "SamplerAddress"); v == addr {
			n++
		}
	}
	return n
}

// TestExporterAllowList runs two real softflowd exporters, one inside
// the allowed prefixes and one outside them: only the listed one's flows
// become records, the other's datagrams are counted as not_allowed; after
// SetExporters lists the second, its flows are accepted too.
func TestExporterAllowList(t *testing.T) {
	testkit.NeedTool(t, "softflowd", "softflowd")
	lab := netlab.NewT(t)
	col, err := lab.NS("col")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	srv, err := ingest.New(ingest.Options{
		Listen:       []string{":0"},
		Sink:         s,
		ListenPacket: col.ListenPacket,
		Exporters:    []netip.Prefix{netip.MustParsePrefix("10.79.1.0/24"), netip.MustParsePrefix("fd79::/64")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := srv.Addrs()[0].(*net.UDPAddr).Port
	listed := startExporter(t, lab, col, "listed", 1, port)
	unlisted := startExporter(t, lab, col, "unlisted", 2, port)

	testkit.Eventually(t, 60*time.Second, "records from the listed exporter and drops of the unlisted one", func() error {
		listed.send(t, 300)
		unlisted.send(t, 300)
		st := srv.Stats()
		if n := recordsFrom(s, listed.addr); n == 0 || st.Dropped[ingest.ReasonNotAllowed] == 0 {
			return fmt.Errorf("%d records from %s; stats %+v", n, listed.addr, st)
		}
		return nil
	})
	if n := recordsFrom(s, unlisted.addr); n != 0 {
		t.Fatalf("%d records from the unlisted exporter %s", n, unlisted.addr)
	}

	srv.SetExporters([]netip.Prefix{netip.MustParsePrefix("10.79.0.0/16")})
	testkit.Eventually(t, 60*time.Second, "records from the newly listed exporter", func() error {
		unlisted.send(t, 300)
		if n := recordsFrom(s, unlisted.addr); n == 0 {
			return fmt.Errorf("none yet; stats %+v", srv.Stats())
		}
		return nil
	})
}
