package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

func yes() *bool { b := true; return &b }

// echo is an upstream that answers with what it received.
type echoed struct {
	Host    string
	Path    string
	Headers http.Header
}

func newUpstream(t testing.TB) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echoed{Host: r.Host, Path: r.URL.RequestURI(), Headers: r.Header})
	}))
	t.Cleanup(ts.Close)
	return ts
}

// clock is a settable test clock.
type clock struct{ d atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.d.Load())) }
func (c *clock) Advance(d time.Duration) { c.d.Add(int64(d)) }

type memSink struct {
	mu   sync.Mutex
	recs []Record
}

func (m *memSink) AccessRecord(r Record) {
	m.mu.Lock()
	m.recs = append(m.recs, r)
	m.mu.Unlock()
}

func (m *memSink) all() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.recs...)
}

type env struct {
	t        testing.TB
	srv      *Server
	cfg      Config
	idp      identity.Config
	upstream *httptest.Server
	clock    *clock
	sink     *memSink
	reg      *prometheus.Registry
	roots    *x509.CertPool
	dir      string
}

// defaultApps: "wiki" lets corp.example in and bots with the ci token;
// "open" bypasses everyone.
func defaultConfig(t testing.TB, upstream string, dir string) Config {
	secret := filepath.Join(dir, "ci.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		Listen: "127.0.0.1:0",
		Apps: []App{
			{Name: "wiki", Domain: "wiki.test", Upstream: upstream, Policies: []policy.Policy{
				{Name: "staff", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "corp.example"}}},
				{Name: "ci", Action: policy.ServiceAuth, Include: []policy.Selector{{ServiceToken: "ci-bot"}}},
			}},
			{Name: "docs", Domain: "docs.test", Upstream: upstream, Policies: []policy.Policy{
				{Name: "eng", Action: policy.Allow, Include: []policy.Selector{{Group: "engineering"}}},
			}},
			{Name: "open", Domain: "open.test", Upstream: upstream, Policies: []policy.Policy{
				{Name: "public", Action: policy.Bypass, Include: []policy.Selector{{Everyone: yes()}}},
			}},
		},
		ServiceTokens: []ServiceToken{{Name: "ci-bot", ClientID: "6f2c1a0e.access", ClientSecretFile: secret}},
	}
}

func idpConfig(t testing.TB, f *fakeIdP, dir string) identity.Config {
	secret := filepath.Join(dir, "idp.secret")
	if err := os.WriteFile(secret, []byte(f.secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return identity.Config{Providers: []identity.Provider{{Name: "corp", Issuer: f.issuer, ClientID: f.clientID, ClientSecretFile: secret}}}
}

// startEnv runs a Server with cfg and waits until it is ready.
func startEnv(t testing.TB, cfg Config, idp identity.Config, dir string, upstream *httptest.Server, mods ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, cfg: cfg, idp: idp, upstream: upstream, clock: &clock{}, sink: &memSink{}, reg: prometheus.NewRegistry(), dir: dir}
	opts := Options{StateDir: dir, Sink: e.sink, Registerer: e.reg, Now: e.clock.Now, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, m := range mods {
		m(&opts)
	}
	srv, err := New(cfg, idp, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	e.waitReady()
	e.roots = x509.NewCertPool()
	e.roots.AddCert(srv.snap.Load().cert.Leaf)
	return e
}

func (e *env) waitReady() {
	e.t.Helper()
	testkit.Eventually(e.t, 10*time.Second, "ready", e.srv.Ready)
}

// client is a browser-like client: a cookie jar, the proxy's certificate
// trusted, and *.test dialled to the proxy. follow=false stops at the first
// redirect.
func (e *env) client(follow bool) *http.Client {
	jar, _ := cookiejar.New(nil)
	addr := e.srv.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.roots},
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if h, _, _ := net.SplitHostPort(a); strings.HasSuffix(h, ".test") {
				a = addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Jar: jar, Transport: tr, Timeout: 10 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

func (e *env) url(host, path string) string {
	_, port, _ := net.SplitHostPort(e.srv.Addr().String())
	return "https://" + host + ":" + port + path
}

func (e *env) get(c *http.Client, url string, hdr ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login runs the code flow for host with a following client and returns
// the client, logged in.
func (e *env) login(host string) *http.Client {
	e.t.Helper()
	c := e.client(true)
	resp, body := e.get(c, e.url(host, "/start"))
	if resp.StatusCode != 200 {
		e.t.Fatalf("login to %s: %d %s", host, resp.StatusCode, body)
	}
	return c
}

func decodeEcho(t *testing.T, body string) echoed {
	t.Helper()
	var ec echoed
	if err := json.Unmarshal([]byte(body), &ec); err != nil {
		t.Fatalf("upstream answer %q: %v", body, err)
	}
	return ec
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

// logout opens the logout page on host with c's cookies and submits its
// form, as a user clicking the button would.
func (e *env) logout(c *http.Client, host string) *http.Response {
	e.t.Helper()
	nf := e.client(false)
	nf.Jar = c.Jar
	resp, body := e.get(nf, e.url(host, PathLogout))
	m := csrfRE.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		e.t.Fatalf("logout page: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url(host, PathLogout), strings.NewReader(url.Values{"csrf": {html.UnescapeString(m[1])}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://"+req.URL.Host)
	resp, err := nf.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// records waits until the server handed every queued record to the sink
// and returns what the sink holds.
func (e *env) records() []Record {
	e.t.Helper()
	testkit.Eventually(e.t, 10*time.Second, "records delivered", func() error {
		if n := e.srv.recs.pending.Load(); n != 0 {
			return fmt.Errorf("%d records still queued", n)
		}
		return nil
	})
	return e.sink.all()
}

func cookieOf(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name || (strings.HasSuffix(name, "*") && strings.HasPrefix(c.Name, strings.TrimSuffix(name, "*"))) {
			return c
		}
	}
	return nil
}

func standardEnv(t testing.TB) (*env, *fakeIdP) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	return startEnv(t, defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), dir, up), f
}
