package ingest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/geo/geotest"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/ingest"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// netflowV5 is a NetFlow v5 datagram (unsampled) of one TCP flow per pair
// of addresses.
func netflowV5(now time.Time, pairs ...[2]string) []byte {
	b := binary.BigEndian.AppendUint16(nil, 5)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pairs)))
	b = binary.BigEndian.AppendUint32(b, 60_000)             // uptime, ms
	b = binary.BigEndian.AppendUint32(b, uint32(now.Unix())) // seconds
	b = binary.BigEndian.AppendUint32(b, 0)                  // nanoseconds
	b = binary.BigEndian.AppendUint32(b, 1)                  // sequence
	b = append(b, 0, 0, 0, 0)                                // engine type, id, sampling
	for _, p := range pairs {
		src, dst := netip.MustParseAddr(p[0]).As4(), netip.MustParseAddr(p[1]).As4()
		b = append(b, src[:]...)
		b = append(b, dst[:]...)
		b = append(b, make([]byte, 8)...)            // next hop, input, output
		b = binary.BigEndian.AppendUint32(b, 3)      // packets
		b = binary.BigEndian.AppendUint32(b, 180)    // bytes
		b = binary.BigEndian.AppendUint32(b, 59_000) // first
		b = binary.BigEndian.AppendUint32(b, 59_900) // last
		b = binary.BigEndian.AppendUint16(b, 40_000) // source port
		b = binary.BigEndian.AppendUint16(b, 443)    // destination port
		b = append(b, 0, 0x18, 6, 0)                 // pad, flags, protocol, tos
		b = append(b, make([]byte, 8)...)            // AS numbers, masks, pad
	}
	return b
}

// TestIngestedFlowsGeoFilter: flows from another router get the country
// and AS fields of the GeoIP databases (as the gateway's own samples do),
// and a Logpush job filtering on the source country delivers exactly the
// flows from that country.
func TestIngestedFlowsGeoFilter(t *testing.T) {
	b, err := geotest.Build([]geotest.Entry{
		{Prefix: netip.MustParsePrefix("10.77.1.0/24"), Country: "KP", ASN: 64512, Org: "Example Net"},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Country: "DE"},
	})
	if err != nil {
		t.Fatal(err)
	}
	db, err := geo.Parse(b, b)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "kp.ndjson")
	m, err := logpush.New([]logpush.Job{{Name: "kp", Dataset: "network_analytics_logs", Destination: "file://" + out,
		Filter: `sourcecountry == "KP"`, MaxUploadRecords: 1, MaxUploadInterval: time.Second}},
		logpush.Options{StateDir: t.TempDir(), Host: "gw-test", MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }() // owned here: cancelled and waited for below
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	srv, err := ingest.New(ingest.Options{Listen: []string{"127.0.0.1:0"}, Sink: m, Places: db})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := net.Dial("udp", srv.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Each datagram: a flow from nowhere the databases know, then one
	// from KP; the job's queue is in order, so once the KP flows are
	// delivered the others have been judged too.
	const n = 5
	for i := range n {
		if _, err := c.Write(netflowV5(time.Now(), [2]string{"198.51.100.1", "192.0.2.9"}, [2]string{"10.77.1.5", "192.0.2.9"})); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, "flows ingested", func() error {
			if st := srv.Stats(); st.Records != uint64(2*(i+1)) {
				return fmt.Errorf("%d records, want %d: %+v", st.Records, 2*(i+1), st)
			}
			return nil
		})
	}
	testkit.Eventually(t, 10*time.Second, "KP flows delivered", func() error {
		if st := m.Status()[0]; st.RecordsSent < n {
			return fmt.Errorf("%d sent: %+v", st.RecordsSent, st)
		}
		return nil
	})
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("%d records delivered, want %d:\n%s", len(lines), n, data)
	}
	for _, l := range lines {
		var r map[string]any
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		want := map[string]any{"Source": "netflow", "IPSourceAddress": "10.77.1.5", "SourceCountry": "KP", "SourceASN": float64(64512),
			"SourceASNName": "Example Net", "DestinationCountry": "DE"}
		for k, v := range want {
			if r[k] != v {
				t.Errorf("%s = %v, want %v (record %s)", k, r[k], v, l)
			}
		}
		if _, ok := r["DestinationASN"]; ok {
			t.Errorf("DestinationASN written though unknown: %s", l)
		}
	}
}
