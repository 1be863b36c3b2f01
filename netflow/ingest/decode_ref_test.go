package ingest

import (
	"bytes"
	"errors"
	"fmt"

	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// decodeRef is Decode with NetFlow v9 and IPFIX read wholly by goflow2
// (its DecodeMessageVersion, then the flowsets past the header's count),
// as the package did before it read data sets itself: the reference the
// fast path is checked against.
func (d *Decoder) decodeRef(from netip.AddrPort, pkt []byte, now time.Time, emit func(*Flow)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = drop(ReasonPanic, errors.New("panic"))
		}
	}()
	if len(pkt) < 4 || (pkt[1] != 9 && pkt[1] != 10) || pkt[0] != 0 {
		return d.Decode(from, pkt, now, emit)
	}
	return d.decodeTemplatedRef(netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), pkt, now, emit)
}

func (d *Decoder) decodeTemplatedRef(from netip.AddrPort, pkt []byte, now time.Time, emit func(*Flow)) error {
	e := d.exporter(from.Addr())
	var (
		v9    netflow.NFv9Packet
		ipfix netflow.IPFIXPacket
	)
	buf := bytes.NewBuffer(pkt)
	derr := netflow.DecodeMessageVersion(buf, e.templates, &v9, &ipfix)
	if derr != nil && !errors.Is(derr, netflow.ErrorTemplateNotFound) {
		return drop(ReasonMalformed, derr)
	}
	// goflow2 reads as many v9 flowsets as the header's Count, which
	// RFC 3954 defines as the number of records, not of flowsets; some
	// exporters (softflowd) count only the data records. Read on to the
	// end of the datagram (each flowset takes at least its 4-byte header;
	// fewer bytes left are padding).
	for v9.Version == 9 && buf.Len() >= 4 {
		fs, err := netflow.DecodeMessageCommonFlowSet(buf, e.templates, v9.SourceId, 9)
		if err != nil && !errors.Is(err, netflow.ErrorTemplateNotFound) {
			return drop(ReasonMalformed, err)
		}
		derr = errors.Join(derr, err)
		v9.FlowSets = append(v9.FlowSets, fs)
	}
	var (
		version uint16
		domain  uint32
		sets    []any
		clk     clock
		source  = SourceNetFlow
	)
	if v9.Version == 9 {
		version, domain, sets = 9, v9.SourceId, v9.FlowSets
		clk = clock{export: time.Unix(int64(v9.UnixSeconds), 0), uptime: v9.SystemUptime, relative: true}
	} else {
		version, domain, sets, source = 10, ipfix.ObservationDomainId, ipfix.FlowSets, SourceIPFIX
		clk = clock{export: time.Unix(int64(ipfix.ExportTime), 0)}
	}
	key := domainKey{version, domain}
	// Options first: a datagram may carry the sampling rate and the data
	// it applies to together.
	for _, s := range sets {
		if o, ok := s.(netflow.OptionsDataFlowSet); ok {
			for _, r := range o.Records {
				e.options(key, r.OptionsValues)
				e.options(key, r.ScopesValues)
			}
		}
	}
	rate := e.sampling[key]
	if rate == 0 {
		rate = 1
	}
	if boot, ok := e.initTime[key]; ok && version == 10 {
		clk = clk.booted(boot)
	}
	var noAddr int
	for _, s := range sets {
		ds, ok := s.(netflow.DataFlowSet)
		if !ok {
			continue
		}
		for _, r := range ds.Records {
			f := Flow{Source: source, Exporter: from, Version: version, Domain: domain, SampleRate: rate, ReceivedTime: now}
			if !fillFlow(&f, r.Values, clk) {
				noAddr++
				continue
			}
			f.Bytes *= uint64(rate)
			f.Packets *= uint64(rate)
			icmpFromPort(&f)
			emit(&f)
		}
	}
	if derr != nil {
		return drop(ReasonUnknownTemplate, derr)
	}
	if noAddr > 0 {
		return drop(ReasonNoAddress, fmt.Errorf("%d flow records without addresses", noAddr))
	}
	return nil
}

// FuzzFastPath checks the decoder's own data-set reading against goflow2's
// on the same datagrams (softflowd's seeds, mutated): the same error
// reason, and when the reference reads the datagram whole, the same flows.
func FuzzFastPath(f *testing.F) {
	var all [][]byte
	for _, name := range []string{"softflowd-v9-sampled.bin", "softflowd-ipfix-sampled.bin"} {
		for _, p := range datagrams(f, name) {
			f.Add(p)
			all = append(all, p)
		}
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		now := time.Unix(1_800_000_000, 0)
		fast, ref := NewDecoder(), NewDecoder()
		for _, p := range all {
			fast.Decode(exporterAddr, p, now, func(*Flow) {})
			ref.decodeRef(exporterAddr, p, now, func(*Flow) {})
		}
		var got, want []Flow
		gerr := fast.Decode(exporterAddr, pkt, now, func(fl *Flow) { got = append(got, *fl) })
		werr := ref.decodeRef(exporterAddr, pkt, now, func(fl *Flow) { want = append(want, *fl) })
		if reason(werr) == ReasonPanic {
			t.Skip("goflow2 panicked: no reference")
		}
		if reason(werr) == ReasonMalformed {
			// goflow2 drops the whole datagram; the fast path emits the
			// records before the fault. Both must call it malformed,
			// except for trailing bytes of a v9 datagram, which the fast
			// path takes as padding.
			if reason(gerr) != ReasonMalformed && !(len(pkt) > 1 && pkt[1] == 9) {
				t.Fatalf("fast path: %v, reference: %v", gerr, werr)
			}
			return
		}
		if reason(gerr) != reason(werr) {
			t.Fatalf("fast path: %v, reference: %v", gerr, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast path flows\n%+v\nreference\n%+v", got, want)
		}
	})
}

func reason(err error) string {
	var de *DropError
	if errors.As(err, &de) {
		return de.Reason
	}
	if err != nil {
		return "other"
	}
	return ""
}
