package enroll

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
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

// TestAdminListPages searches and pages the device list the way the
// console does over 10,000 devices: a filter, an offset and a limit, and
// X-Total-Count for the matches.
func TestAdminListPages(t *testing.T) {
	// The same answers from a registry that pages in its database
	// (SQLite) and from one that only lists (the list filters then).
	t.Run("sqlite", func(t *testing.T) {
		var mu sync.Mutex
		clk := time.Now()
		reg, err := identity.Open(t.Context(), identity.Options{StateDir: t.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/12"),
			Now: func() time.Time { // distinct creation times, so the order is the enrollment's
				mu.Lock()
				defer mu.Unlock()
				clk = clk.Add(time.Millisecond)
				return clk
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
		testListPages(t, reg)
	})
	t.Run("list only", func(t *testing.T) {
		testListPages(t, enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 64))
	})
}

func testListPages(t *testing.T, reg Registry) {
	now := time.Now()
	var ids []string
	for i := range 30 {
		groups := []string{"staff"}
		if i%3 == 0 {
			groups = []string{"Finance"}
		}
		d, err := reg.Enroll(t.Context(), identity.Enrollment{
			Name: fmt.Sprintf("laptop-%02d", i), Email: fmt.Sprintf("user%02d@corp.example", i), Subject: fmt.Sprintf("iss#%d", i),
			Groups: groups, PublicKey: newPub(t), Expires: now.Add(time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	if _, err := reg.Revoke(t.Context(), ids[4]); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewAdmin(reg, AdminOptions{}))
	defer srv.Close()
	for _, c := range []struct {
		query string
		total int
		names []string // the page, in order
	}{
		{"", 30, nil},
		{"limit=2", 30, []string{"laptop-00", "laptop-01"}},
		{"offset=28&limit=5", 30, []string{"laptop-28", "laptop-29"}},
		{"offset=40&limit=5", 30, []string{}},
		{"q=LAPTOP-1&limit=3", 10, []string{"laptop-10", "laptop-11", "laptop-12"}},
		{"q=user07%40", 1, []string{"laptop-07"}},
		{"q=finance&limit=2&offset=1", 10, []string{"laptop-03", "laptop-06"}},
		{"status=revoked", 1, []string{"laptop-04"}},
		{"status=active&q=laptop-0&limit=4", 9, []string{"laptop-00", "laptop-01", "laptop-02", "laptop-03"}},
		{"q=100.96.", 30, nil},
	} {
		resp, err := http.Get(srv.URL + "/api/v1/devices?" + c.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page []Device
		if resp.StatusCode != 200 || json.Unmarshal(b, &page) != nil {
			t.Fatalf("%s: %d %s", c.query, resp.StatusCode, b)
		}
		if got := resp.Header.Get("X-Total-Count"); got != fmt.Sprint(c.total) {
			t.Errorf("%s: X-Total-Count %q, want %d", c.query, got, c.total)
		}
		if c.names == nil {
			if len(page) != c.total {
				t.Errorf("%s: %d devices, want all %d", c.query, len(page), c.total)
			}
			continue
		}
		got := []string{}
		for _, d := range page {
			got = append(got, d.Name)
		}
		if !slices.Equal(got, c.names) {
			t.Errorf("%s: page %v, want %v", c.query, got, c.names)
		}
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "offset=-1", "status=gone", "q=" + strings.Repeat("a", 300)} {
		resp, err := http.Get(srv.URL + "/api/v1/devices?" + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || errorCode(t, b) != CodeBadRequest {
			t.Errorf("%s: %d %s, want 400 bad_request", q, resp.StatusCode, b)
		}
	}
}
