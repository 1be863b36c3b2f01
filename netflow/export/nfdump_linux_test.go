//go:build linux

package export_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/export"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// sample builds a network_analytics_logs record of one sampled packet, as
// the gateway's sampler does.
func sample(t time.Time, src, dst string, proto, sport, dport, length, flags, rate int, dir, verdict string) logpush.Record {
	r := logpush.Record{
		{Name: "Datetime", Value: logpush.Time(t)},
		{Name: "Source", Value: logpush.String("nflog")},
		{Name: "Direction", Value: logpush.String(dir)},
		{Name: "IPSourceAddress", Value: logpush.String(src)},
		{Name: "IPDestinationAddress", Value: logpush.String(dst)},
		{Name: "IPProtocol", Value: logpush.Uint(uint64(proto))},
		{Name: "IPTotalLength", Value: logpush.Uint(uint64(length))},
		{Name: "Verdict", Value: logpush.String(verdict)},
		{Name: "SampleInterval", Value: logpush.Uint(uint64(rate))},
	}
	if proto == 6 || proto == 17 {
		r = append(r, logpush.Field{Name: "SourcePort", Value: logpush.Uint(uint64(sport))},
			logpush.Field{Name: "DestinationPort", Value: logpush.Uint(uint64(dport))})
	}
	if proto == 6 {
		r = append(r, logpush.Field{Name: "TCPFlags", Value: logpush.Uint(uint64(flags))})
	}
	return r
}

// nfdumpFlow is what nfdump -o json prints of a flow (nfdump 1.7).
type nfdumpFlow struct {
	First    string `json:"first"`
	Last     string `json:"last"`
	Packets  uint64 `json:"in_packets"`
	Bytes    uint64 `json:"in_bytes"`
	Proto    uint8  `json:"proto"`
	Flags    string `json:"tcp_flags"`
	SrcPort  uint16 `json:"src_port"`
	DstPort  uint16 `json:"dst_port"`
	Src4     string `json:"src4_addr"`
	Dst4     string `json:"dst4_addr"`
	Src6     string `json:"src6_addr"`
	Dst6     string `json:"dst6_addr"`
	ICMPType uint8  `json:"icmp_type"`
	ICMPCode uint8  `json:"icmp_code"`
	Dir      int    `json:"direction"`
	Sampled  int    `json:"sampled"`
	Router   string `json:"ip4_router"`
}

// TestNfcapd exports sampled packets to Debian's nfdump collector, nfcapd,
// and reads them back with nfdump -r: addresses (IPv4 and IPv6), ports,
// protocol, TCP flags, ICMP type and code, direction, times to the
// millisecond, and packets and bytes scaled by the sampling rate the
// options record announced.
func TestNfcapd(t *testing.T) {
	testkit.NeedTool(t, "nfcapd", "nfdump")
	testkit.NeedTool(t, "nfdump", "nfdump")
	testkit.NeedTool(t, "stdbuf", "coreutils")
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	col, err := lab.NS("col")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const port = 4739
	// -E prints each flow as it arrives: stdbuf makes nfcapd's stdout
	// line-buffered, so the test sees them while it runs.
	nfcapd, err := col.Start("stdbuf", "-oL", "nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "3600", "-E")
	if err != nil {
		t.Fatal(err)
	}
	defer nfcapd.Stop()
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := nfcapd.WaitOutput(wctx, "Startup"); err != nil {
		t.Fatalf("nfcapd: %v: %s", err, nfcapd.Output())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ex, err := export.New(ctx, export.Options{
		Collectors: []export.Collector{{Addr: fmt.Sprintf("127.0.0.1:%d", port), Domain: 7}},
		Dial:       col.DialContext,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	defer func() { cancel(); <-done }()

	at := time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	const rate = 10
	icmp := sample(at.Add(2*time.Second), "10.1.2.4", "192.0.2.10", 1, 0, 0, 84, 0, rate, "egress", "pass")
	icmp = append(icmp, logpush.Field{Name: "ICMPType", Value: logpush.Uint(8)}, logpush.Field{Name: "ICMPCode", Value: logpush.Uint(0)})
	records := []logpush.Record{
		sample(at, "10.1.2.3", "192.0.2.9", 6, 40000, 443, 60, 0x12, rate, "egress", "pass"),
		sample(at.Add(time.Second), "fd00::1", "2001:db8::9", 17, 5353, 53, 120, 0, rate, "ingress", "drop"),
		icmp,
		// Not exported: a flow another router exported to the gateway.
		append(sample(at, "10.9.9.9", "10.8.8.8", 17, 1, 2, 100, 0, 1, "", ""), logpush.Field{Name: "Source", Value: logpush.String("ipfix")}),
	}
	want := []nfdumpFlow{
		{First: "2026-03-04T05:06:07.891", Last: "2026-03-04T05:06:07.891", Packets: rate, Bytes: 60 * rate, Proto: 6, Flags: "...A..S.",
			SrcPort: 40000, DstPort: 443, Src4: "10.1.2.3", Dst4: "192.0.2.9", Dir: 1, Sampled: 1, Router: "127.0.0.1"},
		{First: "2026-03-04T05:06:08.891", Last: "2026-03-04T05:06:08.891", Packets: rate, Bytes: 120 * rate, Proto: 17, Flags: "........",
			SrcPort: 5353, DstPort: 53, Src6: "fd00::1", Dst6: "2001:db8::9", Dir: 0, Sampled: 1, Router: "127.0.0.1"},
		{First: "2026-03-04T05:06:09.891", Last: "2026-03-04T05:06:09.891", Packets: rate, Bytes: 84 * rate, Proto: 1,
			ICMPType: 8, ICMPCode: 0, Src4: "10.1.2.4", Dst4: "192.0.2.10", Dir: 1, Sampled: 1, Router: "127.0.0.1"},
	}
	for _, r := range records {
		ex.Push("network_analytics_logs", r)
	}
	netlab.Eventually(t, 30*time.Second, "nfcapd printing every record", func() error {
		out := nfcapd.Output()
		for _, a := range []string{"192.0.2.9", "2001:db8::9", "192.0.2.10"} {
			if !strings.Contains(out, a) {
				return fmt.Errorf("no %s; exporter %+v; nfcapd: %s", a, ex.Stats(), out)
			}
		}
		return nil
	})
	// nfcapd writes its file out when it stops.
	if err := nfcapd.Stop(); err != nil {
		t.Logf("nfcapd stop: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "nfcapd.2*"))
	if err != nil || len(files) != 1 {
		t.Fatalf("nfcapd files %v, %v; nfcapd: %s", files, err, nfcapd.Output())
	}
	out, err := col.Exec(context.Background(), "env", "TZ=UTC", "nfdump", "-r", files[0], "-o", "json")
	if err != nil {
		t.Fatalf("nfdump: %v: %s", err, out)
	}
	var got []nfdumpFlow
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("nfdump -o json: %v: %s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("nfdump read back\n%+v\nwant\n%+v\n%s", got, want, out)
	}
	if st := ex.Stats(); st.Records != 3 || st.SendErrors != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 3 records and no errors", st)
	}
	if !strings.Contains(nfcapd.Output(), "packet space: 9") {
		t.Errorf("nfcapd did not take the sampler (1 in %d): %s", rate, nfcapd.Output())
	}
}
