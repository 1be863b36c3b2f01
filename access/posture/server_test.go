package posture

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	reg     *identity.Registry
	srv     *Server
	hs      *httptest.Server
	clk     *testClock
	gwPriv  wgconf.Key
	devPriv wgconf.Key
	dev     identity.Device
	applied int
}

func newKey(t testing.TB) wgconf.Key {
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newEnv is a real registry (SQLite) with one enrolled device and the
// server in front of it.
func newEnv(t *testing.T) *env {
	clk := &testClock{t: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	reg, err := identity.Open(ctx, identity.Options{StateDir: t.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/24"), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	e := &env{reg: reg, clk: clk, gwPriv: newKey(t), devPriv: newKey(t)}
	e.dev, err = reg.Enroll(ctx, identity.Enrollment{Name: "alice-laptop", Email: "alice@corp.example", Subject: "iss#alice", PublicKey: e.devPriv.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(Config{Rules: []Rule{{Name: "kernel", Type: TypeOSVersion, OS: OSLinux, Operator: ">=", Version: "6.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = New(Options{Registry: reg, Policy: pol, GatewayKey: e.gwPriv, Now: clk.Now,
		// What the gateway does: refresh the snapshot, then wait for the kernel.
		Applied: func(ctx context.Context) { e.applied++; reg.Refresh(ctx) }})
	if err != nil {
		t.Fatal(err)
	}
	e.hs = httptest.NewServer(e.srv)
	t.Cleanup(e.hs.Close)
	return e
}

func (e *env) client(priv wgconf.Key) *Client {
	return &Client{Gateway: e.hs.URL, HTTPClient: e.hs.Client(), PrivateKey: priv, GatewayPublicKey: e.gwPriv.PublicKey()}
}

func (e *env) report(version string) Report {
	return Report{Time: e.clk.Now(), OS: OSLinux, OSVersion: version, DiskEncrypted: Unknown, Firewall: Unknown, ClientVersion: "1.0"}
}

func (e *env) quarantined(t *testing.T) bool {
	t.Helper()
	d, ok := e.reg.Snapshot().ByID(e.dev.ID)
	if !ok {
		t.Fatal("the device left the snapshot")
	}
	return d.Quarantined
}

func refusal(t *testing.T, err error) *RefusedError {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("error %v, want a refusal", err)
	}
	return re
}

// TestServerQuarantineAndRelease: an old kernel quarantines the device
// (the snapshot says so when the answer arrives), a new one releases it;
// a replay of the failing report is refused and changes nothing.
func TestServerQuarantineAndRelease(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client(e.devPriv)

	old := e.report("4.19.0-27-amd64")
	resp, err := c.Send(ctx, old)
	if err != nil || resp.Compliant || !resp.Quarantined || resp.Device != e.dev.ID || len(resp.Failed) != 1 {
		t.Fatalf("old kernel: %+v %v", resp, err)
	}
	if !e.quarantined(t) || e.applied != 1 {
		t.Fatalf("after the failing report: quarantined %v, applied %d", e.quarantined(t), e.applied)
	}
	if g := testutil.ToFloat64(gauge{e.srv}); g != 1 {
		t.Errorf("edgegw_posture_devices_quarantined = %v, want 1", g)
	}
	// The same report again is a replay.
	if _, err := c.Send(ctx, old); refusal(t, err).Code != "replay" {
		t.Errorf("replay: %v", err)
	}
	e.clk.Advance(time.Second)
	resp, err = c.Send(ctx, e.report("6.12.38+deb13-amd64"))
	if err != nil || !resp.Compliant || resp.Quarantined {
		t.Fatalf("new kernel: %+v %v", resp, err)
	}
	if e.quarantined(t) || e.applied != 2 {
		t.Fatalf("after the passing report: quarantined %v, applied %d", e.quarantined(t), e.applied)
	}
	// A passing report that changes nothing does not wait for the kernel.
	e.clk.Advance(time.Second)
	if _, err := c.Send(ctx, e.report("6.12.39")); err != nil || e.applied != 2 {
		t.Fatalf("unchanged state: %v, applied %d", err, e.applied)
	}
}

// TestServerRefusals: each refusal has its status and code and changes
// nothing.
func TestServerRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	post := func(body []byte, hdr http.Header) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, e.hs.URL+Path, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := e.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ae apiError
		json.NewDecoder(resp.Body).Decode(&ae)
		return resp.StatusCode, ae.Code
	}
	signed := func(body []byte, priv, gwPub wgconf.Key) http.Header {
		h := http.Header{}
		if err := Sign(h, body, priv, gwPub); err != nil {
			t.Fatal(err)
		}
		return h
	}
	failing, _ := json.Marshal(e.report("4.19"))
	gwPub := e.gwPriv.PublicKey()
	stranger := newKey(t)

	tampered := signed(failing, e.devPriv, gwPub)
	otherGateway := signed(failing, e.devPriv, newKey(t).PublicKey())
	forged := signed(failing, stranger, gwPub)
	forged.Set(HeaderDeviceKey, e.devPriv.PublicKey().String()) // claims the device's key, MAC from another
	lowOrder := signed(failing, e.devPriv, gwPub)
	lowOrder.Set(HeaderDeviceKey, wgconf.Key{}.String())
	skewed, _ := json.Marshal(Report{Time: e.clk.Now().Add(-time.Hour), OS: OSLinux, DiskEncrypted: Unknown, Firewall: Unknown})
	malformed := []byte(`{"time":"2026-12-07T03:00:00Z","os":"linux","disk_encrypted":"maybe","firewall":"true"}`)
	big := []byte(`{"os_distro":"` + strings.Repeat("x", MaxReportBytes) + `"}`)

	for _, tc := range []struct {
		name   string
		body   []byte
		hdr    http.Header
		status int
		code   string
	}{
		{"no key", failing, http.Header{}, 401, "unauthenticated"},
		{"unknown device", failing, signed(failing, stranger, gwPub), 401, "unauthenticated"},
		{"forged MAC", failing, forged, 401, "unauthenticated"},
		{"signed for another gateway", failing, otherGateway, 401, "unauthenticated"},
		{"tampered body", bytes.Replace(failing, []byte("4.19"), []byte("9.99"), 1), tampered, 401, "unauthenticated"},
		{"low-order key", failing, lowOrder, 401, "unauthenticated"},
		{"malformed", malformed, signed(malformed, e.devPriv, gwPub), 400, "malformed"},
		{"clock", skewed, signed(skewed, e.devPriv, gwPub), 400, "clock"},
		{"too large", big, signed(big, e.devPriv, gwPub), 413, "too_large"},
	} {
		if status, code := post(tc.body, tc.hdr); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
	resp, err := e.hs.Client().Get(e.hs.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	if e.quarantined(t) || e.applied != 0 {
		t.Fatal("a refused report changed the device")
	}
	if _, ok, _ := e.reg.Posture(ctx, e.dev.ID); ok {
		t.Fatal("a refused report was stored")
	}
	// A revoked device's key no longer reports.
	if _, err := e.reg.Revoke(ctx, e.dev.ID); err != nil {
		t.Fatal(err)
	}
	e.reg.Refresh(ctx)
	if _, err := e.client(e.devPriv).Send(ctx, e.report("6.12")); refusal(t, err).Status != 401 {
		t.Errorf("revoked device: %v", err)
	}
}

// TestServerSweep: a device that never reports is quarantined after the
// grace, and one whose report ages past max_age too; a report releases
// it.
func TestServerSweep(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.srv.sweep(ctx)
	if e.quarantined(t) {
		t.Fatal("quarantined within the grace")
	}
	e.clk.Advance(DefaultGrace + time.Second)
	e.srv.sweep(ctx)
	if !e.quarantined(t) || e.applied != 1 {
		t.Fatalf("silent device past the grace: quarantined %v, applied %d", e.quarantined(t), e.applied)
	}
	if _, err := e.client(e.devPriv).Send(ctx, e.report("6.12")); err != nil || e.quarantined(t) {
		t.Fatalf("a passing report did not release: %v", err)
	}
	e.clk.Advance(DefaultMaxAge - time.Second)
	e.srv.sweep(ctx)
	if e.quarantined(t) {
		t.Fatal("quarantined before max_age")
	}
	e.clk.Advance(2 * time.Second)
	e.srv.sweep(ctx)
	if !e.quarantined(t) {
		t.Fatal("a report older than max_age did not quarantine")
	}
}

// FuzzVerify: no header value or body panics the check, and only the
// device's own MAC passes.
func FuzzVerify(f *testing.F) {
	gw, dev := newKey(f), newKey(f)
	body := []byte(`{"time":"2026-12-07T03:00:00Z"}`)
	h := http.Header{}
	if err := Sign(h, body, dev, gw.PublicKey()); err != nil {
		f.Fatal(err)
	}
	f.Add(h.Get(HeaderDeviceKey), h.Get(HeaderMAC), body)
	f.Add("", "", []byte{})
	f.Add(wgconf.Key{}.String(), "AAAA", body)
	f.Fuzz(func(t *testing.T, key, mac string, b []byte) {
		hh := http.Header{}
		hh.Set(HeaderDeviceKey, key)
		hh.Set(HeaderMAC, mac)
		pub, err := DeviceKey(hh)
		if err != nil {
			return
		}
		// Only the device's MAC over the very body passes (base64 may
		// spell the same bytes more than one way).
		got, _ := base64.StdEncoding.DecodeString(mac)
		want, _ := base64.StdEncoding.DecodeString(h.Get(HeaderMAC))
		if Verify(hh, b, pub, gw) == nil && (pub != dev.PublicKey() || !bytes.Equal(b, body) || !bytes.Equal(got, want)) {
			t.Fatalf("forged report accepted: key %q mac %q body %q", key, mac, b)
		}
	})
}

// TestMetricsLint: the server's metric names and help pass promlint.
func TestMetricsLint(t *testing.T) {
	e := newEnv(t)
	e.srv.metrics.reports.WithLabelValues("compliant").Inc()
	e.srv.metrics.refused.WithLabelValues("replay").Inc()
	e.srv.metrics.quarantined.WithLabelValues("stale").Inc()
	problems, err := testutil.CollectAndLint(e.srv)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// gauge is the server's one gauge, for testutil.ToFloat64.
type gauge struct{ s *Server }

func (g gauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.s.metrics.inQuarantine }
func (g gauge) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 64)
	g.s.Collect(all)
	close(all)
	for m := range all {
		if m.Desc() == g.s.metrics.inQuarantine {
			ch <- m
		}
	}
}
