package logpush

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

func gzipLines(t *testing.T, lines ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	for _, l := range lines {
		zw.Write([]byte(l + "\n"))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readFrames reads RFC 6587 octet-counted frames until EOF.
func readFrames(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var out []string
	for {
		n, err := br.ReadString(' ')
		if err == io.EOF && n == "" {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil {
			return out, err
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(br, msg); err != nil {
			return out, err
		}
		out = append(out, string(msg))
	}
}

// TestSyslogFraming checks the RFC 5424 header fields and octet counting
// against the destination's parameters.
func TestSyslogFraming(t *testing.T) {
	tests := []struct {
		dest, host, dataset string
		want                string // the message with the timestamp replaced by T
	}{
		{"syslog+tcp://h", "gw1", "gateway_dns", `<134>1 T gw1 edgegw - gateway_dns - {"a":1}`},
		{"syslog+tls://h?facility=security&severity=warning&app-name=edge&hostname=gw.example&msgid=net",
			"ignored", "network_analytics_logs", `<108>1 T gw.example edge - net - {"a":1}`},
		{"syslog://h?facility=user", "bad host name", "audit_logs", `<14>1 T - edgegw - audit_logs - {"a":1}`},
	}
	for _, tt := range tests {
		d, err := parseDestination(tt.dest)
		if err != nil {
			t.Fatalf("%s: %v", tt.dest, err)
		}
		sd := newSyslogDest(d.sys, nil, nil, tt.host, syslogMsgID(tt.dataset), time.Second)
		now := time.Date(2026, 12, 7, 1, 2, 3, 456789000, time.UTC)
		msg := string(sd.appendMessage(nil, []byte(`{"a":1}`), now))
		if got := strings.Replace(msg, "2026-12-07T01:02:03.456789Z", "T", 1); got != tt.want {
			t.Errorf("%s: message %q, want %q", tt.dest, got, tt.want)
		}
	}
}

// TestSyslogWaitsForReceiver: a batch counts as sent only once the
// receiver has read it and closed its side; one that keeps the
// connection open past the timeout fails the send (to be retried), and
// so does a cancelled context, at once.
func TestSyslogWaitsForReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closeAfterRead := make(chan bool, 3)
	got := make(chan []string, 3)
	go func() { // owned by the test: ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			frames, _ := readFrames(c)
			got <- frames
			if <-closeAfterRead {
				c.Close()
			} // else: leak the connection open until the test ends
			defer c.Close()
		}
	}()
	d, err := parseDestination("syslog+tcp://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sd := newSyslogDest(d.sys, nil, nil, "gw", "x", 30*time.Second) // generous: CI may be loaded
	body := gzipLines(t, `{"n":1}`, `{"n":2}`, `{"n":3}`)

	closeAfterRead <- true
	if o := sd.send(t.Context(), body, spoolEntry{}); o.err != nil {
		t.Fatalf("send: %v", o.err)
	}
	if f := <-got; len(f) != 3 || !strings.HasSuffix(f[0], ` {"n":1}`) || !strings.HasSuffix(f[2], ` {"n":3}`) {
		t.Fatalf("frames = %q", f)
	}

	closeAfterRead <- false
	sd.timeout = 300 * time.Millisecond // only makes the expected failure likelier
	if o := sd.send(t.Context(), body, spoolEntry{}); o.err == nil || o.permanent {
		t.Fatalf("a receiver that never closed: outcome %+v, want a retryable error", o)
	}
	<-got

	closeAfterRead <- false
	sd.timeout = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if o := sd.send(ctx, body, spoolEntry{}); o.err == nil {
		t.Fatal("a cancelled send succeeded")
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("a cancelled send took %v", time.Since(start))
	}
}

// BenchmarkSyslogSend measures a batch of 1000 typical records framed and
// written to a local TCP receiver that reads everything and closes.
func BenchmarkSyslogSend(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() { // owned by the benchmark: ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	enc := newEncoder(nil, TimestampRFC3339, nil)
	var raw bytes.Buffer
	zw := gzip.NewWriter(&raw)
	for i := range 1000 {
		zw.Write(enc.appendRecord(nil, benchRecord(i)))
	}
	zw.Close()
	d, _ := parseDestination("syslog+tcp://" + ln.Addr().String())
	sd := newSyslogDest(d.sys, nil, nil, "gw", "network_analytics_logs", 10*time.Second)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if o := sd.send(b.Context(), raw.Bytes(), spoolEntry{}); o.err != nil {
			b.Fatal(o.err)
		}
	}
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "records/s")
}
