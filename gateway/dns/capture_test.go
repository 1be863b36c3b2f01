//go:build linux

package dns

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// captureProbe names the queries startCapture sends; no test asks for it.
const captureProbe = "capture-probe"

// startCapture runs dumpcap on ns's eth0 into file and returns once the
// capture is proven live: a query sent from ns to peer (eth0's other end)
// is in the file.
//
// dumpcap's "Capturing on" line is not that proof: under load the packet
// socket can start receiving after it is printed, and CI has lost a
// test's first queries that way. Nothing listens for the probes at peer
// port 53 (or, if something does, it answers a name under .invalid);
// their source is ns's own address, which no test counts as edgegw's.
func startCapture(t *testing.T, ns *netlab.NS, file, filter, peer string) *netlab.Proc {
	t.Helper()
	p, err := ns.Start("dumpcap", "-q", "-i", "eth0", "-f", filter, "-w", file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "Capturing on"); err != nil {
		t.Fatal(err)
	}
	i := 0
	testkit.Eventually(t, 30*time.Second, "dumpcap on "+file+" captures", func() error {
		select {
		case <-p.Done():
			t.Fatalf("dumpcap exited: %s", p.Output())
		default:
		}
		i++
		m := new(mdns.Msg)
		m.SetQuestion(fmt.Sprintf("%s-%d.invalid.", captureProbe, i), mdns.TypeA)
		b, err := m.Pack()
		if err != nil {
			return err
		}
		if err := ns.Do(func() error {
			c, err := net.Dial("udp", net.JoinHostPort(peer, "53"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(b)
			return err
		}); err != nil {
			return err
		}
		// A live file may end in half a packet: tshark then exits 2 after
		// printing every whole one, so its output counts, not its status.
		out, _ := exec.Command("tshark", "-r", file, "-n", "-Y", "dns", "-T", "fields", "-e", "dns.qry.name").Output()
		if !strings.Contains(string(out), captureProbe) {
			return fmt.Errorf("no probe in the file yet (%d sent)", i)
		}
		return nil
	})
	return p
}
