package enroll

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestAdmin(t *testing.T) {
	reg := enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 4)
	now := time.Now()
	live, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "laptop", Email: "a@corp.example", Subject: "iss#a", Groups: []string{"staff"}, PublicKey: newPub(t), Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	old, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "old", Email: "b@corp.example", Subject: "iss#b", PublicKey: newPub(t), Expires: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var revoked []string
	a := NewAdmin(reg, AdminOptions{Revoked: func(_ context.Context, d identity.Device) { revoked = append(revoked, d.ID) }})
	srv := httptest.NewServer(a)
	defer srv.Close()
	do := func(method, path string) (int, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	code, b := do("GET", "/api/v1/devices")
	var list []Device
	if code != 200 || json.Unmarshal(b, &list) != nil || len(list) != 2 {
		t.Fatalf("list: %d %s", code, b)
	}
	if list[0].ID != live.ID || list[0].Status != "active" || list[0].Groups[0] != "staff" || list[1].Status != "expired" || list[1].Groups == nil {
		t.Fatalf("list: %s", b)
	}
	if !strings.Contains(string(b), `"public_key": "`+wireguard.Key(live.PublicKey).String()) {
		t.Fatalf("public key not in base64: %s", b)
	}

	code, b = do("GET", "/api/v1/devices/"+old.ID)
	var one Device
	if code != 200 || json.Unmarshal(b, &one) != nil || one.Name != "old" || one.RevokedAt != nil {
		t.Fatalf("show: %d %s", code, b)
	}

	for range 2 { // revoking twice is fine
		code, b = do("POST", "/api/v1/devices/"+live.ID+"/revoke")
		if code != 200 || json.Unmarshal(b, &one) != nil || one.Status != "revoked" || !one.Revoked || one.RevokedAt == nil {
			t.Fatalf("revoke: %d %s", code, b)
		}
	}
	if len(revoked) != 2 || revoked[0] != live.ID {
		t.Fatalf("Revoked hook got %v", revoked)
	}
	if got := testutil.ToFloat64(a.metrics.revoked); got != 2 {
		t.Fatalf("revocations metric %v", got)
	}

	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/api/v1/devices/dev_nope", 404, "not_found"},
		{"POST", "/api/v1/devices/dev_nope/revoke", 404, "not_found"},
		{"GET", "/api/v1/devices/" + live.ID + "/revoke", 405, ""},
		{"DELETE", "/api/v1/devices/" + live.ID, 405, ""},
	} {
		code, b := do(c.method, c.path)
		if code != c.status {
			t.Errorf("%s %s: %d %s", c.method, c.path, code, b)
		}
		if c.code != "" && errorCode(t, b) != c.code {
			t.Errorf("%s %s: %s", c.method, c.path, b)
		}
	}
	reg.SetDown(true)
	for _, p := range []struct{ method, path string }{{"GET", "/api/v1/devices"}, {"GET", "/api/v1/devices/" + old.ID}, {"POST", "/api/v1/devices/" + old.ID + "/revoke"}} {
		code, b := do(p.method, p.path)
		if code != 503 || errorCode(t, b) != CodeRegistryUnavailable {
			t.Errorf("%s %s with the registry down: %d %s", p.method, p.path, code, b)
		}
	}
	if problems, err := testutil.CollectAndLint(a); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}
