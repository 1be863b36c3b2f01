package logpush

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
	"unicode/utf8"
)

var t0 = time.Date(2026, 11, 25, 18, 23, 8, 500_000_123, time.UTC)

func sampleRecord() Record {
	return Record{
		{"Datetime", Time(t0)},
		{"ColoCode", String("ams")},
		{"IPSourceAddress", String("192.0.2.1")},
		{"SourcePort", Uint(51820)},
		{"IPTTL", Int(-1)},
		{"Allowed", Bool(true)},
		{"Ratio", Float(0.25)},
		{"Bad", Float(math.NaN())},
		{"Names", Strings("a", "b\"c")},
		{"Obj", RawJSON(`{"k":[1,2]}`)},
		{"NotJSON", RawJSON(`{oops`)},
		{"Null", Value{}},
	}
}

func TestEncoder(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		ts     string
		hec    *hecMeta
		want   string
	}{
		{"unixnano all fields", nil, TimestampUnixNano, nil,
			`{"Datetime":1795630988500000123,"ColoCode":"ams","IPSourceAddress":"192.0.2.1","SourcePort":51820,"IPTTL":-1,"Allowed":true,"Ratio":0.25,"Bad":null,"Names":["a","b\"c"],"Obj":{"k":[1,2]},"NotJSON":"{oops","Null":null}` + "\n"},
		{"unix selected", []string{"Datetime", "SourcePort"}, TimestampUnix, nil,
			`{"Datetime":1795630988,"SourcePort":51820}` + "\n"},
		{"rfc3339 selected", []string{"ColoCode", "Datetime"}, TimestampRFC3339, nil,
			`{"Datetime":"2026-11-25T18:23:08Z","ColoCode":"ams"}` + "\n"},
		{"no field selected", []string{"Nope"}, TimestampUnix, nil, "{}\n"},
		{"hec envelope", []string{"ColoCode"}, TimestampRFC3339, &hecMeta{host: "gw1", sourcetype: "edgegw:network", index: "net"},
			`{"time":1795630988.500,"host":"gw1","sourcetype":"edgegw:network","index":"net","event":{"ColoCode":"ams"}}` + "\n"},
		{"hec envelope minimal", []string{"Datetime"}, TimestampUnix, &hecMeta{},
			`{"time":1795630988.500,"event":{"Datetime":1795630988}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEncoder(tt.fields, tt.ts, tt.hec)
			got := string(e.appendRecord(nil, sampleRecord()))
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("not JSON: %s", got)
			}
		})
	}
}

func TestEncoderHECTimeWithoutTimestamp(t *testing.T) {
	e := newEncoder(nil, TimestampUnix, &hecMeta{host: "h"})
	before := time.Now()
	line := e.appendRecord(nil, Record{{"A", Int(1)}})
	var ev struct{ Time float64 }
	if err := json.Unmarshal(line, &ev); err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(0, int64(ev.Time*1e9)); got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("time %v not now", got)
	}
}

func TestAppendEpochNegative(t *testing.T) {
	for ns, want := range map[int64]string{0: "0.000", 1_500_000_000: "1.500", -1: "-1.999", -1_000_000_000: "-1.000"} {
		if got := string(appendEpoch(nil, ns)); got != want {
			t.Errorf("appendEpoch(%d) = %s, want %s", ns, got, want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          `"plain"`,
		"q\"b\\":         `"q\"b\\"`,
		"\n\r\t\x01\x1f": `"\n\r\t\u0001\u001f"`,
		"héllo €":        `"héllo €"`,
		"bad\xffutf8":    `"bad\ufffdutf8"`,
		"${jndi:x}":      `"${jndi:x}"`,
	} {
		if got := string(appendString(nil, in)); got != want {
			t.Errorf("appendString(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzEncoder checks that any record encodes to one line of valid JSON
// whose strings decode back to the input (invalid UTF-8 replaced).
func FuzzEncoder(f *testing.F) {
	f.Add("Datetime", "ams", int64(1), "x", true)
	f.Add("a\"b", "\x00\xff", int64(-5), "{\"k\":1}", false)
	f.Fuzz(func(t *testing.T, name, s string, n int64, raw string, hec bool) {
		r := Record{{name, String(s)}, {"N", Int(n)}, {"T", Time(time.Unix(0, n))}, {"R", RawJSON(raw)}, {"S", Strings(s, name)}}
		var meta *hecMeta
		if hec {
			meta = &hecMeta{host: s, sourcetype: name}
		}
		for _, ts := range []string{TimestampUnixNano, TimestampUnix, TimestampRFC3339} {
			line := newEncoder(nil, ts, meta).appendRecord(nil, r)
			if bytes.Count(line, []byte{'\n'}) != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("not one line: %q", line)
			}
			var v map[string]any
			if err := json.Unmarshal(line, &v); err != nil {
				t.Fatalf("invalid JSON %q: %v", line, err)
			}
			if hec {
				v = v["event"].(map[string]any)
			}
			if name != "N" && name != "T" && name != "R" && name != "S" {
				// string([]rune(x)) replaces each invalid byte with U+FFFD, as JSON does.
				if got, want := v[string([]rune(name))], string([]rune(s)); got != want && utf8.ValidString(name) {
					t.Fatalf("string field: got %q, want %q", got, want)
				}
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	e := newEncoder(nil, TimestampRFC3339, &hecMeta{host: "gw1", sourcetype: "edgegw:network"})
	r := benchRecord(1)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = e.appendRecord(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}
