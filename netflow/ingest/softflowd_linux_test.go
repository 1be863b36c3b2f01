//go:build linux

package ingest_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/netflow/ingest"
	"github.com/edgegw/edgegw/netflow/logpush"
)

var update = flag.Bool("update", false, "rewrite testdata/*.bin with the datagrams softflowd and pmacctd send")

// sink collects records.
type sink struct {
	mu  sync.Mutex
	rec []logpush.Record
}

func (s *sink) Push(ds string, r logpush.Record) {
	if ds != "network_analytics_logs" {
		panic("dataset " + ds)
	}
	s.mu.Lock()
	s.rec = append(s.rec, r)
	s.mu.Unlock()
}

func (s *sink) records() []logpush.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logpush.Record(nil), s.rec...)
}

// tee keeps a copy of every datagram a socket reads, for testdata.
type tee struct {
	net.PacketConn
	mu   sync.Mutex
	seen [][]byte
}

func (t *tee) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := t.PacketConn.ReadFrom(b)
	if err == nil {
		t.mu.Lock()
		t.seen = append(t.seen, append([]byte(nil), b[:n]...))
		t.mu.Unlock()
	}
	return n, a, err
}

// field renders a record's field as text: numbers in decimal, times in
// RFC 3339.
func field(r logpush.Record, name string) (string, bool) {
	v, ok := r.Get(name)
	if !ok {
		return "", false
	}
	switch v.Kind() {
	case logpush.KindUint, logpush.KindInt:
		return strconv.FormatInt(v.Int(), 10), true
	case logpush.KindTime:
		return time.Unix(0, v.Int()).UTC().Format(time.RFC3339Nano), true
	}
	return v.Str(), true
}

// TestSoftflowd runs Debian's softflowd, a real NetFlow/IPFIX exporter
// (and pmacct's pmacctd with its sfprobe plugin, an sFlow v5 agent), on
// an interface in one namespace while the test sends UDP datagrams and
// pings across it, and receives its export in the other namespace: every
// version's records must name the addresses, ports, protocol and exporter,
// and their packet and byte totals (scaled by softflowd's sampling rate)
// must match what was sent.
func TestSoftflowd(t *testing.T) {
	if _, err := exec.LookPath("softflowd"); err != nil {
		t.Fatalf("softflowd is required (apt-get install softflowd): %v", err)
	}
	for _, tc := range []struct {
		name    string
		version string
		rate    int
		source  string
		ipv6    bool // the traffic is IPv6 (the export stays on IPv4)
	}{
		{"v5", "5", 1, "netflow", false},
		{"v9", "9", 1, "netflow", false},
		{"ipfix", "10", 1, "ipfix", false},
		{"v5-sampled", "5", 4, "netflow", false},
		{"v9-sampled", "9", 4, "netflow", false},
		{"ipfix-sampled", "10", 4, "ipfix", false},
		{"sflow", "sflow", 1, "sflow", false},
		{"sflow-sampled", "sflow", 4, "sflow", false},
		{"v9-ipv6", "9", 1, "netflow", true},
		{"ipfix-ipv6", "10", 1, "ipfix", true},
		{"sflow-ipv6", "sflow", 1, "sflow", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lab := netlab.NewT(t)
			exp, err := lab.NS("exp")
			if err != nil {
				t.Fatal(err)
			}
			col, err := lab.NS("col")
			if err != nil {
				t.Fatal(err)
			}
			if err := lab.Link(exp, "lan0", "10.77.0.1/24", col, "lan1", "10.77.0.2/24"); err != nil {
				t.Fatal(err)
			}
			src, dst, srcNet, ipHeader := "10.77.0.1", "10.77.0.2", "10.77.0.0/24", 20
			if tc.ipv6 {
				src, dst, srcNet, ipHeader = "fd77::1", "fd77::2", "fd77::/64", 40
				if err := exp.AddAddr("lan0", "fd77::1/64"); err != nil {
					t.Fatal(err)
				}
				if err := col.AddAddr("lan1", "fd77::2/64"); err != nil {
					t.Fatal(err)
				}
			}
			traffic := func(port int) string { return net.JoinHostPort(dst, strconv.Itoa(port)) }
			var tees []*tee
			s := &sink{}
			srv, err := ingest.New(ingest.Options{
				Listen: []string{"10.77.0.2:0"},
				Sink:   s,
				ListenPacket: func(network, addr string) (net.PacketConn, error) {
					c, err := col.ListenPacket(network, addr)
					if err != nil {
						return nil, err
					}
					tc := &tee{PacketConn: c}
					tees = append(tees, tc)
					return tc, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			port := srv.Addrs()[0].(*net.UDPAddr).Port

			// The traffic's receiver, so that no ICMP errors add flows.
			rx, err := col.ListenPacket("udp", traffic(7777))
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()

			dir := t.TempDir()
			ctl := filepath.Join(dir, "ctl")
			// Only the test's traffic: not the export itself, nor ARP.
			filter := "(ip or ip6) and not udp port " + strconv.Itoa(port)
			var sf *netlab.Proc
			tool := "softflowd"
			if tc.version == "sflow" {
				tool = "pmacctd"
				// pmacct's pmacctd with its sfprobe plugin: an sFlow v5 agent.
				conf := filepath.Join(dir, "pmacctd.conf")
				if err := os.WriteFile(conf, []byte(fmt.Sprintf("daemonize: false\npcap_interface: lan0\npcap_filter: %s\n"+
					"plugins: sfprobe\nsfprobe_receiver: 10.77.0.2:%d\nsfprobe_agentip: 10.77.0.1\nsampling_rate: %d\n",
					filter, port, tc.rate)), 0o644); err != nil {
					t.Fatal(err)
				}
				if sf, err = exp.Start("pmacctd", "-f", conf); err != nil {
					t.Fatal(err)
				}
				defer sf.Stop()
				wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := sf.WaitOutput(wctx, "sfprobe"); err != nil {
					t.Fatalf("pmacctd: %v: %s", err, sf.Output())
				}
			} else {
				args := []string{"-d", "-v", tc.version, "-i", "lan0", "-n", fmt.Sprintf("10.77.0.2:%d", port),
					"-c", ctl, "-p", filepath.Join(dir, "pid"), "-t", "maxlife=300"}
				if tc.rate > 1 {
					args = append(args, "-s", strconv.Itoa(tc.rate))
				}
				if sf, err = exp.Start("softflowd", append(args, filter)...); err != nil {
					t.Fatal(err)
				}
				defer sf.Stop()
				// softflowd is capturing once its control socket exists.
				netlab.Eventually(t, 10*time.Second, "softflowd control socket", func() error {
					select {
					case <-sf.Done():
						return fmt.Errorf("softflowd exited: %s", sf.Output())
					default:
					}
					_, err := os.Stat(ctl)
					return err
				})
			}

			const n, payload = 40, 100
			c, err := exp.DialContext(context.Background(), "udp", traffic(7777))
			if err != nil {
				t.Fatal(err)
			}
			srcPort := c.LocalAddr().(*net.UDPAddr).Port
			for range n {
				if _, err := c.Write(make([]byte, payload)); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
			if err := exp.Ping(dst); err != nil {
				t.Fatal(err)
			}

			// softflowd's libpcap hands packets over a ring block at a
			// time, when the block is full: filler datagrams to another
			// port push the test's packets through.
			filler, err := exp.DialContext(context.Background(), "udp", traffic(7778))
			if err != nil {
				t.Fatal(err)
			}
			defer filler.Close()

			var udp []logpush.Record
			var icmp bool
			netlab.Eventually(t, 60*time.Second, "records of the UDP flow", func() error {
				for range 500 {
					filler.Write(make([]byte, 200))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if tc.version != "sflow" {
					if out, err := exp.Exec(ctx, "softflowctl", "-c", ctl, "expire-all"); err != nil {
						return fmt.Errorf("softflowctl: %v: %s", err, out)
					}
				}
				udp, icmp = nil, false
				var pk uint64
				for _, r := range s.records() {
					p, _ := field(r, "IPProtocol")
					switch p {
					case "17":
						if dp, _ := field(r, "DestinationPort"); dp == "7777" {
							udp = append(udp, r)
							v, _ := field(r, "Packets")
							x, _ := strconv.ParseUint(v, 10, 64)
							pk += x
						}
					case "1", "58":
						icmp = true
					}
				}
				if pk < n-uint64(tc.rate) || (tc.rate == 1 && !icmp) {
					return fmt.Errorf("%d UDP packets in %d records, ICMP %v; stats %+v; softflowd: %s", pk, len(udp), icmp, srv.Stats(), sf.Output())
				}
				return nil
			})

			var pk, by uint64
			known := logpush.Fields("network_analytics_logs")
			for _, r := range udp {
				for _, f := range r {
					if !slices.Contains(known, f.Name) {
						t.Errorf("field %s is not in the network_analytics_logs catalogue", f.Name)
					}
				}
				for name, want := range map[string]string{
					"Source": tc.source, "SamplerAddress": "10.77.0.1",
					"IPSourceAddress": src, "IPDestinationAddress": dst,
					"IPSourceSubnet": srcNet, "IPProtocolName": "udp",
					"SourcePort": strconv.Itoa(srcPort), "SampleInterval": strconv.Itoa(tc.rate),
				} {
					if got, _ := field(r, name); got != want {
						t.Errorf("%s = %q, want %q in %v", name, got, want, r)
					}
				}
				v, _ := field(r, "Packets")
				x, _ := strconv.ParseUint(v, 10, 64)
				pk += x
				v, _ = field(r, "Bytes")
				x, _ = strconv.ParseUint(v, 10, 64)
				by += x
				// Flow times must be real times, not 1970 or uptime.
				for _, name := range []string{"FlowStartTime", "FlowEndTime"} {
					v, ok := field(r, name)
					if !ok {
						t.Errorf("no %s in %v", name, r)
						continue
					}
					ts, err := time.Parse(time.RFC3339Nano, v)
					if err != nil {
						t.Errorf("%s %q: %v", name, v, err)
					} else if d := time.Since(ts); d < -time.Minute || d > 10*time.Minute {
						t.Errorf("%s %v is %v from now", name, ts, d)
					}
				}
			}
			// Sampling 1 in rate: the scaled count is within one sample
			// interval of what was sent.
			size := uint64(payload + 8 + ipHeader)
			if tc.rate == 1 && (pk != n || by != n*size) {
				t.Errorf("%d packets, %d bytes; sent %d packets, %d bytes", pk, by, n, n*size)
			}
			slack := uint64(tc.rate)
			if pk+slack < n || pk > n+slack || by+slack*size < n*size || by > (n+slack)*size {
				t.Errorf("scaled by %d: %d packets, %d bytes; sent %d packets, %d bytes", tc.rate, pk, by, n, n*size)
			}
			if st := srv.Stats(); st.Records == 0 || st.Datagrams == 0 {
				t.Errorf("stats %+v", st)
			}
			if *update && tc.rate > 1 {
				tees[0].mu.Lock()
				defer tees[0].mu.Unlock()
				// The first few hold the test's flows; the rest are filler.
				if err := writeDatagrams(filepath.Join("testdata", tool+"-"+tc.name+".bin"), tees[0].seen[:min(len(tees[0].seen), 4)]); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// writeDatagrams stores datagrams as length-prefixed frames (2 bytes,
// big-endian, then the datagram).
func writeDatagrams(path string, ds [][]byte) error {
	if len(ds) == 0 {
		return errors.New("no datagrams to store")
	}
	var out []byte
	for _, d := range ds {
		out = append(out, byte(len(d)>>8), byte(len(d)))
		out = append(out, d...)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}
