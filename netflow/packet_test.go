package netflow

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Hand-assembled packets (headers only; checksums as written).
const (
	// IPv4 TCP SYN 10.0.0.1:1234 → 10.0.0.2:80, options MSS 1460 + NOP NOP + SACK-permitted... (data offset 7).
	v4SYN = `45000030 abcd4000 4006 1111 0a000001 0a000002
	         04d2 0050 00000001 00000000 7002 ffff 2222 0000 020405b4 01010402`
	// IPv4 UDP 10.0.0.1:53 → 10.0.0.2:5353, length 12.
	v4UDP = `4500002000010000 4011 0000 0a000001 0a000002 0035 14e9 000c beef 61626364`
	// IPv4 fragment (offset 185): no transport header.
	v4Frag = `45000020 0001 00b9 4011 0000 0a000001 0a000002 0035 14e9 000c beef`
	// GRE (key 7) over IPv4 carrying IPv4 ICMP echo.
	v4GRE = `45000038 0002 0000 402f 0000 c0000201 c0000202
	         2000 0800 00000007
	         4500001c 0003 0000 3f01 0000 0a010101 0a020202 0800 f7ff 0000 0000`
)

func v6Hop() string {
	// version 6, payload 16 (8 hop-by-hop + 8 ICMPv6), next header 0 (hop-by-hop), hop limit 64
	return `60000000 0010 00 40` + ` 20010db8000000000000000000000001 20010db8000000000000000000000002` +
		` 3a00 0104 00000000` + ` 8000 1234 0001 0002`
}

func TestDecodePacket(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hex   string
		err   error
		check func(t *testing.T, p *Packet)
	}{
		{"v4 tcp syn with options", v4SYN, nil, func(t *testing.T, p *Packet) {
			if p.IP.Src != netip.MustParseAddr("10.0.0.1") || p.IP.Protocol != 6 || p.IP.TTL != 64 || !p.IP.DontFragment || p.IP.Identification != 0xabcd {
				t.Errorf("ip %+v", p.IP)
			}
			if !p.HasTCP || p.SrcPort != 1234 || p.DstPort != 80 || p.TCP.Flags != tcpSYN || p.TCP.DataOffset != 7 ||
				!p.TCP.HasMSS || p.TCP.MSS != 1460 || !p.TCP.SACKPermitted || p.TCP.Window != 0xffff {
				t.Errorf("tcp %+v", p.TCP)
			}
		}},
		{"v4 udp", v4UDP, nil, func(t *testing.T, p *Packet) {
			if !p.HasUDP || p.UDP.Length != 12 || p.SrcPort != 53 || p.DstPort != 5353 || p.HasTCP || p.HasICMP {
				t.Errorf("%+v", p)
			}
		}},
		{"v4 later fragment", v4Frag, nil, func(t *testing.T, p *Packet) {
			if !p.IP.Fragment || p.IP.FragmentOffset != 185 || p.HasPorts || p.HasUDP {
				t.Errorf("%+v", p)
			}
		}},
		{"v6 hop-by-hop then icmpv6", v6Hop(), nil, func(t *testing.T, p *Packet) {
			if p.IP.Version != 6 || p.IP.Protocol != 58 || p.IP.HeaderLength != 48 || !p.HasICMP || p.ICMP.Type != 128 || p.IP.TotalLength != 56 {
				t.Errorf("%+v", p)
			}
		}},
		{"gre over v4 with key", v4GRE, nil, func(t *testing.T, p *Packet) {
			if !p.HasGRE || !p.GRE.HasKey || p.GRE.Key != 7 || p.GRE.HeaderLength != 8 || p.GRE.EtherType != 0x0800 {
				t.Errorf("gre %+v", p.GRE)
			}
			if p.Outer == nil || p.Outer.Src != netip.MustParseAddr("192.0.2.1") || p.IP.Src != netip.MustParseAddr("10.1.1.1") ||
				p.IP.Protocol != 1 || !p.HasICMP || p.ICMP.Type != 8 || p.IP.TTL != 63 {
				t.Errorf("inner %+v outer %+v", p.IP, p.Outer)
			}
		}},
		{"truncated tcp keeps ports", v4SYN[:strings.Index(v4SYN, "00000001")], nil, func(t *testing.T, p *Packet) {
			if !p.HasPorts || p.HasTCP || p.DstPort != 80 {
				t.Errorf("%+v", p)
			}
		}},
		{"empty", "", ErrEmptyPacket, nil},
		{"short v4", "4500001c0000", ErrTruncated, nil},
		{"ihl below 5", "44000014000000004006000000000000000000000000", ErrBadHeader, nil},
		{"total length below ihl", "4500000a000000004006000000000000000000000000", ErrBadHeader, nil},
		{"version 5", "5500001c000000004006000000000000000000000000", ErrBadVersion, nil},
		{"short v6", "600000000000", ErrTruncated, nil},
		{"gre routing bit", `45000020 0002 0000 402f 0000 c0000201 c0000202 4000 0800 00000000 00000000`, ErrBadHeader, nil},
		{"gre in gre", `45000030 0002 0000 402f 0000 c0000201 c0000202 0000 0800
		                45000018 0003 0000 3f2f 0000 0a010101 0a020202 0000 0800`, ErrNestedGRE, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			err := DecodePacket(unhex(t, tc.hex), &p)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if tc.check != nil {
				tc.check(t, &p)
			}
		})
	}
}

func TestTCPFlagsString(t *testing.T) {
	for flags, want := range map[uint8]string{0: "", tcpSYN: "S", tcpSYN | tcpACK: "SA", tcpPSH | tcpACK: "PA", 0xff: "FSRPAUEC", tcpFIN | tcpACK: "FA"} {
		if got := TCPFlagsString(flags); got != want {
			t.Errorf("%#x: %q, want %q", flags, got, want)
		}
	}
}

// TestHandle covers the sampler's path from a sample to the sink without
// the kernel: snapshots, unknown rules, foreign prefixes, malformed
// packets, and that every field it writes is in the dataset's catalogue.
func TestHandle(t *testing.T) {
	sink := &recordSink{}
	now := time.Unix(1_700_000_000, 5)
	s, err := New(Options{Group: 7, Sink: sink, Colo: Colo{Code: "fra"}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(Rules{RulesetID: "rs1", RuleIDs: []string{"r1", "r2"}, SampleInterval: 100})
	s.SetInterfaces(Interfaces{3: {Name: "eth0", Role: RoleWAN}})
	s.SetIdentities(IdentityMap{netip.MustParseAddr("10.0.0.1"): {Email: "bob@example.com"}})

	if err := s.Handle(Sample{Prefix: "ef/2/b", InDev: 3, Payload: unhex(t, v4SYN)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(Sample{Prefix: "ef/3/b", Payload: unhex(t, v4SYN)}); err == nil {
		t.Error("rule 3 of a 2-rule set accepted")
	}
	if err := s.Handle(Sample{Prefix: "other", Payload: unhex(t, v4SYN)}); !errors.Is(err, ErrNotOurs) {
		t.Errorf("foreign prefix: %v", err)
	}
	if err := s.Handle(Sample{Prefix: "ef/0/a", Payload: []byte{0x45, 0}}); !errors.Is(err, ErrTruncated) {
		t.Errorf("short packet: %v", err)
	}
	st := s.Stats()
	if st.Samples != 4 || st.Records != 1 || st.Foreign != 1 || st.Malformed["unknown_rule"] != 1 || st.Malformed["truncated"] != 1 {
		t.Errorf("stats %+v", st)
	}
	recs := sink.records()
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	m := recordMap(t, recs[0])
	for k, want := range map[string]any{"Datetime": float64(now.UnixNano()), "ColoCode": "fra", "Direction": "ingress",
		"RuleID": "r2", "RulesetID": "rs1", "Outcome": "drop", "Verdict": "drop", "SampleInterval": float64(100),
		"Email": "bob@example.com", "TCPFlagsString": "S", "IPSourceSubnet": "10.0.0.0/24", "Source": "nflog"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	for _, k := range []string{"TunnelName", "DeviceID", "ColoName", "UDPChecksum", "GREKey"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s present: %v", k, m[k])
		}
	}
	checkCatalogue(t, recs[0])

	// Snapshots swapped later name later records only.
	s.SetColo(Colo{Code: "lhr", Name: "lon-office-1", Country: "GB"})
	s.SetRules(Rules{RulesetID: "rs2", RuleIDs: []string{"x"}, SampleInterval: 10})
	s.SetInterfaces(Interfaces{3: {Name: "wg0", Role: RoleTunnel}})
	s.SetIdentities(nil)
	if err := s.Handle(Sample{Prefix: "ef/1/a", InDev: 3, Payload: unhex(t, v4UDP)}); err != nil {
		t.Fatal(err)
	}
	recs = sink.records()
	m = recordMap(t, recs[1])
	for k, want := range map[string]any{"ColoCode": "lhr", "ColoName": "lon-office-1", "ColoCountry": "GB", "Direction": "egress",
		"RuleID": "x", "RulesetID": "rs2", "Outcome": "pass", "SampleInterval": float64(10), "TunnelName": "wg0", "Email": nil} {
		if m[k] != want {
			t.Errorf("after swaps: %s = %v, want %v", k, m[k], want)
		}
	}
	if m2 := recordMap(t, recs[0]); m2["ColoCode"] != "fra" {
		t.Errorf("an earlier record changed: %v", m2["ColoCode"])
	}
}

// checkCatalogue fails if r has a field the dataset does not list (a job's
// fields: could not select it) or a field twice.
func checkCatalogue(t testing.TB, r logpush.Record) {
	t.Helper()
	known := logpush.Fields(Dataset)
	seen := map[string]bool{}
	for _, f := range r {
		if !slices.Contains(known, f.Name) {
			t.Errorf("field %s is not in the %s catalogue", f.Name, Dataset)
		}
		if seen[f.Name] {
			t.Errorf("field %s twice", f.Name)
		}
		seen[f.Name] = true
	}
}

// FuzzDecodePacket: the decoder never panics or reads out of bounds, and
// what it reports is consistent.
func FuzzDecodePacket(f *testing.F) {
	for _, h := range []string{v4SYN, v4UDP, v4Frag, v6Hop(), v4GRE} {
		f.Add(unhex(f, h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if err := DecodePacket(b, &p); err != nil {
			return
		}
		if p.IP.Version != 4 && p.IP.Version != 6 {
			t.Fatalf("version %d without error", p.IP.Version)
		}
		if p.HasTCP && !p.HasPorts || p.HasUDP && !p.HasPorts {
			t.Fatal("transport header without ports")
		}
		if p.Outer != nil && !p.HasGRE {
			t.Fatal("outer header without GRE")
		}
	})
}

// FuzzRecord: any packet bytes and prefix give either an error or a
// record whose ndjson line is valid JSON with catalogue fields only.
func FuzzRecord(f *testing.F) {
	for _, h := range []string{v4SYN, v4UDP, v6Hop(), v4GRE} {
		f.Add("ef/1/a", uint32(3), unhex(f, h))
	}
	f.Add("ef/0/b", uint32(9), []byte{0x60})
	sink := &recordSink{}
	s, err := New(Options{Group: 1, Sink: sink, Colo: Colo{Code: "a\"\\\x01", Name: "\xff", Country: "NL"}})
	if err != nil {
		f.Fatal(err)
	}
	s.SetRules(Rules{RulesetID: "rs\n", RuleIDs: []string{"r\u2028"}, SampleInterval: 10})
	s.SetInterfaces(Interfaces{3: {Name: "gre-\"x", Role: RoleTunnel}})
	f.Fuzz(func(t *testing.T, prefix string, indev uint32, b []byte) {
		sink.recs = sink.recs[:0]
		if s.Handle(Sample{Prefix: prefix, InDev: indev, Payload: b}) != nil {
			return
		}
		if len(sink.recs) != 1 {
			t.Fatalf("%d records", len(sink.recs))
		}
		r := sink.recs[0]
		checkCatalogue(t, r)
		for _, ts := range []string{logpush.TimestampUnixNano, logpush.TimestampUnix, logpush.TimestampRFC3339} {
			line := logpush.AppendNDJSON(nil, r, ts)
			if strings.Count(string(line), "\n") != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("not one line: %q", line)
			}
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("invalid JSON %q: %v", line, err)
			}
			if len(m) != len(r) {
				t.Fatalf("%d fields in JSON, %d in record", len(m), len(r))
			}
		}
	})
}

// TestSetRoles: with roles by name, the sampler finds an interface's index
// itself, so the owner need not create every interface before it.
func TestSetRoles(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordSink{}
	now := time.Unix(1_700_000_000, 0)
	s, err := New(Options{Group: 7, Sink: sink, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(Rules{RulesetID: "rs1", RuleIDs: []string{"r1"}, SampleInterval: 1})
	s.SetRoles(Roles{"wg-none": RoleTunnel})
	handle := func() map[string]any {
		t.Helper()
		if err := s.Handle(Sample{Prefix: "ef/1/a", InDev: uint32(lo.Index), Payload: unhex(t, v4SYN)}); err != nil {
			t.Fatal(err)
		}
		recs := sink.records()
		return recordMap(t, recs[len(recs)-1])
	}
	if m := handle(); m["TunnelName"] != nil || m["Direction"] != nil {
		t.Errorf("unnamed interface got TunnelName %v, Direction %v", m["TunnelName"], m["Direction"])
	}
	// A new table is resolved at once; an unknown index is looked up
	// again only after a second.
	s.SetRoles(Roles{"lo": RoleTunnel})
	if m := handle(); m["TunnelName"] != "lo" || m["Direction"] != "egress" {
		t.Errorf("TunnelName %v, Direction %v; want lo, egress", m["TunnelName"], m["Direction"])
	}
}
