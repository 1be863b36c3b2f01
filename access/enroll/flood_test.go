package enroll

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/internal/oidckeys"
	"github.com/edgegw/edgegw/access/internal/replay"
)

// forgeToken signs claims that would pass every check but the signature:
// the provider's issuer, the device client as audience, fresh times.
func forgeToken(t testing.TB, e *env, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{
		"iss": e.op.Issuer, "aud": deviceClient, "sub": "attacker", "email": "ceo@zitadel.ch",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": rand.Text(),
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// respell writes the same JWS differently: base64url text whose length
// leaves spare bits in its last character decodes the same whatever those
// bits are, and go-jose (like Go's non-strict decoder) ignores them.
func respell(t testing.TB, raw string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		if len(p)%4 == 0 {
			continue // no spare bits
		}
		want, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			t.Fatal(err)
		}
		v := strings.IndexByte(alphabet, p[len(p)-1])
		alt := p[:len(p)-1] + string(alphabet[v^1])
		if got, err := base64.RawURLEncoding.DecodeString(alt); err != nil || string(got) != string(want) {
			continue
		}
		parts[i] = alt
		return strings.Join(parts, ".")
	}
	t.Fatalf("no segment of %q has spare bits", raw)
	return ""
}

func (e *env) enrollBody(t *testing.T, idToken, access string) []byte {
	b, _ := json.Marshal(Request{IDToken: idToken, AccessToken: access, PublicKey: newPub(t).String(), Name: "laptop"})
	return b
}

// TestReplaySetFlood floods every unauthenticated way into the one-use
// set with the per-source limit off: garbage tokens, well-formed tokens
// signed by another key with made-up key ids and with the provider's own,
// and browser callbacks with genuine login cookies but codes the provider
// never issued. Nothing is recorded, the provider's key set is fetched a
// bounded number of times, and a real enrollment still succeeds.
func TestReplaySetFlood(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.Rate = -1 })
	tok := e.signIn(t, e.op.Username(), 1)[0]
	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fetchesBefore := e.op.JWKSFetches()
	codes := map[string]int{}
	post := func(body []byte) {
		resp, b := e.post(t, PathAPI, body)
		codes[fmt.Sprint(resp.StatusCode, " ", errorCode(t, b))]++
	}
	for i := range 1000 {
		post(e.enrollBody(t, fmt.Sprintf("garbage-%d.%s", i, rand.Text()), ""))
	}
	for range 300 {
		post(e.enrollBody(t, forgeToken(t, e, attacker, "kid-"+rand.Text()), ""))
	}
	// The provider's real kid, from the genuine token's header.
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.IDToken, ".")[0])
	var h struct {
		Kid string `json:"kid"`
	}
	json.Unmarshal(hdr, &h)
	for range 300 {
		post(e.enrollBody(t, forgeToken(t, e, attacker, h.Kid), ""))
	}
	if len(codes) != 1 || codes["401 invalid_token"] != 1600 {
		t.Fatalf("flood answers: %v", codes)
	}
	// At most the first fetch plus one per MinRefetch the flood lasted.
	fetches := e.op.JWKSFetches() - fetchesBefore
	if limit := 2 + int64(time.Since(start)/oidckeys.DefaultMinRefetch); fetches > limit {
		t.Fatalf("%d JWKS fetches for 600 forged tokens (limit %d)", fetches, limit)
	}

	// Browser callbacks: a real login cookie, a code the provider never
	// issued.
	jar, _ := cookiejar.New(nil)
	c := e.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for range 100 {
		resp, err := c.Get(e.srv.URL + PathBrowserLogin + "?provider=test-op")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		au, _ := url.Parse(resp.Header.Get("Location"))
		resp, err = c.Get(e.srv.URL + PathCallback + "?" + url.Values{"state": {au.Query().Get("state")}, "code": {rand.Text()}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("forged callback: %d", resp.StatusCode)
		}
	}
	if n := e.h.used.Len(); n != 0 {
		t.Fatalf("the flood left %d entries in the one-use set", n)
	}
	resp, b := e.post(t, PathAPI, e.enrollBody(t, tok.IDToken, tok.AccessToken))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("real enrollment after the flood: %d %s", resp.StatusCode, b)
	}
	if n := e.h.used.Len(); n != 1 {
		t.Fatalf("one-use set holds %d entries after one enrollment", n)
	}
}

// TestRespelledTokenIsReplay: a token written with other spare base64
// bits still verifies, and is refused as the same sign-in.
func TestRespelledTokenIsReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	tok := e.signIn(t, e.op.Username(), 1)[0]
	alt := respell(t, tok.IDToken)
	if alt == tok.IDToken {
		t.Fatal("respell changed nothing")
	}
	if resp, b := e.post(t, PathAPI, e.enrollBody(t, tok.IDToken, tok.AccessToken)); resp.StatusCode != http.StatusOK {
		t.Fatalf("first use: %d %s", resp.StatusCode, b)
	}
	resp, b := e.post(t, PathAPI, e.enrollBody(t, alt, tok.AccessToken))
	if code := errorCode(t, b); resp.StatusCode != http.StatusUnauthorized || code != CodeTokenReused {
		t.Fatalf("respelled token: %d %s", resp.StatusCode, b)
	}
}

// TestReplaySetFull: at its bound the set refuses new sign-ins with a
// clear 503 rather than forgetting old ones.
func TestReplaySetFull(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	e.h.used = replay.New(1)
	toks := e.signIn(t, e.op.Username(), 2)
	if resp, b := e.post(t, PathAPI, e.enrollBody(t, toks[0].IDToken, toks[0].AccessToken)); resp.StatusCode != http.StatusOK {
		t.Fatalf("first: %d %s", resp.StatusCode, b)
	}
	resp, b := e.post(t, PathAPI, e.enrollBody(t, toks[1].IDToken, toks[1].AccessToken))
	if code := errorCode(t, b); resp.StatusCode != http.StatusServiceUnavailable || code != CodeBusy || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("full set: %d %s", resp.StatusCode, b)
	}
	if got := testutil.ToFloat64(e.h.metrics.requests.WithLabelValues("device", CodeBusy)); got != 1 {
		t.Fatalf("busy refusals counted: %v", got)
	}
}

// TestRateLimit: past its burst a source gets 429 with Retry-After and
// the refusal is counted; another source address is not affected.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.Rate, o.Burst = 0.01, 3 })
	garbage := e.enrollBody(t, "not-a-token", "")
	for i := range 3 {
		if resp, b := e.post(t, PathAPI, garbage); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	resp, b := e.post(t, PathAPI, garbage)
	if code := errorCode(t, b); resp.StatusCode != http.StatusTooManyRequests || code != CodeRateLimited || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d %s (Retry-After %q)", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	// The browser path's steps share the source's bucket.
	if resp, err := e.srv.Client().Get(e.srv.URL + PathBrowserLogin + "?provider=test-op"); err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("browser login over the limit: %v %v", resp.StatusCode, err)
	}
	if got := testutil.ToFloat64(e.h.metrics.limited); got != 2 {
		t.Fatalf("edgegw_enroll_rate_limited_total = %v", got)
	}
	// Discovery is not limited.
	if resp, err := e.srv.Client().Get(e.srv.URL + PathDiscovery); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("discovery: %v %v", resp.StatusCode, err)
	}
	// Another source has its own bucket.
	other := e.srv.Client()
	tr := other.Transport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	other.Transport = tr
	resp2, err := other.Post(e.srv.URL+PathAPI, "application/json", strings.NewReader(string(garbage)))
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Fatalf("another source: %d", resp2.StatusCode)
	}
}

func TestLimiterTable(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newLimiter(1, 2, 100)
	a := netip.MustParseAddr("192.0.2.1")
	for i, want := range []bool{true, true, false} {
		if ok, _ := l.allow(a, t0); ok != want {
			t.Fatalf("request %d: %v", i, ok)
		}
	}
	if ok, retry := l.allow(a, t0.Add(500*time.Millisecond)); ok || retry <= 0 || retry > time.Second {
		t.Fatalf("half a token: ok %v retry %s", ok, retry)
	}
	if ok, _ := l.allow(a, t0.Add(1500*time.Millisecond)); !ok {
		t.Fatal("refilled token refused")
	}
	// Addresses of one IPv6 /64 share a bucket; a mapped IPv4 is the IPv4.
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:1234")
	l.allow(v6a, t0)
	l.allow(v6b, t0)
	if ok, _ := l.allow(v6a, t0); ok {
		t.Fatal("a /64 got more than one burst")
	}
	if sourceKey(netip.MustParseAddr("::ffff:192.0.2.1")) != a {
		t.Fatal("mapped address not unmapped")
	}
	// The table stays bounded under a flood of sources.
	for i := range 10000 {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), t0)
	}
	if n := l.len(); n != 100 {
		t.Fatalf("%d sources in a table bounded to 100", n)
	}
}

// TestMetricsLint: the enrollment metrics pass promlint.
func TestMetricsLint(t *testing.T) {
	e := newEnv(t, enrolltest.Options{}, nil)
	e.h.metrics.observe("device", CodeRateLimited, 0)
	e.h.metrics.limited.Add(0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.h)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
