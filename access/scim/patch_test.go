package scim

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	filter "github.com/scim2/filter-parser/v2"
)

// TestPatchUser: each PATCH form the RFC and the providers use, on a copy
// of a user; a failing request leaves the original as it was.
func TestPatchUser(t *testing.T) {
	start := `{"userName": "alice@corp.example", "active": true,
		"name": {"givenName": "Alice", "familyName": "Smith"},
		"emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`
	for _, c := range []struct {
		name string
		ops  string
		want string // the whole document after, or "" when an error is expected
		err  string // the scimType expected
	}{
		{"replace active, Entra string", `[{"op":"Replace","path":"active","value":"False"}]`,
			`{"userName": "alice@corp.example", "active": false, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`, ""},
		{"path-less, Okta", `[{"op":"replace","value":{"active":false}}]`,
			`{"userName": "alice@corp.example", "active": false, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`, ""},
		{"sub-attribute", `[{"op":"replace","path":"name.familyName","value":"Jones"}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Jones"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`, ""},
		{"complex merge", `[{"op":"replace","path":"name","value":{"middleName":"B"}}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Smith", "middleName": "B"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`, ""},
		{"add to a list", `[{"op":"add","path":"emails","value":[{"type":"home","value":"a@home.example"}]}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}, {"type": "home", "value": "a@home.example"}]}`, ""},
		{"add creates the element the filter names", `[{"op":"Add","path":"emails[type eq \"home\"].value","value":"a@home.example"}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}, {"type": "home", "value": "a@home.example"}]}`, ""},
		{"remove filtered element", `[{"op":"remove","path":"emails[type eq \"work\"]"}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": []}`, ""},
		{"remove attribute", `[{"op":"remove","path":"name"}]`,
			`{"userName": "alice@corp.example", "active": true, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`, ""},
		{"extension, created", `[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value","value":"m1"}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}], "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m1"}}}`, ""},
		{"extension object, path-less", `[{"op":"add","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Ops"}}}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Alice", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}], "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops"}}`, ""},
		{"case of attribute names", `[{"op":"replace","path":"NAME.GIVENNAME","value":"Al"}]`,
			`{"userName": "alice@corp.example", "active": true, "name": {"givenName": "Al", "familyName": "Smith"}, "emails": [{"type": "work", "value": "alice@corp.example", "primary": true}]}`, ""},
		{"replace filtered misses", `[{"op":"replace","path":"emails[type eq \"home\" or primary eq false]","value":{"value":"x"}}]`, "", "noTarget"},
		{"read-only", `[{"op":"replace","path":"meta.created","value":"x"}]`, "", "mutability"},
		{"remove without path", `[{"op":"remove"}]`, "", "noTarget"},
		{"path-less value not an object", `[{"op":"replace","value":false}]`, "", "invalidSyntax"},
		{"value missing", `[{"op":"add","path":"title"}]`, "", "invalidSyntax"},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := docOf(t, start)
			keep := deepCopy(orig)
			body := `{"schemas":["` + msgPatchOp + `"],"Operations":` + c.ops + `}`
			req, err := parsePatch([]byte(body))
			if err == nil {
				tg := &target{schema: userSchema, doc: deepCopy(orig).(map[string]any)}
				if err = tg.apply(req); err == nil {
					err = normalizeUser(tg.doc)
				}
				if err == nil {
					if c.want == "" {
						t.Fatalf("applied: %v", tg.doc)
					}
					if want := docOf(t, c.want); !reflect.DeepEqual(tg.doc, want) {
						g, _ := json.Marshal(tg.doc)
						t.Errorf("got  %s\nwant %s", g, c.want)
					}
				}
			}
			if err != nil && c.want != "" {
				t.Fatalf("error %v", err)
			}
			if err != nil {
				if e, ok := err.(*Error); !ok || e.Type != c.err {
					t.Errorf("error %v, want %s", err, c.err)
				}
			}
			if !reflect.DeepEqual(orig, keep) {
				t.Errorf("the original changed")
			}
		})
	}
}

// TestPatchMembers: the member forms of both providers.
func TestPatchMembers(t *testing.T) {
	users := map[string]bool{"u1": true, "u2": true, "u3": true}
	for _, c := range []struct {
		name string
		ops  string
		want []string
		err  string
	}{
		{"add list", `[{"op":"Add","path":"members","value":[{"value":"u3"}]}]`, []string{"u1", "u2", "u3"}, ""},
		{"add existing", `[{"op":"add","path":"members","value":[{"value":"u1","display":"x"}]}]`, []string{"u1", "u2"}, ""},
		{"Entra legacy remove", `[{"op":"Remove","path":"members","value":[{"value":"u1"}]}]`, []string{"u2"}, ""},
		{"filtered remove", `[{"op":"remove","path":"members[value eq \"u2\"]"}]`, []string{"u1"}, ""},
		{"filtered remove, other operator", `[{"op":"remove","path":"members[value sw \"u\"]"}]`, nil, ""},
		{"remove all", `[{"op":"remove","path":"members"}]`, nil, ""},
		{"replace", `[{"op":"replace","path":"members","value":[{"value":"u3"}]}]`, []string{"u3"}, ""},
		{"add and remove", `[{"op":"add","path":"members","value":[{"value":"u3"}]},{"op":"remove","path":"members[value eq \"u1\"]"}]`, []string{"u2", "u3"}, ""},
		{"unknown user", `[{"op":"add","path":"members","value":[{"value":"u9"}]}]`, nil, "invalidValue"},
		{"sub-attribute", `[{"op":"replace","path":"members[value eq \"u1\"].display","value":"x"}]`, nil, "invalidPath"},
		{"bad member filter", `[{"op":"remove","path":"members[shoe eq \"u1\"]"}]`, nil, "invalidPath"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := &target{schema: groupSchema, doc: map[string]any{"displayName": "g"},
				members: map[string]struct{}{"u1": {}, "u2": {}}, userExists: func(id string) bool { return users[id] }}
			req, err := parsePatch([]byte(`{"schemas":["` + msgPatchOp + `"],"Operations":` + c.ops + `}`))
			if err == nil {
				err = tg.apply(req)
			}
			if c.err != "" {
				if e, ok := err.(*Error); !ok || e.Type != c.err {
					t.Errorf("error %v, want %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Sorted(maps.Keys(tg.members))
			if !slices.Equal(got, c.want) {
				t.Errorf("members %v, want %v", got, c.want)
			}
		})
	}
}

// FuzzPatch: no PATCH body panics the parser or the applier on a user or a
// group; a body that applies leaves a user that is valid or refused, and a
// refused one leaves the original untouched.
func FuzzPatch(f *testing.F) {
	for _, s := range []string{
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false,"name.givenName":"x"}}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"emails[type eq \"work\"].value","value":"a@b"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members[value eq \"u1\"]"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members","value":[{"value":"u1"}]}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m"}}}}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails","value":[1,"x",null]}]}`,
		`{"Operations":[]}`, `[`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parsePatch(body)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("parse error %T is not a SCIM error", err)
			}
			return
		}
		orig := map[string]any{"userName": "alice", "active": true, "emails": []any{map[string]any{"value": "a@b", "type": "work"}}}
		keep := deepCopy(orig)
		u := &target{schema: userSchema, doc: deepCopy(orig).(map[string]any)}
		if err := u.apply(req); err == nil {
			if err := normalizeUser(u.doc); err == nil {
				if _, err := json.Marshal(u.doc); err != nil {
					t.Fatalf("patched user does not marshal: %v", err)
				}
				if _, ok := u.doc["active"].(bool); !ok {
					t.Fatalf("valid user without a boolean active: %v", u.doc)
				}
			}
		}
		if !reflect.DeepEqual(orig, keep) {
			t.Fatal("the original user changed")
		}
		g := &target{schema: groupSchema, doc: map[string]any{"displayName": "g"}, members: map[string]struct{}{"u1": {}},
			userExists: func(id string) bool { return strings.HasPrefix(id, "u") }}
		if err := g.apply(req); err == nil {
			for id := range g.members {
				if !strings.HasPrefix(id, "u") {
					t.Fatalf("member %q that is no user", id)
				}
			}
		}
	})
}

// pathCases are the paths TestParsePathFast and FuzzParsePath start from:
// the forms the fast path takes, and near misses it must leave to the
// library.
var pathCases = []string{
	"members", "active", "displayName", "x-y_z9",
	`members[value eq "2819c223-7f76-453a-919d-413861904646"]`,
	`members[value eq "alice@corp.example"]`,
	`emails[type eq "work"]`,
	// Left to the library (parsed or refused there):
	"name.givenName", `emails[type eq "work"].value`, `members[value eq ""]`,
	`members[value eq "a\"b"]`, `members[value eq "a\u00e9"]`, `members[value EQ "x"]`,
	`members[value  eq "x"]`, `members[value eq "x" ]`, `members[value eq 5]`,
	`members[value eq "x"] `, "urn:ietf:params:scim:schemas:core:2.0:User:active",
	"9lives", "-x", "", `members[value eq "x"`, `members[value eq "x" and type eq "y"]`,
}

// TestParsePathFast: the fast path gives exactly the library's Path for
// each form it takes, and takes the forms a PATCH sends most.
func TestParsePathFast(t *testing.T) {
	for _, s := range pathCases {
		checkParsePath(t, s)
	}
	for _, s := range []string{"members", `members[value eq "2819c223-7f76-453a-919d-413861904646"]`, "active"} {
		if _, ok := parsePathFast(s); !ok {
			t.Errorf("%q: not taken by the fast path", s)
		}
	}
	for _, s := range []string{"name.givenName", `members[value eq "a\"b"]`, ""} {
		if _, ok := parsePathFast(s); ok {
			t.Errorf("%q: taken by the fast path", s)
		}
	}
}

// FuzzParsePath: for every input, parsePath agrees with the library.
func FuzzParsePath(f *testing.F) {
	for _, s := range pathCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkParsePath(t, s) })
}

func checkParsePath(t *testing.T, s string) {
	t.Helper()
	fast, ok := parsePathFast(s)
	if !ok {
		return
	}
	lib, err := filter.ParsePath([]byte(s))
	if err != nil {
		t.Fatalf("%q: the fast path took what the library refuses: %v", s, err)
	}
	if !reflect.DeepEqual(fast, lib) {
		t.Fatalf("%q: fast path %#v, library %#v", s, fast, lib)
	}
}
