package ingest

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow"
)

// datagrams reads a testdata file of length-prefixed datagrams, as
// TestSoftflowd -update writes them.
func datagrams(tb testing.TB, name string) [][]byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			tb.Fatalf("%s: truncated frame", name)
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out
}

var exporterAddr = netip.MustParseAddrPort("10.77.0.1:40000")

func decodeAll(t *testing.T, d *Decoder, pkts [][]byte) ([]Flow, error) {
	t.Helper()
	var flows []Flow
	var errs error
	for _, p := range pkts {
		errs = errors.Join(errs, d.Decode(exporterAddr, p, time.Now(), func(f *Flow) { flows = append(flows, *f) }))
	}
	return flows, errs
}

// TestDecodeCaptured decodes datagrams softflowd and pmacctd sent with
// 1-in-4 sampling (TestSoftflowd -update captured them): the 40 UDP
// datagrams of 128 bytes to port 7777 come out scaled by the announced
// rate — the v5 header's, v9's options data (SAMPLING_INTERVAL), IPFIX's
// PSAMP interval and space, sFlow's per-sample rate — with times placed by
// the exporter's clock.
func TestDecodeCaptured(t *testing.T) {
	for _, tc := range []struct {
		file    string
		version uint16
		source  string
	}{
		{"softflowd-v5-sampled.bin", 5, SourceNetFlow},
		{"softflowd-v9-sampled.bin", 9, SourceNetFlow},
		{"softflowd-ipfix-sampled.bin", 10, SourceIPFIX},
		{"pmacctd-sflow-sampled.bin", 5, SourceSFlow},
	} {
		t.Run(tc.file, func(t *testing.T) {
			flows, err := decodeAll(t, NewDecoder(), datagrams(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var pk, by uint64
			var n int
			for _, f := range flows {
				if f.Protocol != 17 || f.DstPort != 7777 {
					continue
				}
				n++
				if f.Source != tc.source || f.Version != tc.version || f.Exporter != exporterAddr || f.SampleRate != 4 ||
					f.Src != netip.MustParseAddr("10.77.0.1") || f.Dst != netip.MustParseAddr("10.77.0.2") || f.SrcPort == 0 {
					t.Errorf("flow %+v", f)
				}
				if f.Start.Year() < 2026 || f.End.Before(f.Start) || f.End.Sub(f.Start) > time.Minute {
					t.Errorf("times %v to %v", f.Start, f.End)
				}
				pk += f.Packets
				by += f.Bytes
			}
			if n == 0 || pk < 36 || pk > 44 || by != pk*128 {
				t.Errorf("%d flows: %d packets, %d bytes; sent 40 packets of 128 bytes", n, pk, by)
			}
		})
	}
}

// TestDecodeDrops: what the decoder cannot use is reported with its reason
// and never panics.
func TestDecodeDrops(t *testing.T) {
	v9 := datagrams(t, "softflowd-v9-sampled.bin")[0]
	// The same datagram without its template flowsets: data whose
	// template this decoder has never seen.
	noTemplate := append([]byte(nil), v9[:20]...)
	rest := v9[20:]
	for len(rest) >= 4 {
		id, n := binary.BigEndian.Uint16(rest), int(binary.BigEndian.Uint16(rest[2:]))
		if n < 4 || n > len(rest) {
			t.Fatalf("flowset length %d", n)
		}
		if id >= 256 {
			noTemplate = append(noTemplate, rest[:n]...)
		}
		rest = rest[n:]
	}
	badLen := append([]byte(nil), v9...)
	binary.BigEndian.PutUint16(badLen[22:], 2) // first flowset shorter than its header

	for _, tc := range []struct {
		name   string
		pkt    []byte
		reason string
	}{
		{"empty", nil, ReasonShort},
		{"short", []byte{0, 5, 0}, ReasonShort},
		{"version 7", []byte{0, 7, 0, 1, 0, 0, 0, 0}, ReasonBadVersion},
		{"sflow v4", []byte{0, 0, 0, 4, 0, 0, 0, 1}, ReasonBadVersion},
		{"sflow truncated", []byte{0, 0, 0, 5, 0, 0, 0, 1}, ReasonMalformed},
		{"sflow record count 2^32-1", sflowHugeCount(), ReasonMalformed},
		{"v5 truncated", datagrams(t, "softflowd-v5-sampled.bin")[0][:30], ReasonMalformed},
		{"v9 header only", v9[:10], ReasonMalformed},
		{"v9 bad flowset length", badLen, ReasonMalformed},
		{"v9 unknown template", noTemplate, ReasonUnknownTemplate},
		{"ipfix truncated", datagrams(t, "softflowd-ipfix-sampled.bin")[0][:12], ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := NewDecoder().Decode(exporterAddr, tc.pkt, time.Now(), func(*Flow) {})
			var de *DropError
			if !errors.As(err, &de) || de.Reason != tc.reason {
				t.Fatalf("error %v, want reason %s", err, tc.reason)
			}
		})
	}
}

// TestTemplatesPerExporter: a template learned from one exporter does not
// decode another's data with the same template ID.
func TestTemplatesPerExporter(t *testing.T) {
	pkts := datagrams(t, "softflowd-v9-sampled.bin")
	d := NewDecoder()
	if _, err := decodeAll(t, d, pkts); err != nil {
		t.Fatal(err)
	}
	// The full datagram from another exporter decodes on its own...
	other := netip.MustParseAddrPort("10.77.0.9:40000")
	var got []Flow
	if err := d.Decode(other, pkts[0], time.Now(), func(f *Flow) { got = append(got, *f) }); err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[0].Exporter != other {
		t.Fatalf("flows %+v", got)
	}
	// ...but data alone from a third is not read with the first's templates.
	third := netip.MustParseAddrPort("10.77.0.10:40000")
	dataOnly := append([]byte(nil), pkts[0][:20]...)
	rest := pkts[0][20:]
	for len(rest) >= 4 {
		id, n := binary.BigEndian.Uint16(rest), int(binary.BigEndian.Uint16(rest[2:]))
		if id >= 256 {
			dataOnly = append(dataOnly, rest[:n]...)
		}
		rest = rest[n:]
	}
	var de *DropError
	if err := d.Decode(third, dataOnly, time.Now(), func(f *Flow) { t.Errorf("flow %+v from an exporter without templates", f) }); !errors.As(err, &de) || de.Reason != ReasonUnknownTemplate {
		t.Fatalf("error %v, want unknown_template", err)
	}
}

// FuzzDecode feeds arbitrary datagrams (seeded with softflowd's) to a
// decoder that has already learned softflowd's templates: it must never
// panic (decoder_panic would mean goflow2 did, which the decoder
// survives, but the fuzz target fails on it too) and every flow it emits
// must carry addresses.
func FuzzDecode(f *testing.F) {
	var all [][]byte
	for _, name := range []string{"softflowd-v5-sampled.bin", "softflowd-v9-sampled.bin", "softflowd-ipfix-sampled.bin", "pmacctd-sflow-sampled.bin"} {
		for _, p := range datagrams(f, name) {
			f.Add(p)
			all = append(all, p)
		}
	}
	f.Add([]byte{0, 9})
	f.Add([]byte{0, 10, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		d := NewDecoder()
		for _, p := range all {
			d.Decode(exporterAddr, p, time.Now(), func(*Flow) {})
		}
		err := d.Decode(exporterAddr, pkt, time.Now(), func(fl *Flow) {
			if !fl.Src.IsValid() || !fl.Dst.IsValid() || fl.SampleRate == 0 {
				t.Errorf("flow %+v", fl)
			}
			Record(fl, netflowColo)
		})
		var de *DropError
		if errors.As(err, &de) && de.Reason == ReasonPanic {
			t.Fatalf("decoder panicked: %v", err)
		}
	})
}

var netflowColo = netflow.Colo{Code: "ams", Name: "ams01", Country: "NL"}

// sflowHugeCount is an sFlow v5 datagram whose one expanded flow sample
// claims 2^32-1 records, which goflow2 would allocate.
func sflowHugeCount() []byte {
	b := binary.BigEndian.AppendUint32(nil, 5)          // version
	b = binary.BigEndian.AppendUint32(b, 1)             // agent IPv4
	b = append(b, 10, 0, 0, 1)                          // agent
	b = binary.BigEndian.AppendUint32(b, 0)             // sub-agent
	b = binary.BigEndian.AppendUint32(b, 1)             // sequence
	b = binary.BigEndian.AppendUint32(b, 1000)          // uptime
	b = binary.BigEndian.AppendUint32(b, 1)             // samples
	b = binary.BigEndian.AppendUint32(b, 3)             // expanded flow sample
	b = binary.BigEndian.AppendUint32(b, 44)            // length
	b = append(b, make([]byte, 40)...)                  // sequence .. output
	return binary.BigEndian.AppendUint32(b, 0xffffffff) // records
}

// v9Templates is a NetFlow v9 datagram defining templates first..first+n-1
// (each: source IPv4 address only) in domain 7.
func v9Templates(first, n int) []byte {
	b := binary.BigEndian.AppendUint16(nil, 9)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = binary.BigEndian.AppendUint32(b, 1000)                      // uptime
	b = binary.BigEndian.AppendUint32(b, uint32(time.Now().Unix())) // seconds
	b = binary.BigEndian.AppendUint32(b, 1)                         // sequence
	b = binary.BigEndian.AppendUint32(b, 7)                         // source ID
	b = binary.BigEndian.AppendUint16(b, 0)                         // template flowset
	b = binary.BigEndian.AppendUint16(b, uint16(4+8*n))
	for id := first; id < first+n; id++ {
		b = binary.BigEndian.AppendUint16(b, uint16(id))
		b = binary.BigEndian.AppendUint16(b, 1)
		b = binary.BigEndian.AppendUint16(b, ieSrcV4)
		b = binary.BigEndian.AppendUint16(b, 4)
	}
	return b
}

// TestTemplateLimit: an exporter cannot define templates without end; the
// datagram past the limit is dropped as malformed, and the templates kept
// still decode.
func TestTemplateLimit(t *testing.T) {
	d := NewDecoder()
	for first := 256; first < 256+MaxTemplates; first += 512 {
		if err := d.Decode(exporterAddr, v9Templates(first, 512), time.Now(), func(*Flow) {}); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Decode(exporterAddr, v9Templates(256+MaxTemplates, 10), time.Now(), func(*Flow) {})
	var de *DropError
	if !errors.As(err, &de) || de.Reason != ReasonMalformed || !errors.Is(err, errTooManyTemplates) {
		t.Fatalf("error %v, want malformed: too many templates", err)
	}
	if n := len(d.exporters[exporterAddr.Addr()].templates); n != MaxTemplates {
		t.Fatalf("%d templates kept, want %d", n, MaxTemplates)
	}
	// Redefining a known template is no new one.
	if err := d.Decode(exporterAddr, v9Templates(256, 10), time.Now(), func(*Flow) {}); err != nil {
		t.Fatal(err)
	}
}
