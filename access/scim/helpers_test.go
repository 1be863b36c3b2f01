package scim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/identity"
)

const testToken = "s3cret-scim-token"

// env is a SCIM server over a real device registry (SQLite in a temporary
// state dir), served over HTTP.
type env struct {
	t       testing.TB
	reg     *identity.Registry
	srv     *Server
	http    *httptest.Server
	dir     string
	tok     string
	refresh int // how many times Applied ran
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	ctx := testCtx(t)
	reg, err := identity.Open(ctx, identity.Options{
		StateDir: dir, Pool: netip.MustParsePrefix("100.96.0.0/16"),
		Reserved: []netip.Addr{netip.MustParseAddr("100.96.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	e := &env{t: t, reg: reg, dir: dir, tok: testToken}
	e.open()
	return e
}

// open (re)opens the SCIM server on the env's state dir.
func (e *env) open() {
	e.t.Helper()
	srv, err := Open(testCtx(e.t), Options{
		StateDir: e.dir, Registry: e.reg, Token: []byte(testToken + "\n"),
		Applied: func(ctx context.Context) {
			e.refresh++
			if err := e.reg.Refresh(ctx); err != nil {
				e.t.Errorf("refresh: %v", err)
			}
		},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
	e.http = httptest.NewServer(srv)
	e.t.Cleanup(func() { e.http.Close(); srv.Close() })
}

func (e *env) reopen() {
	e.http.Close()
	if err := e.srv.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// enroll enrolls a device for email with groups.
func (e *env) enroll(email string, groups ...string) identity.Device {
	e.t.Helper()
	var k [32]byte
	rand.Read(k[:])
	d, err := e.reg.Enroll(testCtx(e.t), identity.Enrollment{
		Name: "laptop", Email: email, Subject: "https://idp.example#" + strings.ToLower(email), Groups: groups, PublicKey: k,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.reg.Refresh(testCtx(e.t)); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// do sends a request with the env's token and returns the status and the
// decoded JSON body (nil when empty).
func (e *env) do(method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	return e.doToken(e.tok, method, path, body)
}

func (e *env) doToken(tok, method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(testCtx(e.t), method, e.http.URL+Prefix+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(raw) == 0 {
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/scim+json" {
		e.t.Errorf("%s %s: Content-Type %q, want application/scim+json", method, path, ct)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, path, err, raw)
	}
	return resp.StatusCode, out
}

// devicesOf returns the active devices enrolled with email (any case) in
// the registry's snapshot, and how many of its devices are revoked.
func (e *env) devicesOf(email string) (active []identity.Device, revoked int) {
	e.t.Helper()
	// Group changes reach the snapshot by the registry's refresh (its Run
	// in the gateway); a revocation was refreshed before the answer.
	if err := e.reg.Refresh(testCtx(e.t)); err != nil {
		e.t.Fatal(err)
	}
	for d := range e.reg.Snapshot().All() {
		if strings.EqualFold(d.Email, email) {
			active = append(active, d)
		}
	}
	all, err := e.reg.List(testCtx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range all {
		if strings.EqualFold(d.Email, email) && d.Revoked {
			revoked++
		}
	}
	return active, revoked
}

// subset reports whether want is contained in got: objects by key
// (recursively), lists element by element, the rest by equality.
func subset(want, got any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			if !subset(wv, g[k]) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !subset(w[i], g[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(want, got)
}

func userBody(name string, active bool) map[string]any {
	return map[string]any{
		"schemas":  []string{SchemaUser},
		"userName": name,
		"active":   active,
		"emails":   []any{map[string]any{"value": name, "type": "work", "primary": true}},
	}
}

func patchBody(ops ...map[string]any) map[string]any {
	return map[string]any{"schemas": []string{msgPatchOp}, "Operations": ops}
}

func escape(s string) string { return url.QueryEscape(s) }

func decodeJSONReader(t testing.TB, resp *http.Response, v any) {
	t.Helper()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
}
