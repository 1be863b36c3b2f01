package wireguard

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint checks names and help without a device (the peer series
// are linted by TestStockClient, which needs root).
func TestMetricsLint(t *testing.T) {
	d := &Device{name: "wg0", closed: true}
	d.snap.Store(&snapshot{cfg: &Config{}})
	d.drops.malformed.Add(3)
	problems, err := testutil.CollectAndLint(d.Collector())
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	want := `
# HELP edgegw_wireguard_dropped_packets_total ` + droppedHelp + `
# TYPE edgegw_wireguard_dropped_packets_total counter
edgegw_wireguard_dropped_packets_total{interface="wg0",reason="disallowed_source"} 0
edgegw_wireguard_dropped_packets_total{interface="wg0",reason="invalid_handshake"} 0
edgegw_wireguard_dropped_packets_total{interface="wg0",reason="invalid_inner_packet"} 0
edgegw_wireguard_dropped_packets_total{interface="wg0",reason="malformed"} 3
`
	if err := testutil.CollectAndCompare(d.Collector(), strings.NewReader(want), "edgegw_wireguard_dropped_packets_total"); err != nil {
		t.Error(err)
	}
}
