//go:build linux

package gateway_test

import (
	"context"
	be "encoding/binary"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestNetflowIngestThroughGateway configures netflow.ingest on the
// gateway, replays the IPFIX datagrams softflowd sent with 1-in-4 sampling
// (netflow/ingest/testdata) to the listener, and checks that Splunk gets
// the flows in network_analytics_logs, marked as ingested, naming the
// exporter, with counts scaled by the announced rate.
func TestNetflowIngestThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	raw, err := os.ReadFile("../netflow/ingest/testdata/softflowd-ipfix-sampled.bin")
	must(t, err)
	var pkts [][]byte
	for len(raw) >= 2 {
		n := int(be.BigEndian.Uint16(raw))
		pkts = append(pkts, raw[2:2+n])
		raw = raw[2+n:]
	}
	s := newSite(t)
	hec, token := hecInGateway(t, s)
	s.writeFlowConfig(fmt.Sprintf(`  ingest:
    listen: ["127.0.0.1:2055"]
logpush:
  - name: flows
    dataset: network_analytics_logs
    destination: %s
    token_file: %s
    max_upload_interval: 1s
`, hec.SplunkURL("/services/collector/event", url.Values{"sourcetype": {"edgegw:network"}}), token))
	s.start()

	c, err := s.ra.GW.DialContext(context.Background(), "udp", "127.0.0.1:2055")
	must(t, err)
	defer c.Close()
	netlab.Eventually(t, 30*time.Second, "ingested flows at Splunk", func() error {
		for _, p := range pkts {
			c.Write(p) // a refused write before the listener is up is retried
		}
		for _, r := range flowRecords(t, hec) {
			if r.str("Source") != "ipfix" || r.str("DestinationPort") != "7777" {
				continue
			}
			for k, want := range map[string]string{"SamplerAddress": "127.0.0.1", "IPSourceAddress": "10.77.0.1",
				"IPDestinationAddress": "10.77.0.2", "IPProtocolName": "udp", "SampleInterval": "4", "ColoCode": "AMS"} {
				if got := r.str(k); got != want {
					return fmt.Errorf("%s = %q, want %q in %v", k, got, want, r)
				}
			}
			if r.str("Packets") == "" || r.str("Bytes") == "" || r.num("Packets") == 0 || r.num("Packets")%4 != 0 || r.num("Bytes") != r.num("Packets")*128 {
				return fmt.Errorf("counts not scaled by 4: %v", r)
			}
			return nil
		}
		return fmt.Errorf("no ingested flow among %d records", len(hec.Events()))
	})
}
