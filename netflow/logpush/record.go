package logpush

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the type of a [Value].
type Kind uint8

// The kinds of value a record field may hold.
const (
	KindNull    Kind = iota // JSON null; the zero Value
	KindString              // a string
	KindInt                 // a signed integer
	KindUint                // an unsigned integer
	KindBool                // true or false
	KindFloat               // a float64; NaN and ±Inf encode as null
	KindTime                // a point in time, encoded per timestamp_format
	KindStrings             // an array of strings
	KindJSON                // raw JSON text, written as is (must be valid)
)

// Value is one typed field value. Build it with [String], [Int], [Uint],
// [Bool], [Float], [Time], [Strings] or [RawJSON]; the zero Value is null.
type Value struct {
	kind Kind
	num  uint64 // int, uint, bool, float bits, time as Unix nanoseconds
	str  string
	// strs is a pointer: arrays are rare (gateway_dns), and a record of
	// two dozen fields is a fifth smaller without a slice header in each.
	strs *[]string
}

// String returns a string value.
func String(s string) Value { return Value{kind: KindString, str: s} }

// Int returns a signed integer value.
func Int(n int64) Value { return Value{kind: KindInt, num: uint64(n)} }

// Uint returns an unsigned integer value.
func Uint(n uint64) Value { return Value{kind: KindUint, num: n} }

// Bool returns a boolean value.
func Bool(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.num = 1
	}
	return v
}

// Float returns a floating-point value.
func Float(f float64) Value { return Value{kind: KindFloat, num: math.Float64bits(f)} }

// Time returns a timestamp value (kept to the nanosecond).
func Time(t time.Time) Value { return Value{kind: KindTime, num: uint64(t.UnixNano())} }

// Strings returns a string-array value. The slice is not copied.
func Strings(ss ...string) Value { return Value{kind: KindStrings, strs: &ss} }

// RawJSON returns a value written verbatim, for nested objects such as
// gateway_dns ResourceRecords. Text that is not valid JSON is written as a
// JSON string instead.
func RawJSON(s string) Value { return Value{kind: KindJSON, str: s} }

// Kind returns the value's kind.
func (v Value) Kind() Kind { return v.kind }

// Str returns the string of a KindString or KindJSON value.
func (v Value) Str() string { return v.str }

// Int returns the number of a KindInt, KindUint or KindBool value, or the
// Unix nanoseconds of a KindTime value.
func (v Value) Int() int64 { return int64(v.num) }

// Field is one named value of a record.
type Field struct {
	Name  string
	Value Value
}

// Record is one log line: fields in the order they are written. Producers
// build a new Record per line and must not modify it after [Sink.Push].
type Record []Field

// Get returns the named field's value.
func (r Record) Get(name string) (Value, bool) {
	for i := range r {
		if r[i].Name == name {
			return r[i].Value, true
		}
	}
	return Value{}, false
}

// Timestamp formats, as in Logpush's output_options.timestamp_format.
const (
	TimestampUnixNano = "unixnano"
	TimestampUnix     = "unix"
	TimestampRFC3339  = "rfc3339"
)

// encoder turns records into the bytes of one batch: ndjson lines, or HEC
// event envelopes (each followed by a newline, which HEC ignores between
// concatenated objects). It is not safe for concurrent use (a job's mutex
// guards it).
type encoder struct {
	sel  map[string]struct{} // nil: every field
	ts   uint8               // 0 unixnano, 1 unix, 2 rfc3339
	hec  bool
	head []byte // `,"host":…,"event":` after the time in a HEC envelope

	lastSec int64  // the second last formatted as RFC 3339
	lastTS  []byte // and its quoted text
}

func newEncoder(fields []string, tsFormat string, hec *hecMeta) *encoder {
	e := &encoder{}
	if len(fields) > 0 {
		e.sel = make(map[string]struct{}, len(fields))
		for _, f := range fields {
			e.sel[f] = struct{}{}
		}
	}
	switch tsFormat {
	case TimestampUnix:
		e.ts = 1
	case TimestampRFC3339:
		e.ts = 2
	}
	if hec != nil {
		e.hec = true
		for _, kv := range [][2]string{{"host", hec.host}, {"source", hec.source}, {"sourcetype", hec.sourcetype}, {"index", hec.index}} {
			if kv[1] != "" {
				e.head = append(e.head, ',', '"')
				e.head = append(e.head, kv[0]...)
				e.head = append(e.head, '"', ':')
				e.head = appendString(e.head, kv[1])
			}
		}
		e.head = append(e.head, `,"event":`...)
	}
	return e
}

// hecMeta is the envelope metadata of HEC events.
type hecMeta struct{ host, source, sourcetype, index string }

// appendRecord appends one encoded record and its newline to dst. A HEC
// event takes its time from the record's first timestamp field, or the
// current time if it has none.
func (e *encoder) appendRecord(dst []byte, r Record) []byte {
	if e.hec {
		t := int64(0)
		found := false
		for i := range r {
			if r[i].Value.kind == KindTime {
				t, found = int64(r[i].Value.num), true
				break
			}
		}
		if !found {
			t = time.Now().UnixNano()
		}
		dst = append(dst, `{"time":`...)
		dst = appendEpoch(dst, t)
		dst = append(dst, e.head...)
	}
	dst = append(dst, '{')
	first := true
	for i := range r {
		f := &r[i]
		if e.sel != nil {
			if _, ok := e.sel[f.Name]; !ok {
				continue
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendKey(dst, f.Name)
		dst = e.appendValue(dst, &f.Value)
	}
	dst = append(dst, '}')
	if e.hec {
		dst = append(dst, '}')
	}
	return append(dst, '\n')
}

func (e *encoder) appendValue(dst []byte, v *Value) []byte {
	switch v.kind {
	case KindString:
		return appendString(dst, v.str)
	case KindInt:
		return strconv.AppendInt(dst, int64(v.num), 10)
	case KindUint:
		return strconv.AppendUint(dst, v.num, 10)
	case KindBool:
		if v.num != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case KindFloat:
		f := math.Float64frombits(v.num)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return append(dst, "null"...)
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64)
	case KindTime:
		n := int64(v.num)
		switch e.ts {
		case 1:
			return strconv.AppendInt(dst, floorDiv(n, 1e9), 10)
		case 2:
			// Records come in time order: format each second once.
			if sec := floorDiv(n, 1e9); sec != e.lastSec || e.lastTS == nil {
				e.lastSec = sec
				e.lastTS = append(e.lastTS[:0], '"')
				e.lastTS = time.Unix(sec, 0).UTC().AppendFormat(e.lastTS, time.RFC3339)
				e.lastTS = append(e.lastTS, '"')
			}
			return append(dst, e.lastTS...)
		}
		return strconv.AppendInt(dst, n, 10)
	case KindStrings:
		dst = append(dst, '[')
		for i, s := range *v.strs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, s)
		}
		return append(dst, ']')
	case KindJSON:
		if !json.Valid([]byte(v.str)) {
			return appendString(dst, v.str) // never let one bad value spoil a batch
		}
		if strings.ContainsAny(v.str, "\r\n") { // keep one record per line
			var b bytes.Buffer
			json.Compact(&b, []byte(v.str))
			return append(dst, b.Bytes()...)
		}
		return append(dst, v.str...)
	}
	return append(dst, "null"...)
}

// appendEpoch writes Unix nanoseconds as HEC's epoch seconds with
// milliseconds, e.g. 1433188255.500.
func appendEpoch(dst []byte, ns int64) []byte {
	ms := floorDiv(ns, 1e6)
	dst = strconv.AppendInt(dst, floorDiv(ms, 1000), 10)
	frac := ms - floorDiv(ms, 1000)*1000
	return append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

const hexDigits = "0123456789abcdef"

// plainKey[c] is true for the bytes a field name is made of (letters,
// digits, '_', '-', '.'): such a name needs no escaping.
var plainKey = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
	}
	return t
}()

// appendKey writes a field name and its colon: `"Name":`. Names are
// nearly always plain identifiers, written without the escaping scan.
func appendKey(dst []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		if !plainKey[name[i]] {
			return append(appendString(dst, name), ':')
		}
	}
	dst = append(dst, '"')
	dst = append(dst, name...)
	return append(dst, '"', ':')
}

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		// Skip 8 plain ASCII bytes at a time (no control byte, '"', '\\'
		// or non-ASCII byte among them).
		for i+8 <= len(s) {
			x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
				uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
			if (x-0x20*lsb1|hasZero(x^0x22*lsb1)|hasZero(x^0x5c*lsb1)|x)&msb1 != 0 && special(x) {
				break
			}
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const (
	lsb1 = 0x0101010101010101
	msb1 = 0x8080808080808080
)

// hasZero has the top bit set in each byte of x that is zero (and possibly
// in bytes above one that is).
func hasZero(x uint64) uint64 { return (x - lsb1) &^ x }

// special reports exactly whether any byte of x is below 0x20, '"', '\\'
// or at least 0x80; the caller's test above is a fast over-approximation.
func special(x uint64) bool {
	for range 8 {
		c := byte(x)
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return true
		}
		x >>= 8
	}
	return false
}

// AppendNDJSON appends r to dst as one ndjson line with every field and
// timestamps in tsFormat (unixnano, unix or rfc3339): the bytes an ndjson
// job without a fields list writes. Producers use it in tests and fuzzing.
func AppendNDJSON(dst []byte, r Record, tsFormat string) []byte {
	return newEncoder(nil, tsFormat, nil).appendRecord(dst, r)
}
