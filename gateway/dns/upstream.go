package dns

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Upstream health: after failThreshold failures in a row an upstream is
// passed over for a backoff that doubles up to maxBackoff; a success resets
// it. When every upstream is down they are all tried anyway.
const (
	failThreshold = 3
	minBackoff    = time.Second
	maxBackoff    = 30 * time.Second
	tryTimeout    = 2 * time.Second
	maxIdleConns  = 4
)

// errUpstream means no upstream gave an answer.
var errUpstream = errors.New("no upstream answered")

// upstream is one configured resolver: plain DNS (UDP, then TCP when the
// answer is truncated), DNS over TLS, or DNS over HTTPS (RFC 8484).
type upstream struct {
	spec string // as configured
	kind string // "dns", "tls", "https"
	addr string // host:port (dns, tls)
	url  string // https

	src   netip.Addr // local address to send from; invalid: any
	dialf func(ctx context.Context, network, addr string) (net.Conn, error)
	udp   *mdns.Client
	tlsc  *tls.Config
	http  *http.Client
	idle  chan *mdns.Conn // reused TCP/TLS connections
	close sync.Once

	fails     atomic.Int32
	downUntil atomic.Int64 // Unix nanoseconds
	lastErr   atomic.Pointer[string]
}

func newUpstream(spec string, base *tls.Config, src netip.Addr, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *upstream {
	u := &upstream{spec: spec, src: src, dialf: dial, idle: make(chan *mdns.Conn, maxIdleConns)}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		tc = base.Clone()
	}
	switch {
	case strings.HasPrefix(spec, "tls://"):
		u.kind, u.addr = "tls", strings.TrimPrefix(spec, "tls://")
		if tc.ServerName == "" {
			host, _, _ := net.SplitHostPort(u.addr)
			tc.ServerName = host
		}
		u.tlsc = tc
	case strings.HasPrefix(spec, "https://"):
		u.kind, u.url = "https", spec
		tr := &http.Transport{
			DialContext:         u.dial,
			TLSClientConfig:     tc,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: maxIdleConns,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: tryTimeout,
		}
		u.http = &http.Client{Transport: tr, Timeout: tryTimeout}
	default:
		u.kind, u.addr = "dns", spec
		u.udp = &mdns.Client{Net: "udp", UDPSize: ednsSize, Timeout: tryTimeout}
	}
	return u
}

// dial connects to addr with the owner's Dial, or from the source
// address, if any.
func (u *upstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if u.dialf != nil {
		return u.dialf(ctx, network, addr)
	}
	d := &net.Dialer{Timeout: tryTimeout}
	if u.src.IsValid() {
		if strings.HasPrefix(network, "udp") {
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.src, 0))
		} else {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(u.src, 0))
		}
	}
	// Plain DNS goes from the query's egress; pooled TCP and TLS
	// connections and DoH keep the default source (egress.go).
	if e, ok := EgressFrom(ctx); ok && u.kind == "dns" && strings.HasPrefix(network, "udp") {
		return dialFrom(ctx, d, network, addr, e)
	}
	return d.DialContext(ctx, network, addr)
}

// healthy reports whether the upstream is not in a backoff.
func (u *upstream) healthy(now time.Time) bool { return now.UnixNano() >= u.downUntil.Load() }

func (u *upstream) markOK() {
	u.fails.Store(0)
	u.downUntil.Store(0)
}

// markFailed records a failure; it returns true when the upstream goes down.
func (u *upstream) markFailed(now time.Time, err error) bool {
	msg := err.Error()
	u.lastErr.Store(&msg)
	n := u.fails.Add(1)
	if n < failThreshold {
		return false
	}
	b := minBackoff << min(n-failThreshold, 5)
	b = min(b, maxBackoff)
	u.downUntil.Store(now.Add(b).UnixNano())
	return n == failThreshold
}

// exchange sends q and returns the answer, whose ID matches q's.
func (u *upstream) exchange(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, tryTimeout)
	defer cancel()
	switch u.kind {
	case "https":
		return u.exchangeHTTPS(ctx, q)
	case "tls":
		return u.exchangeStream(ctx, q)
	}
	nc, err := u.dial(ctx, "udp", u.addr)
	if err != nil {
		return nil, err
	}
	r, _, err := u.udp.ExchangeWithConnContext(ctx, q, &mdns.Conn{Conn: nc, UDPSize: ednsSize})
	nc.Close()
	if err != nil {
		return nil, err
	}
	if r.Truncated {
		return u.exchangeStream(ctx, q)
	}
	return r, nil
}

// exchangeStream sends q over TCP or TLS on a pooled connection.
func (u *upstream) exchangeStream(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	for attempt := 0; ; attempt++ {
		conn, reused, err := u.conn(ctx)
		if err != nil {
			return nil, err
		}
		dl, _ := ctx.Deadline()
		conn.SetDeadline(dl)
		r, err := roundTrip(conn, q)
		if err == nil {
			u.putConn(conn)
			return r, nil
		}
		conn.Close()
		// A pooled connection may have been closed by the server: retry
		// once on a fresh one.
		if !reused || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

func roundTrip(conn *mdns.Conn, q *mdns.Msg) (*mdns.Msg, error) {
	if err := conn.WriteMsg(q); err != nil {
		return nil, err
	}
	for {
		r, err := conn.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == q.Id {
			return r, nil
		}
	}
}

func (u *upstream) conn(ctx context.Context) (*mdns.Conn, bool, error) {
	select {
	case c := <-u.idle:
		return c, true, nil
	default:
	}
	nc, err := u.dial(ctx, "tcp", u.addr)
	if err != nil {
		return nil, false, err
	}
	if u.kind == "tls" {
		tc := tls.Client(nc, u.tlsc)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, false, err
		}
		nc = tc
	}
	return &mdns.Conn{Conn: nc}, false, nil
}

func (u *upstream) putConn(c *mdns.Conn) {
	c.SetDeadline(time.Time{})
	select {
	case u.idle <- c:
	default:
		c.Close()
	}
}

// exchangeHTTPS posts q as application/dns-message (RFC 8484 §4.1), with
// ID 0 as the RFC recommends for caching.
func (u *upstream) exchangeHTTPS(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	id := q.Id
	q.Id = 0
	buf, err := q.Pack()
	q.Id = id
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.url, bytes.NewReader(buf))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/dns-message")
	req.Header.Set("Accept", "application/dns-message")
	resp, err := u.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s: HTTP %s", u.url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/dns-message" {
		return nil, fmt.Errorf("%s: content type %q", u.url, ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, mdns.MaxMsgSize+1))
	if err != nil {
		return nil, err
	}
	r := new(mdns.Msg)
	if err := r.Unpack(body); err != nil {
		return nil, fmt.Errorf("%s: %w", u.url, err)
	}
	r.Id = id
	return r, nil
}

// shutdown closes pooled connections.
func (u *upstream) shutdown() {
	u.close.Do(func() {
		for {
			select {
			case c := <-u.idle:
				c.Close()
			default:
				if u.http != nil {
					u.http.CloseIdleConnections()
				}
				return
			}
		}
	})
}
