package admin

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestEnrollLinkURL: the enrollment link names the host the console was
// reached by on the Access listener's port, or the configured public
// address (tunnels.wireguard.enrollment.url) when there is one; with
// enrollment off it is 404.
func TestEnrollLinkURL(t *testing.T) {
	var public atomic.Value // string
	public.Store("")
	var off atomic.Bool
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}}, func(_ *env, o *Options) {
		o.EnrollPort = func() (string, bool) { return "8443", !off.Load() }
		o.EnrollURL = func() string { return public.Load().(string) }
	})
	tok := e.createToken("noc", RoleViewer)
	link := func() (int, EnrollLink) {
		t.Helper()
		code, body := e.do(request{method: http.MethodGet, path: PathEnrollLink + "?user=alice@corp.test", token: tok, host: "gw.corp.test:9100"})
		var l EnrollLink
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &l); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
		}
		return code, l
	}
	if code, l := link(); code != http.StatusOK || l.URL != "https://gw.corp.test:8443/enroll" || l.Command != "edgegw enroll https://gw.corp.test:8443" ||
		l.User != "alice@corp.test" || !strings.HasPrefix(l.QR, "data:image/png;base64,") {
		t.Errorf("from the console's host: %d %+v", code, l)
	}
	public.Store("https://enroll.corp.example")
	if code, l := link(); code != http.StatusOK || l.URL != "https://enroll.corp.example/enroll" || l.Command != "edgegw enroll https://enroll.corp.example" {
		t.Errorf("with enrollment.url: %d %+v", code, l)
	}
	off.Store(true)
	if code, _ := link(); code != http.StatusNotFound {
		t.Errorf("enrollment off: %d, want 404", code)
	}
}
