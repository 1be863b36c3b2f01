package enroll

import (
	"bytes"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// browser is an HTTP client with cookies that trusts the test gateway.
func (e *env) browser(t *testing.T) *http.Client {
	t.Helper()
	c := e.srv.Client()
	jar, _ := cookiejar.New(nil)
	c.Jar = jar
	return c
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// login goes from /enroll through the provider's form back to the
// gateway and returns the last response and its body.
func (e *env) login(t *testing.T, c *http.Client, username string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(e.srv.URL + PathBrowser)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	id := resp.Request.URL.Query().Get("authRequestID")
	if id == "" || !strings.Contains(body, `id="password"`) {
		t.Fatalf("expected the provider's login form, got %d at %s", resp.StatusCode, resp.Request.URL)
	}
	form := url.Values{"id": {id}, "username": {username}, "password": {enrolltest.Password}}
	resp, err = c.PostForm(e.op.Issuer+"/login/username", form)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

var ticketRE = regexp.MustCompile(`data-ticket="([^"]+)"`)

func ticketOf(t *testing.T, page string) string {
	t.Helper()
	m := ticketRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no ticket in the page:\n%s", page)
	}
	return html.UnescapeString(m[1])
}

// TestBrowserPathHTTP drives the browser path with a plain HTTP client:
// sign-in, registering a key made elsewhere (as the page's script does),
// the gateway-made key with its QR code, and the refusals.
func TestBrowserPathHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, nil)
	c := e.browser(t)

	resp, page := e.login(t, c, e.op.Username())
	if resp.StatusCode != 200 || resp.Request.URL.Path != PathCallback {
		t.Fatalf("after login: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, page)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'nonce-") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("page headers: %v", resp.Header)
	}
	if !strings.Contains(page, `<strong id="email">test-user@zitadel.ch</strong>`) || !strings.Contains(page, "does not store the private key") {
		t.Fatalf("enrollment page:\n%s", page)
	}
	tk := ticketOf(t, page)

	// The callback cannot be replayed.
	if r, err := c.Get(resp.Request.URL.String()); err != nil || r.StatusCode != 400 {
		t.Fatalf("replayed callback: %v %v", r.StatusCode, err)
	}

	register := func(ticket string, pub wireguard.Key, name string) (int, []byte) {
		b, _ := json.Marshal(map[string]string{"ticket": ticket, "name": name, "public_key": pub.String()})
		r, err := c.Post(e.srv.URL+PathBrowserDevice, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return r.StatusCode, []byte(readAll(t, r))
	}
	e.reg.SetDown(true)
	pub := newPub(t)
	if code, b := register(tk, pub, "web laptop"); code != 503 || errorCode(t, b) != CodeRegistryUnavailable {
		t.Fatalf("registry down: %d %s", code, b)
	}
	e.reg.SetDown(false)
	code, b := register(tk, pub, "web laptop")
	var r Response
	if code != 200 || json.Unmarshal(b, &r) != nil || r.Device.PublicKey != pub || r.Device.Email != "test-user@zitadel.ch" {
		t.Fatalf("register: %d %s", code, b)
	}
	if code, b := register(tk, newPub(t), "second"); code != 401 || errorCode(t, b) != CodeTokenReused {
		t.Fatalf("ticket reused: %d %s", code, b)
	}
	if code, b := register("forged", newPub(t), "x"); code != 401 || errorCode(t, b) != CodeInvalidToken {
		t.Fatalf("forged ticket: %d %s", code, b)
	}

	// The gateway-made key: one page with the file and a QR code.
	_, page = e.login(t, c, e.op.Username())
	resp, err := c.PostForm(e.srv.URL+PathBrowserServer, url.Values{"ticket": {ticketOf(t, page)}, "name": {"phone"}})
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(page, `id="qr"`) || !strings.Contains(page, `src="data:image/png;base64,`) || !strings.Contains(page, "did not store") {
		t.Fatalf("server-key page %d:\n%s", resp.StatusCode, page)
	}
	priv := privateKeyIn(t, html.UnescapeString(page))
	devs, _ := e.reg.List(t.Context())
	last := devs[len(devs)-1]
	if last.Name != "phone" || last.PublicKey != priv.PublicKey() {
		t.Fatalf("registry's last device %+v does not hold the page's key", last)
	}
	if strings.Contains(e.logs.String(), priv.String()) {
		t.Fatal("the gateway-made private key is in the log")
	}

	// Someone the policies do not allow is told so before making a key.
	resp, page = e.login(t, e.browser(t), enrolltest.SecondUser)
	if resp.StatusCode != 403 || !strings.Contains(page, `data-code="policy_denied"`) || !strings.Contains(page, "test-user2@zitadel.ch") || strings.Contains(page, "data-ticket") {
		t.Fatalf("denied user: %d\n%s", resp.StatusCode, page)
	}
}

var privRE = regexp.MustCompile(`(?m)^PrivateKey = (\S+)$`)

func privateKeyIn(t *testing.T, conf string) wireguard.Key {
	t.Helper()
	m := privRE.FindStringSubmatch(conf)
	if m == nil {
		t.Fatalf("no private key in:\n%s", conf)
	}
	k, err := wireguard.ParseKey(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBrowserChooser offers a choice when several providers may be used,
// and refuses an unknown one.
func TestBrowserChooser(t *testing.T) {
	e := newEnv(t, enrolltest.Options{}, func(o *Options) {
		second := o.Providers[0]
		second.Name = "backup-sso"
		o.Providers = append(o.Providers, second)
	})
	c := e.browser(t)
	resp, err := c.Get(e.srv.URL + PathBrowser)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(page, `href="/enroll/login?provider=test-op"`) || !strings.Contains(page, `href="/enroll/login?provider=backup-sso"`) {
		t.Fatalf("chooser %d:\n%s", resp.StatusCode, page)
	}
	resp, err = c.Get(e.srv.URL + PathBrowserLogin + "?provider=nope")
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(page, "Unknown identity provider") {
		t.Fatalf("unknown provider %d:\n%s", resp.StatusCode, page)
	}
	// The second provider signs in too.
	resp, err = c.Get(e.srv.URL + PathBrowserLogin + "?provider=backup-sso")
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); !strings.Contains(page, `id="password"`) {
		t.Fatalf("backup-sso login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	resp, err = c.Get(e.srv.URL + "/enroll/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}
