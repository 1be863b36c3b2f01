package admin

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestGeofeedServed: the geofeed is served at its configured path on a
// LAN listener with TLS, to a caller without a token under any Host, and
// HEAD answers its length; a path changed on reload moves it; other
// methods are refused, and GET /api/v1/egress still needs a token.
func TestGeofeedServed(t *testing.T) {
	const feed = "# RFC 8805\n203.0.113.10/32,DE,DE-HE,Frankfurt,\n"
	var path atomic.Value
	path.Store("/geofeed.csv")
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}}, func(_ *env, o *Options) {
		o.Geofeed = func() (string, []byte) { return path.Load().(string), []byte(feed) }
		o.Egress = func() (EgressView, error) {
			return EgressView{Addresses: []EgressAddress{{Name: "fra", Address: "203.0.113.10", Country: "DE"}}}, nil
		}
	})
	for _, tc := range []struct {
		name   string
		r      request
		status int
		body   string
	}{
		{"open", request{method: "GET", path: "/geofeed.csv"}, 200, feed},
		{"any Host", request{method: "GET", path: "/geofeed.csv", host: "geofeed.example.net"}, 200, feed},
		{"HEAD", request{method: "HEAD", path: "/geofeed.csv"}, 200, ""},
		{"POST", request{method: "POST", path: "/geofeed.csv"}, 405, ""},
		{"another path", request{method: "GET", path: "/geofeed.csv.bak"}, 401, ""},
		{"the API without a token", request{method: "GET", path: PathEgress}, 401, ""},
		{"the API under another Host", request{method: "GET", path: PathEgress, host: "geofeed.example.net"}, 421, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(tc.r)
			if code != tc.status || (tc.body != "" && body != tc.body) {
				t.Errorf("%s %s = %d %q, want %d %q", tc.r.method, tc.r.path, code, body, tc.status, tc.body)
			}
		})
	}
	tok := e.createToken("viewer", RoleViewer)
	code, body := e.do(request{method: "GET", path: PathEgress, token: tok})
	var v EgressView
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || len(v.Addresses) != 1 || v.Identities == nil || v.Policies == nil {
		t.Errorf("GET %s as a viewer = %d %s", PathEgress, code, body)
	}
	path.Store("/.well-known/geofeed.csv")
	if code, body := e.do(request{method: "GET", path: "/.well-known/geofeed.csv"}); code != http.StatusOK || body != feed {
		t.Errorf("after the move: %d %q", code, body)
	}
	if code, _ := e.do(request{method: "GET", path: "/geofeed.csv"}); code == http.StatusOK {
		t.Error("the old path still serves the geofeed")
	}
	path.Store("")
	if code, _ := e.do(request{method: "GET", path: "/.well-known/geofeed.csv"}); code != http.StatusUnauthorized {
		t.Errorf("with no geofeed path: %d, want 401 (an API path like any other)", code)
	}
}
