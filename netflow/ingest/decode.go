// Package ingest receives flow records from other routers — NetFlow v5,
// NetFlow v9 and IPFIX on UDP — and turns them into network_analytics_logs
// records in the same stream as the gateway's own NFLOG samples, each marked
// with its Source and the exporter (SamplerAddress) it came from.
//
// Decoding is goflow2's (decoders/netflowlegacy, decoders/netflow and
// decoders/sflow); this
// package keeps the per-exporter state goflow2 leaves to its caller:
// templates per exporter and observation domain, the sampling rate each
// exporter announces (in the v5 header, or in v9/IPFIX options data), and
// the clock needed to place uptime-relative timestamps.
package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"github.com/netsampler/goflow2/v2/decoders/netflowlegacy"
)

// Source markers of ingested records (the gateway's own samples are "nflog").
const (
	SourceNetFlow = "netflow" // NetFlow v5 and v9
	SourceIPFIX   = "ipfix"
)

// Drop reasons: the label of edgegw_netflow_ingest_dropped_total.
const (
	ReasonShort           = "short"            // shorter than any header
	ReasonBadVersion      = "bad_version"      // not NetFlow v5, v9, IPFIX or sFlow v5
	ReasonMalformed       = "malformed"        // the decoder rejected it
	ReasonUnknownTemplate = "unknown_template" // a data set whose template has not been seen
	ReasonNoAddress       = "no_address"       // a flow without source or destination address
	ReasonPanic           = "decoder_panic"    // the decoder panicked (a bug; the datagram is dropped)
	ReasonNotAllowed      = "not_allowed"      // from an address outside the allowed exporters
)

// Reasons lists every drop reason, for metrics.
var Reasons = []string{ReasonShort, ReasonBadVersion, ReasonMalformed, ReasonUnknownTemplate, ReasonNoAddress, ReasonPanic, ReasonNotAllowed}

// Flow is one flow record an exporter sent, with its counts already scaled
// by the exporter's sampling interval.
type Flow struct {
	Source       string         // SourceNetFlow, SourceIPFIX or SourceSFlow
	Exporter     netip.AddrPort // the router that sent it
	Version      uint16         // 5, 9 or 10; sFlow: 5
	Domain       uint32         // v9 source ID or IPFIX observation domain
	Src, Dst     netip.Addr
	SrcPort      uint16
	DstPort      uint16
	Protocol     uint8
	TCPFlags     uint8
	Bytes        uint64 // scaled
	Packets      uint64 // scaled
	SampleRate   uint32 // 1 in SampleRate packets was counted; 1 if unsampled
	Start, End   time.Time
	InIf, OutIf  uint32
	ICMPType     uint8
	ICMPCode     uint8
	HasICMP      bool
	ReceivedTime time.Time
}

// DropError is a datagram (or part of one) the decoder could not use.
type DropError struct {
	Reason string
	Err    error
}

func (e *DropError) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *DropError) Unwrap() error { return e.Err }

func drop(reason string, err error) error { return &DropError{Reason: reason, Err: err} }

// exporter is what the decoder remembers about one router.
type exporter struct {
	templates templates
	// sampling is the announced interval per version and domain.
	sampling map[domainKey]uint32
	// initTime is an IPFIX domain's systemInitTimeMilliseconds, sent in
	// options data by exporters (softflowd) whose flows carry uptime-
	// relative times.
	initTime map[domainKey]time.Time
}

type domainKey struct {
	version uint16
	domain  uint32
}

// MaxExporters bounds the routers one Decoder remembers: a flood of
// datagrams from forged sources must not grow its memory without limit.
const MaxExporters = 4096

// Decoder turns datagrams into flows. It keeps each exporter's templates
// and sampling rate. It is not safe for concurrent use: each listener's
// reader goroutine owns one.
type Decoder struct {
	exporters map[netip.Addr]*exporter
	// Reused from datagram to datagram: the data sets found in one and
	// the flow handed to emit (emit must not keep the pointer).
	data []dataSet
	flow Flow
}

// NewDecoder returns a Decoder that has seen no exporter yet.
func NewDecoder() *Decoder { return &Decoder{exporters: map[netip.Addr]*exporter{}} }

func (d *Decoder) exporter(a netip.Addr) *exporter {
	e := d.exporters[a]
	if e == nil {
		if len(d.exporters) >= MaxExporters {
			// Forget everyone: legitimate exporters resend templates.
			clear(d.exporters)
		}
		e = &exporter{templates: templates{}, sampling: map[domainKey]uint32{}, initTime: map[domainKey]time.Time{}}
		d.exporters[a] = e
	}
	return e
}

// Decode reads one datagram from exporter from, received at now, and calls
// emit for every flow in it. Flows decoded before an error are still
// emitted; the error (a *DropError) says why the rest was dropped. The
// *Flow is the decoder's, valid only during the call: emit copies what it
// keeps.
func (d *Decoder) Decode(from netip.AddrPort, pkt []byte, now time.Time, emit func(*Flow)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = drop(ReasonPanic, fmt.Errorf("%v", r))
		}
	}()
	if len(pkt) < 4 {
		return drop(ReasonShort, fmt.Errorf("%d bytes", len(pkt)))
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if binary.BigEndian.Uint32(pkt) == 5 {
		return d.decodeSFlow(from, pkt, now, emit)
	}
	switch v := binary.BigEndian.Uint16(pkt); v {
	case 5:
		return d.decodeV5(from, pkt, now, emit)
	case 9, 10:
		return d.decodeTemplated(from, pkt, now, emit)
	default:
		return drop(ReasonBadVersion, fmt.Errorf("version %d", v))
	}
}

func (d *Decoder) decodeV5(from netip.AddrPort, pkt []byte, now time.Time, emit func(*Flow)) error {
	// goflow2 allocates the header's count of records up front and leaves
	// the ones the datagram lacks zeroed: check the count first.
	if len(pkt) < 24 {
		return drop(ReasonMalformed, fmt.Errorf("NetFlow v5 header: %d bytes", len(pkt)))
	}
	if n := int(binary.BigEndian.Uint16(pkt[2:])); n > 30 || len(pkt) < 24+48*n {
		return drop(ReasonMalformed, fmt.Errorf("NetFlow v5: %d records in %d bytes (at most 30 of 48 bytes after a 24-byte header)", n, len(pkt)))
	}
	var p netflowlegacy.PacketNetFlowV5
	if err := netflowlegacy.DecodeMessageVersion(bytes.NewBuffer(pkt), &p); err != nil {
		return drop(ReasonMalformed, err)
	}
	// The top two bits are the sampling mode, the rest the interval.
	rate := uint32(p.SamplingInterval & 0x3fff)
	if rate == 0 {
		rate = 1
	}
	clk := clock{export: time.Unix(int64(p.UnixSecs), int64(p.UnixNSecs)), uptime: p.SysUptime, relative: true}
	for i := range p.Records {
		r := &p.Records[i]
		f := Flow{
			Source: SourceNetFlow, Exporter: from, Version: 5, Domain: uint32(p.EngineType)<<8 | uint32(p.EngineId),
			Src: v4(uint32(r.SrcAddr)), Dst: v4(uint32(r.DstAddr)),
			SrcPort: r.SrcPort, DstPort: r.DstPort, Protocol: r.Proto, TCPFlags: r.TCPFlags,
			Bytes: uint64(r.DOctets) * uint64(rate), Packets: uint64(r.DPkts) * uint64(rate), SampleRate: rate,
			Start: clk.at(uint64(r.First)), End: clk.at(uint64(r.Last)),
			InIf: uint32(r.Input), OutIf: uint32(r.Output), ReceivedTime: now,
		}
		icmpFromPort(&f)
		emit(&f)
	}
	return nil
}

// icmpFromPort reads ICMP type and code where NetFlow v5 and many v9
// exporters put them: the destination port, as type<<8|code.
func icmpFromPort(f *Flow) {
	if (f.Protocol == 1 || f.Protocol == 58) && !f.HasICMP {
		f.ICMPType, f.ICMPCode, f.HasICMP = uint8(f.DstPort>>8), uint8(f.DstPort), true
		f.SrcPort, f.DstPort = 0, 0
	}
}

func v4(a uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b)
}

// decodeTemplated reads a NetFlow v9 or IPFIX datagram. It walks the
// sets itself: template and options sets go to goflow2 (rare, and
// goflow2 keeps their parsing), while data sets whose template is a
// plain template are read here, straight from the datagram's bytes into
// a Flow. goflow2's data-set path allocates a value per field (an
// interface holding a slice) and a slice per record, which was most of
// ingest's CPU; this path allocates nothing per record.
// decode_ref_test.go keeps the all-goflow2 reading and FuzzFastPath checks
// both agree on every datagram.
func (d *Decoder) decodeTemplated(from netip.AddrPort, pkt []byte, now time.Time, emit func(*Flow)) error {
	e := d.exporter(from.Addr())
	var (
		version = binary.BigEndian.Uint16(pkt)
		domain  uint32
		clk     clock
		source  = SourceNetFlow
		body    []byte
		limit   uint16 // IPFIX: the sets' length from the header (wrapping as goflow2's does)
	)
	if version == 9 {
		if len(pkt) < 20 {
			return drop(ReasonMalformed, fmt.Errorf("NetFlow v9 header: %d bytes", len(pkt)))
		}
		domain = binary.BigEndian.Uint32(pkt[16:])
		clk = clock{export: time.Unix(int64(binary.BigEndian.Uint32(pkt[8:])), 0), uptime: binary.BigEndian.Uint32(pkt[4:]), relative: true}
		// goflow2 read as many flowsets as the header's Count, which
		// RFC 3954 defines as the number of records, not of flowsets;
		// some exporters (softflowd) count only the data records. Read to
		// the end of the datagram (fewer than 4 bytes left are padding).
		body = pkt[20:]
	} else {
		if len(pkt) < 16 {
			return drop(ReasonMalformed, fmt.Errorf("IPFIX header: %d bytes", len(pkt)))
		}
		source = SourceIPFIX
		domain = binary.BigEndian.Uint32(pkt[12:])
		clk = clock{export: time.Unix(int64(binary.BigEndian.Uint32(pkt[4:])), 0)}
		// Sets are read while fewer than the message length's bytes
		// have been (the last may run past it, to the datagram's end),
		// as goflow2 reads them.
		body = pkt[16:]
		limit = binary.BigEndian.Uint16(pkt[2:]) - 16
	}
	key := domainKey{version, domain}
	// Options are applied as they come, data sets read after all of them:
	// a datagram may carry the sampling rate and the data it applies to
	// together. Templates are looked up in order, as goflow2 did.
	data := d.data[:0]
	var derr error
	for rest := body; len(rest) > 0 && (version == 9 || len(body)-len(rest) < int(limit)); {
		if len(rest) < 4 {
			if version == 9 {
				break
			}
			return drop(ReasonMalformed, fmt.Errorf("IPFIX set header: %d bytes left", len(rest)))
		}
		id, n := binary.BigEndian.Uint16(rest), int(binary.BigEndian.Uint16(rest[2:]))
		if n < 4 {
			return drop(ReasonMalformed, fmt.Errorf("set %d: length %d shorter than its header", id, n))
		}
		set := rest[:min(n, len(rest))]
		rest = rest[len(set):]
		if id >= 256 {
			tmpl, err := e.templates.GetTemplate(version, domain, id)
			if err != nil {
				derr = errors.Join(derr, fmt.Errorf("set %d in domain %d: %w", id, domain, err))
				continue
			}
			if t, ok := tmpl.(netflow.TemplateRecord); ok {
				data = append(data, dataSet{fields: t.Fields, body: set[4:]})
				continue
			}
		}
		fs, err := netflow.DecodeMessageCommonFlowSet(bytes.NewBuffer(set), e.templates, domain, version)
		if err != nil {
			if !errors.Is(err, netflow.ErrorTemplateNotFound) {
				return drop(ReasonMalformed, err)
			}
			derr = errors.Join(derr, err)
		}
		if o, ok := fs.(netflow.OptionsDataFlowSet); ok {
			for _, r := range o.Records {
				e.options(key, r.OptionsValues)
				e.options(key, r.ScopesValues)
			}
		}
	}
	d.data = data[:0]
	rate := e.sampling[key]
	if rate == 0 {
		rate = 1
	}
	if boot, ok := e.initTime[key]; ok && version == 10 {
		clk = clk.booted(boot)
	}
	var noAddr int
	f := &d.flow
	for _, ds := range data {
		size := netflow.GetTemplateSize(version, ds.fields)
		if size == 0 && len(ds.fields) == 0 {
			continue // a template without fields has no records to read
		}
		for b := ds.body; len(b) >= size; {
			*f = Flow{Source: source, Exporter: from, Version: version, Domain: domain, SampleRate: rate, ReceivedTime: now}
			var ok bool
			var err error
			b, ok, err = readRecord(f, ds.fields, b, clk)
			if err != nil {
				return drop(ReasonMalformed, err)
			}
			if !ok {
				noAddr++
				continue
			}
			f.Bytes *= uint64(rate)
			f.Packets *= uint64(rate)
			icmpFromPort(f)
			emit(f)
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

// dataSet is a data set found in a datagram, read once the datagram's
// options have been applied.
type dataSet struct {
	fields []netflow.Field
	body   []byte
}

var errVarLen = errors.New("data record: variable-length field without its length")

// readRecord reads one data record from b by its template's fields into
// f, as goflow2's DecodeDataSetUsingFields would (a variable-length field
// carries its length in one byte, or 0xff and two; a value cut short by
// the set's end is what is left), and returns the rest of b. ok is false
// for a record without addresses.
func readRecord(f *Flow, fields []netflow.Field, b []byte, clk clock) (rest []byte, ok bool, err error) {
	var t times
	for i := range fields {
		fl := &fields[i]
		n := int(fl.Length)
		if fl.Length == 0xffff {
			if len(b) < 1 {
				return b, false, errVarLen
			}
			n, b = int(b[0]), b[1:]
			if n == 0xff {
				if len(b) < 2 {
					return b, false, errVarLen
				}
				n, b = int(binary.BigEndian.Uint16(b)), b[2:]
			}
		}
		n = min(n, len(b))
		v := b[:n]
		b = b[n:]
		if !fl.PenProvided {
			fillField(f, &t, &clk, fl.Type, v)
		}
	}
	return b, t.finish(f, clk), nil
}

// Information elements this package reads (IANA IPFIX numbers, which
// NetFlow v9 shares for these).
const (
	ieOctetDelta     = 1
	iePacketDelta    = 2
	ieProtocol       = 4
	ieTCPFlags       = 6
	ieSrcPort        = 7
	ieSrcV4          = 8
	ieInIf           = 10
	ieDstPort        = 11
	ieDstV4          = 12
	ieOutIf          = 14
	ieLastSwitched   = 21
	ieFirstSwitched  = 22
	ieSrcV6          = 27
	ieDstV6          = 28
	ieICMPTypeV4     = 32
	ieSamplingIntvl  = 34 // v9 SAMPLING_INTERVAL
	ieSamplerRandom  = 50 // v9 FLOW_SAMPLER_RANDOM_INTERVAL
	ieOctetTotal     = 85
	iePacketTotal    = 86
	ieICMPTypeV6     = 139
	ieStartSec       = 150
	ieEndSec         = 151
	ieStartMilli     = 152
	ieEndMilli       = 153
	ieSysInitMilli   = 160
	iePacketInterval = 305 // PSAMP samplingPacketInterval
	iePacketSpace    = 306 // PSAMP samplingPacketSpace
)

// options notes the sampling rate and system init time an options record
// announces for a domain.
func (e *exporter) options(key domainKey, vals []netflow.DataField) {
	var interval, space uint64
	var haveInterval bool
	for _, v := range vals {
		if v.PenProvided {
			continue
		}
		b, _ := v.Value.([]byte)
		n, ok := uintOf(b)
		if !ok {
			continue
		}
		switch v.Type {
		case ieSamplingIntvl, ieSamplerRandom:
			if n > 0 && n < 1<<32 {
				e.sampling[key] = uint32(n)
			}
		case iePacketInterval:
			interval, haveInterval = n, true
		case iePacketSpace:
			space = n
		case ieSysInitMilli:
			e.initTime[key] = time.UnixMilli(int64(n))
		}
	}
	// PSAMP systematic count-based sampling: interval packets taken, then
	// space packets skipped; 1 in (interval+space)/interval is counted.
	if haveInterval && interval > 0 {
		if r := (interval + space) / interval; r < 1<<32 {
			e.sampling[key] = uint32(max(r, 1))
		}
	}
}

// clock places an exporter's uptime-relative timestamps (milliseconds
// since it booted) in time.
type clock struct {
	// relative: the uptime at export time is known (NetFlow's header, or
	// IPFIX's export time less systemInitTimeMilliseconds); a timestamp is
	// placed by its signed 32-bit distance from it, which survives the
	// counter wrapping after 49 days and flows seen a moment before the
	// exporter's clock started (softflowd).
	relative bool
	export   time.Time
	uptime   uint32
}

// booted returns the clock of an exporter that booted at boot.
func (c clock) booted(boot time.Time) clock {
	c.relative, c.uptime = true, uint32(c.export.Sub(boot).Milliseconds())
	return c
}

// at is the time of an uptime-relative timestamp; zero if the exporter
// never said when it booted.
func (c clock) at(ms uint64) time.Time {
	if !c.relative {
		return time.Time{}
	}
	return c.export.Add(-time.Duration(int32(c.uptime-uint32(ms))) * time.Millisecond)
}

// times are the uptime-relative timestamps of a record being read.
type times struct {
	first, last         uint64
	haveFirst, haveLast bool
}

// fillField reads one field of a data record into f (uptime-relative times
// into t; a system init time in the record itself re-bases clk).
func fillField(f *Flow, t *times, clk *clock, typ uint16, b []byte) {
	switch typ {
	case ieSrcV4, ieSrcV6, ieDstV4, ieDstV6:
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		if typ == ieSrcV4 || typ == ieSrcV6 {
			f.Src = a.Unmap()
		} else {
			f.Dst = a.Unmap()
		}
		return
	}
	n, ok := uintOf(b)
	if !ok {
		return
	}
	switch typ {
	case ieOctetDelta, ieOctetTotal:
		f.Bytes = n
	case iePacketDelta, iePacketTotal:
		f.Packets = n
	case ieProtocol:
		f.Protocol = uint8(n)
	case ieTCPFlags:
		f.TCPFlags = uint8(n)
	case ieSrcPort:
		f.SrcPort = uint16(n)
	case ieDstPort:
		f.DstPort = uint16(n)
	case ieInIf:
		f.InIf = uint32(n)
	case ieOutIf:
		f.OutIf = uint32(n)
	case ieICMPTypeV4, ieICMPTypeV6:
		f.ICMPType, f.ICMPCode, f.HasICMP = uint8(n>>8), uint8(n), true
	case ieFirstSwitched:
		t.first, t.haveFirst = n, true
	case ieLastSwitched:
		t.last, t.haveLast = n, true
	case ieStartSec:
		f.Start = time.Unix(int64(n), 0)
	case ieEndSec:
		f.End = time.Unix(int64(n), 0)
	case ieStartMilli:
		f.Start = time.UnixMilli(int64(n))
	case ieEndMilli:
		f.End = time.UnixMilli(int64(n))
	case ieSysInitMilli:
		*clk = clk.booted(time.UnixMilli(int64(n)))
	}
}

// finish places the record's uptime-relative times (absolute ones win;
// zero time if the exporter never said when it booted) and reports
// whether the record has both addresses (a flow this package can name).
func (t *times) finish(f *Flow, clk clock) bool {
	if t.haveFirst && f.Start.IsZero() {
		f.Start = clk.at(t.first)
	}
	if t.haveLast && f.End.IsZero() {
		f.End = clk.at(t.last)
	}
	if f.HasICMP {
		f.SrcPort, f.DstPort = 0, 0
	}
	return f.Src.IsValid() && f.Dst.IsValid()
}

// fillFlow reads a data record goflow2 decoded (sFlow's and the reference
// reading's path); it reports false if the record has no addresses.
func fillFlow(f *Flow, vals []netflow.DataField, clk clock) bool {
	var t times
	for _, v := range vals {
		if v.PenProvided {
			continue
		}
		b, _ := v.Value.([]byte)
		fillField(f, &t, &clk, v.Type, b)
	}
	return t.finish(f, clk)
}

// uintOf reads a big-endian unsigned integer of 1 to 8 bytes (IPFIX
// reduced-size encoding allows any of them).
func uintOf(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return n, true
}
