package logpush

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
)

// syslogSpec is a parsed syslog+tls:// or syslog+tcp:// destination.
type syslogSpec struct {
	tls        bool
	addr       string // host:port
	serverName string // for certificate verification: the URL's host
	insecure   bool
	pri        int    // facility*8 + severity
	appName    string // RFC 5424 APP-NAME; "-" for none
	hostname   string // RFC 5424 HOSTNAME; empty: Options.Host
	msgID      string // RFC 5424 MSGID; empty: the job's dataset
}

// syslog facilities and severities by their RFC 5424 names.
var (
	syslogFacilities = map[string]int{"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
		"lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
		"console": 14, "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
		"local4": 20, "local5": 21, "local6": 22, "local7": 23}
	syslogSeverities = map[string]int{"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4,
		"notice": 5, "info": 6, "debug": 7}
)

// parseSyslogDest reads syslog+tls://host[:6514] or syslog+tcp://host[:514]
// (syslog:// is syslog+tcp://) with the parameters facility, severity,
// app-name, hostname, msgid and (TLS) insecure-skip-verify.
func parseSyslogDest(u *url.URL, q url.Values) (*syslogSpec, error) {
	s := &syslogSpec{tls: u.Scheme == "syslog+tls", appName: "edgegw"}
	if u.User != nil {
		return nil, errors.New("credentials in the URL are not supported")
	}
	if u.Hostname() == "" {
		return nil, errors.New("expected a host, as in syslog+tls://siem.example:6514")
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" {
		return nil, errors.New("a syslog destination has no path: expected syslog+tls://host:port?parameters")
	}
	port := u.Port()
	if port == "" {
		port = "514"
		if s.tls {
			port = "6514" // RFC 5425
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("port %q is not a port number", port)
	}
	s.addr, s.serverName = net.JoinHostPort(u.Hostname(), port), u.Hostname()
	take := func(k string) string { v := q.Get(k); q.Del(k); return v }
	fac, sev := syslogFacilities["local0"], syslogSeverities["info"]
	if v := take("facility"); v != "" {
		n, ok := syslogFacilities[v]
		if !ok {
			return nil, fmt.Errorf("facility=%q: expected a name such as local0, user or security", v)
		}
		fac = n
	}
	if v := take("severity"); v != "" {
		n, ok := syslogSeverities[v]
		if !ok {
			return nil, fmt.Errorf("severity=%q: expected one of emerg, alert, crit, err, warning, notice, info, debug", v)
		}
		sev = n
	}
	s.pri = fac*8 + sev
	for _, f := range []struct {
		key string
		max int
		dst *string
	}{{"app-name", 48, &s.appName}, {"hostname", 255, &s.hostname}, {"msgid", 32, &s.msgID}} {
		if !q.Has(f.key) {
			continue
		}
		v := take(f.key)
		if !printUSASCII(v) || len(v) == 0 || len(v) > f.max {
			return nil, fmt.Errorf("%s=%q: expected 1 to %d printable ASCII characters without spaces (RFC 5424)", f.key, v, f.max)
		}
		*f.dst = v
	}
	if v := take("insecure-skip-verify"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("insecure-skip-verify=%q: expected true or false", v)
		}
		if !s.tls && b {
			return nil, errors.New("insecure-skip-verify applies to syslog+tls:// only")
		}
		s.insecure = b
	}
	for k := range q {
		return nil, fmt.Errorf("unknown parameter %q: expected facility, severity, app-name, hostname, msgid or insecure-skip-verify", k)
	}
	return s, nil
}

// printUSASCII reports whether s is PRINTUSASCII (%d33-126), as RFC 5424
// requires of HOSTNAME, APP-NAME and MSGID.
func printUSASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

// syslogDest sends each record of a batch as one RFC 5424 message, framed
// by octet counting (RFC 5425 §4.3, RFC 6587 §3.4.1), over TCP or TLS.
//
// Syslog has no acknowledgements, so a batch goes over a connection of its
// own, and counts as delivered only once the receiver has read all of it:
// after the last message the sender shuts down its side (TLS close_notify,
// then TCP FIN) and waits for the receiver to close its side, which a
// receiver such as rsyslog does only after reading everything before the
// FIN. A batch interrupted anywhere (refused, reset, timed out) is sent
// again whole: at least once, never silently lost.
type syslogDest struct {
	spec    *syslogSpec
	tlsConf *tls.Config // nil for plain TCP
	header  []byte      // "<PRI>1 " ; the timestamp follows
	rest    []byte      // " HOSTNAME APP-NAME - MSGID - "
	timeout time.Duration
	zr      *gzip.Reader
	// dial opens the connection; tests replace it to reach a namespace.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func newSyslogDest(spec *syslogSpec, roots *x509.CertPool, certs []tls.Certificate, host, msgID string, timeout time.Duration) *syslogDest {
	d := &syslogDest{spec: spec, timeout: timeout}
	if spec.tls {
		d.tlsConf = &tls.Config{ServerName: spec.serverName, RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: spec.insecure} //nolint:gosec // the operator's explicit choice
	}
	if spec.hostname != "" {
		host = spec.hostname
	}
	if host == "" || !printUSASCII(host) || len(host) > 255 {
		host = "-"
	}
	if spec.msgID != "" {
		msgID = spec.msgID
	}
	d.header = fmt.Appendf(nil, "<%d>1 ", spec.pri)
	d.rest = fmt.Appendf(nil, " %s %s - %s - ", host, spec.appName, msgID)
	nd := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	d.dial = nd.DialContext
	return d
}

func (d *syslogDest) format() string { return formatNDJSON }
func (d *syslogDest) close()         {}

func (d *syslogDest) pollAcks(context.Context, []int64) (map[int64]bool, outcome) {
	return nil, outcome{err: errors.New("no acks on syslog destinations"), permanent: true}
}

func (d *syslogDest) send(ctx context.Context, body []byte, _ spoolEntry) outcome {
	if d.zr == nil {
		d.zr = new(gzip.Reader)
	}
	if err := d.zr.Reset(bytes.NewReader(body)); err != nil {
		return outcome{err: fmt.Errorf("spooled batch: %w", err), code: "transport", ackID: -1}
	}
	if err := d.deliver(ctx, d.zr); err != nil {
		return outcome{err: err, code: "transport", ackID: -1}
	}
	return outcome{code: "syslog", ackID: -1}
}

// deliver writes every ndjson line of r as one message over a new
// connection and waits until the receiver has read them all.
func (d *syslogDest) deliver(ctx context.Context, r io.Reader) error {
	raw, err := d.dial(ctx, "tcp", d.spec.addr)
	if err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	defer raw.Close()
	// The context ends the connection too: a receiver that stops reading
	// must not hold the sender past shutdown.
	dl := &deadlines{conn: raw}
	stop := context.AfterFunc(ctx, dl.cancel)
	defer stop()
	conn := raw
	var tc *tls.Conn
	if d.tlsConf != nil {
		tc = tls.Client(raw, d.tlsConf)
		dl.set(time.Now().Add(d.timeout), false)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("syslog TLS handshake with %s: %w", d.spec.addr, err)
		}
		conn = tc
	}
	w := bufio.NewWriterSize(deadlineWriter{dl: dl, w: conn, timeout: d.timeout}, 64<<10)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	var msg, count []byte
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		msg = d.appendMessage(msg[:0], line, time.Now())
		count = append(strconv.AppendInt(count[:0], int64(len(msg)), 10), ' ')
		w.Write(count) // an error sticks in w: the next Write returns it
		if _, err := w.Write(msg); err != nil {
			return fmt.Errorf("syslog: send to %s: %w", d.spec.addr, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("spooled batch: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("syslog: send to %s: %w", d.spec.addr, err)
	}
	// Shut down our side and wait for the receiver's: it closes only
	// after it has read everything we sent.
	dl.set(time.Now().Add(d.timeout), false)
	if tc != nil {
		if err := tc.CloseWrite(); err != nil {
			return fmt.Errorf("syslog: close_notify to %s: %w", d.spec.addr, err)
		}
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return fmt.Errorf("syslog: shutdown to %s: %w", d.spec.addr, err)
		}
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(conn, 1<<20)); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("syslog: waiting for %s to read the batch: %w", d.spec.addr, err)
	}
	return nil
}

// appendMessage appends the RFC 5424 message for one record: header,
// the time of sending, and the record's JSON as MSG.
func (d *syslogDest) appendMessage(b, record []byte, now time.Time) []byte {
	b = append(b, d.header...)
	b = now.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	b = append(b, d.rest...)
	return append(b, record...)
}

// deadlines sets a connection's deadlines until the context ends it:
// after cancel, every operation fails at once, whatever set asks later.
type deadlines struct {
	mu       sync.Mutex
	conn     net.Conn
	canceled bool
}

func (d *deadlines) set(t time.Time, writeOnly bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.canceled {
		return
	}
	if writeOnly {
		d.conn.SetWriteDeadline(t)
	} else {
		d.conn.SetDeadline(t)
	}
}

func (d *deadlines) cancel() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.canceled = true
	d.conn.SetDeadline(time.Unix(1, 0))
}

// deadlineWriter renews the write deadline before each write, so a large
// batch may take as long as it needs while a stalled receiver fails it.
type deadlineWriter struct {
	dl      *deadlines
	w       io.Writer
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.dl.set(time.Now().Add(w.timeout), true)
	return w.w.Write(p)
}

// syslogMsgID is the default MSGID: the dataset, cut to RFC 5424's 32.
func syslogMsgID(dataset string) string {
	if len(dataset) > 32 {
		dataset = dataset[:32]
	}
	if dataset == "" || !printUSASCII(dataset) {
		return "-"
	}
	return strings.Clone(dataset)
}
