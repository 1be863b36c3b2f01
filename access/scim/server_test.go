package scim

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRefusals: a bad token, a malformed body and a filter the server
// cannot apply each get RFC 7644's error, are counted, and change nothing:
// not the user, not the group, not the devices.
func TestRefusals(t *testing.T) {
	e := newEnv(t)
	e.enroll("dora@corp.example", "staff")
	_, u := e.do("POST", "/Users", userBody("dora@corp.example", true))
	uid := u["id"].(string)
	_, g := e.do("POST", "/Groups", map[string]any{"displayName": "ops", "members": []any{map[string]any{"value": uid}}})
	gid := g["id"].(string)
	if d, _ := e.devicesOf("dora@corp.example"); len(d) != 1 || !slices.Equal(d[0].Groups, []string{"ops"}) {
		t.Fatalf("setup: devices %v", d)
	}
	_, before := e.do("GET", "/Users/"+uid, nil)
	_, gbefore := e.do("GET", "/Groups/"+gid, nil)
	gen := e.reg.Snapshot().Generation()
	deactivate := patchBody(map[string]any{"op": "replace", "path": "active", "value": false})

	for _, c := range []struct {
		name, tok, method, path string
		body                    any
		status                  int
		scimType                string
	}{
		{"no token", "", "PATCH", "/Users/" + uid, deactivate, 401, ""},
		{"wrong token", "nope", "PATCH", "/Users/" + uid, deactivate, 401, ""},
		{"token prefix", testToken[:5], "DELETE", "/Users/" + uid, nil, 401, ""},
		{"token of another scheme", "", "GET", "/Users", nil, 401, ""},
		{"not JSON", testToken, "PATCH", "/Users/" + uid, `{"schemas":`, 400, "invalidSyntax"},
		{"trailing data", testToken, "PUT", "/Users/" + uid, `{"userName":"x"} {}`, 400, "invalidSyntax"},
		{"no PatchOp schema", testToken, "PATCH", "/Users/" + uid, `{"Operations":[{"op":"replace","path":"active","value":false}]}`, 400, "invalidSyntax"},
		{"no operations", testToken, "PATCH", "/Users/" + uid, patchBody(), 400, "invalidSyntax"},
		{"unknown op", testToken, "PATCH", "/Users/" + uid, patchBody(map[string]any{"op": "delete", "path": "active"}), 400, "invalidSyntax"},
		{"bad path", testToken, "PATCH", "/Users/" + uid, patchBody(map[string]any{"op": "replace", "path": "emails[type eq", "value": "x"}), 400, "invalidPath"},
		{"second op fails", testToken, "PATCH", "/Users/" + uid, patchBody(
			map[string]any{"op": "replace", "path": "active", "value": false},
			map[string]any{"op": "replace", "path": "id", "value": "mine"}), 400, "mutability"},
		{"active not boolean", testToken, "PATCH", "/Users/" + uid, patchBody(map[string]any{"op": "replace", "path": "active", "value": "maybe"}), 400, "invalidValue"},
		{"remove userName", testToken, "PATCH", "/Users/" + uid, patchBody(map[string]any{"op": "remove", "path": "userName"}), 400, "invalidValue"},
		{"member unknown", testToken, "PATCH", "/Groups/" + gid, patchBody(map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": "nobody"}}}), 400, "invalidValue"},
		{"members not objects", testToken, "PATCH", "/Groups/" + gid, patchBody(map[string]any{"op": "replace", "path": "members", "value": []any{"x"}}), 400, "invalidValue"},
		{"group without name", testToken, "PUT", "/Groups/" + gid, map[string]any{"members": []any{}}, 400, "invalidValue"},
		{"user body not an object", testToken, "POST", "/Users", `[1,2]`, 400, "invalidSyntax"},
		{"control character", testToken, "POST", "/Users", userBody("eve\n@corp.example", true), 400, "invalidValue"},
		{"unknown attribute", testToken, "GET", `/Users?filter=` + escape(`shoeSize eq "9"`), nil, 400, "invalidFilter"},
		{"unknown schema", testToken, "GET", `/Users?filter=` + escape(`urn:example:x:foo eq "9"`), nil, 400, "invalidFilter"},
		{"unknown sub-attribute", testToken, "GET", `/Users?filter=` + escape(`name.shoe eq "9"`), nil, 400, "invalidFilter"},
		{"filter syntax", testToken, "GET", `/Users?filter=` + escape(`userName eq`), nil, 400, "invalidFilter"},
		{"unbalanced", testToken, "GET", `/Groups?filter=` + escape(`(displayName eq "ops"`), nil, 400, "invalidFilter"},
		{"password", testToken, "GET", `/Users?filter=` + escape(`password eq "x"`), nil, 400, "invalidFilter"},
		{"bad count", testToken, "GET", `/Users?count=many`, nil, 400, "invalidValue"},
		{"unknown user", testToken, "PATCH", "/Users/nobody", deactivate, 404, ""},
		{"bulk", testToken, "POST", "/Bulk", `{}`, 501, ""},
		{"method", testToken, "PATCH", "/Users", deactivate, 405, ""},
	} {
		tok := c.tok
		var status int
		var got map[string]any
		if c.name == "token of another scheme" {
			status, got = e.doRaw("Basic "+testToken, c.method, c.path)
		} else {
			status, got = e.doToken(tok, c.method, c.path, c.body)
		}
		if status != c.status {
			t.Errorf("%s: status %d, want %d: %v", c.name, status, c.status, got)
			continue
		}
		if !slices.Equal(toStrings(got["schemas"]), []string{msgError}) || got["status"] != fmt.Sprint(c.status) {
			t.Errorf("%s: not an RFC 7644 error: %v", c.name, got)
		}
		if c.scimType != "" && got["scimType"] != c.scimType {
			t.Errorf("%s: scimType %v, want %s (%v)", c.name, got["scimType"], c.scimType, got["detail"])
		}
	}
	if _, after := e.do("GET", "/Users/"+uid, nil); !reflect.DeepEqual(before, after) {
		t.Errorf("refused requests changed the user:\n%v\n%v", before, after)
	}
	if _, gafter := e.do("GET", "/Groups/"+gid, nil); !reflect.DeepEqual(gbefore, gafter) {
		t.Errorf("refused requests changed the group:\n%v\n%v", gbefore, gafter)
	}
	if err := e.reg.Refresh(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if g := e.reg.Snapshot().Generation(); g != gen {
		t.Errorf("refused requests changed the registry: generation %d → %d", gen, g)
	}
	if d, _ := e.devicesOf("dora@corp.example"); len(d) != 1 || !slices.Equal(d[0].Groups, []string{"ops"}) {
		t.Errorf("refused requests changed the devices: %v", d)
	}
	m := e.srv.metrics.refused
	if n := testutil.ToFloat64(m.WithLabelValues("unauthorized")); n != 4 {
		t.Errorf("unauthorized counted %v, want 4", n)
	}
	if n := testutil.ToFloat64(m.WithLabelValues("invalidFilter")); n != 6 {
		t.Errorf("invalidFilter counted %v, want 6", n)
	}
}

func (e *env) doRaw(auth, method, path string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(e.t), method, e.http.URL+Prefix+path, nil)
	req.Header.Set("Authorization", auth)
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	decodeJSONReader(e.t, resp, &out)
	if resp.StatusCode == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		e.t.Errorf("401 without a Bearer challenge")
	}
	return resp.StatusCode, out
}

func toStrings(v any) []string {
	var out []string
	for _, e := range elements(v) {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// TestTokenRotation: a rotated token replaces the old one at once; an
// empty one refuses everything.
func TestTokenRotation(t *testing.T) {
	e := newEnv(t)
	if s, _ := e.do("GET", "/Users", nil); s != 200 {
		t.Fatalf("initial token: %d", s)
	}
	e.srv.SetToken([]byte("rotated\n"))
	if s, _ := e.do("GET", "/Users", nil); s != 401 {
		t.Errorf("old token after rotation: %d, want 401", s)
	}
	if s, _ := e.doToken("rotated", "GET", "/Users", nil); s != 200 {
		t.Errorf("new token: %d, want 200", s)
	}
	e.srv.SetToken(nil)
	if s, _ := e.doToken("", "GET", "/Users", nil); s != 401 {
		t.Errorf("empty token configured, none sent: %d, want 401", s)
	}
}

// TestPersistence: users, groups and memberships survive a restart, and
// effects after it use them.
func TestPersistence(t *testing.T) {
	e := newEnv(t)
	e.enroll("fay@corp.example", "staff")
	_, u := e.do("POST", "/Users", userBody("fay@corp.example", true))
	uid := u["id"].(string)
	_, g := e.do("POST", "/Groups", map[string]any{"displayName": "ledger", "members": []any{map[string]any{"value": uid}}})
	gid := g["id"].(string)
	e.do("POST", "/Groups", map[string]any{"displayName": "audit", "members": []any{map[string]any{"value": uid}}})
	_, before := e.do("GET", "/Users/"+uid, nil)
	e.reopen()
	if n, m := e.srv.Counts(); n != 1 || m != 2 {
		t.Fatalf("after reopen: %d users, %d groups", n, m)
	}
	_, after := e.do("GET", "/Users/"+uid, nil)
	// The test server's port, and so meta.location, changes with it.
	delete(before["meta"].(map[string]any), "location")
	delete(after["meta"].(map[string]any), "location")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("user changed across a restart:\n%v\n%v", before, after)
	}
	if s, _ := e.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "remove", "path": fmt.Sprintf("members[value eq %q]", uid)})); s != 204 {
		t.Fatalf("remove member: %d", s)
	}
	if d, _ := e.devicesOf("fay@corp.example"); len(d) != 1 || !slices.Equal(d[0].Groups, []string{"audit"}) {
		t.Errorf("after restart and removal from ledger: %v, want [audit]", d)
	}
	e.reopen()
	if _, got := e.do("GET", "/Groups/"+gid, nil); len(elements(got["members"])) != 0 {
		t.Errorf("removed member back after restart: %v", got["members"])
	}
}

// TestRegistryDown: when the registry cannot take the effect the request
// fails with 503 and the SCIM state stays as it was, so the provider's
// retry applies it.
func TestRegistryDown(t *testing.T) {
	e := newEnv(t)
	e.enroll("gus@corp.example")
	_, u := e.do("POST", "/Users", userBody("gus@corp.example", true))
	uid := u["id"].(string)
	e.reg.Close()
	s, got := e.do("PATCH", "/Users/"+uid, patchBody(map[string]any{"op": "replace", "path": "active", "value": false}))
	if s != 503 {
		t.Fatalf("deactivation with the registry down: %d %v, want 503", s, got)
	}
	if _, got := e.do("GET", "/Users/"+uid, nil); got["active"] != true {
		t.Errorf("user deactivated in SCIM although its devices were not revoked: %v", got)
	}
}

// TestListPaging: startIndex and count page through a stable order.
func TestListPaging(t *testing.T) {
	e := newEnv(t)
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("user%d@corp.example", i)
		if s, _ := e.do("POST", "/Users", userBody(name, true)); s != 201 {
			t.Fatal(s)
		}
		want = append(want, name)
	}
	var got []string
	for start := 1; start <= 7; start += 3 {
		_, page := e.do("GET", fmt.Sprintf("/Users?startIndex=%d&count=3", start), nil)
		if page["totalResults"] != float64(7) || page["startIndex"] != float64(start) {
			t.Errorf("page %d: %v", start, page)
		}
		for _, r := range elements(page["Resources"]) {
			got = append(got, r.(map[string]any)["userName"].(string))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages gave %v, want %v", got, want)
	}
	_, none := e.do("GET", "/Users?count=0", nil)
	if none["totalResults"] != float64(7) || len(elements(none["Resources"])) != 0 {
		t.Errorf("count=0: %v", none)
	}
	_, only := e.do("GET", "/Users?attributes=userName&count=1", nil)
	r := elements(only["Resources"])[0].(map[string]any)
	if _, ok := r["emails"]; ok || r["userName"] == nil || r["id"] == nil {
		t.Errorf("attributes=userName: %v", r)
	}
}

// TestMetricsLint: the metrics pass promlint and count what happened.
func TestMetricsLint(t *testing.T) {
	e := newEnv(t)
	e.enroll("hal@corp.example")
	_, u := e.do("POST", "/Users", userBody("hal@corp.example", true))
	e.do("DELETE", "/Users/"+u["id"].(string), nil)
	e.doToken("bad", "GET", "/Users", nil)
	problems, err := testutil.CollectAndLint(e.srv.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	m := e.srv.metrics
	if testutil.ToFloat64(m.devices.WithLabelValues("revoked")) != 1 || testutil.ToFloat64(m.writes.WithLabelValues("User", "DELETE")) != 1 {
		t.Errorf("revoked %v, deletes %v", testutil.ToFloat64(m.devices.WithLabelValues("revoked")), testutil.ToFloat64(m.writes.WithLabelValues("User", "DELETE")))
	}
	if n, _ := e.srv.Counts(); n != 0 {
		t.Errorf("%d users after the delete", n)
	}
}
