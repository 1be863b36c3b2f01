package scim

import (
	"encoding/json"
	"testing"
)

func docOf(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFilterMatch: RFC 7644's operators, on simple, complex, multi-valued
// and extension attributes, case-insensitive where the RFC says so.
func TestFilterMatch(t *testing.T) {
	u := &user{id: "u1", doc: docOf(t, `{
		"userName": "Alice@Corp.example", "active": true, "externalId": "EXT-1", "displayName": "Alice Smith",
		"name": {"givenName": "Alice", "familyName": "Smith"},
		"emails": [{"type": "work", "value": "alice@corp.example", "primary": true}, {"type": "home", "value": "al@home.example"}],
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "1234", "department": "Finance"},
		"x-count": 5}`)}
	s := &Server{groupsOf: map[string]map[string]struct{}{}, groups: map[string]*group{}}
	for _, c := range []struct {
		f    string
		want bool
	}{
		{`userName eq "alice@corp.example"`, true},
		{`USERNAME Eq "ALICE@CORP.EXAMPLE"`, true},
		{`userName ne "alice@corp.example"`, false},
		{`userName sw "alice"`, true},
		{`userName ew ".example"`, true},
		{`userName co "corp"`, true},
		{`userName gt "aaa"`, true},
		{`userName lt "aaa"`, false},
		{`externalId eq "ext-1"`, false}, // caseExact
		{`externalId eq "EXT-1"`, true},
		{`id eq "u1"`, true},
		{`active eq true`, true},
		{`active eq false`, false},
		{`active eq "true"`, false},
		{`name.familyName eq "smith"`, true},
		{`name.givenName pr`, true},
		{`nickName pr`, false},
		{`nickName ne "x"`, true},
		{`emails eq "al@home.example"`, true},
		{`emails.value co "home"`, true},
		{`emails[type eq "work" and value co "corp"]`, true},
		{`emails[type eq "home" and value co "corp"]`, false},
		{`emails[type eq "work"].value eq "alice@corp.example"`, true},
		{`emails[type eq "home"].value eq "alice@corp.example"`, false},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "finance"`, true},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName sw "ALI"`, true},
		{`userName eq "x" or displayName co "smith"`, true},
		{`userName eq "x" and displayName co "smith"`, false},
		{`not (userName eq "x")`, true},
		{`not (userName eq "x") and (active eq true or nickName pr)`, true},
		{`meta.created pr`, true},
	} {
		e, err := parseFilter(c.f, userSchema)
		if err != nil {
			t.Errorf("%s: %v", c.f, err)
			continue
		}
		if got := match(e, userView{s, u}, userSchema); got != c.want {
			t.Errorf("%s: %v, want %v", c.f, got, c.want)
		}
	}
}

// TestFilterGroups: members, including the membership check Entra ID
// makes, answered without building the member list.
func TestFilterGroups(t *testing.T) {
	g := &group{id: "g1", doc: docOf(t, `{"displayName": "Finance", "externalId": "e1"}`), members: map[string]struct{}{"u1": {}, "u2": {}}}
	for _, c := range []struct {
		f    string
		want bool
	}{
		{`displayName eq "finance"`, true},
		{`id eq "g1" and members eq "u2"`, true},
		{`id eq "g1" and members eq "u3"`, false},
		{`members.value eq "u1"`, true},
		{`members[value eq "u1"]`, true},
		{`members[value eq "U1"]`, false},
		{`members pr`, true},
	} {
		e, err := parseFilter(c.f, groupSchema)
		if err != nil {
			t.Errorf("%s: %v", c.f, err)
			continue
		}
		if got := match(e, groupView{nil, g}, groupSchema); got != c.want {
			t.Errorf("%s: %v, want %v", c.f, got, c.want)
		}
	}
	for _, bad := range []string{`userName eq "x"`, `members.shoe eq "x"`, `displayName eq`, `members[value[x eq "y"]]`} {
		if _, err := parseFilter(bad, groupSchema); err == nil {
			t.Errorf("%s: accepted", bad)
		} else if e, ok := err.(*Error); !ok || e.Type != "invalidFilter" {
			t.Errorf("%s: %v, want invalidFilter", bad, err)
		}
	}
}

// FuzzFilter: no filter text makes the parser, the check or the evaluator
// panic, and a filter that parses evaluates deterministically.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		`userName eq "alice@corp.example"`, `emails[type eq "work"].value eq "x"`, `not (active eq true) or name.givenName sw "A"`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x"`, `members[value eq "u1"]`,
		`x-count gt 5`, `meta.lastModified gt "2011-05-13T04:42:34Z"`, `emails[type eq "work" or value pr]`, `(`, `"`, `userName eq 1.5e3`,
	} {
		f.Add(s)
	}
	u := &user{id: "u1", doc: map[string]any{"userName": "alice", "active": true, "emails": []any{map[string]any{"value": "a@b", "type": "work"}}, "name": map[string]any{"givenName": "A"}}}
	s := &Server{groupsOf: map[string]map[string]struct{}{}, groups: map[string]*group{}}
	g := &group{id: "g", doc: map[string]any{"displayName": "x"}, members: map[string]struct{}{"u1": {}}}
	f.Fuzz(func(t *testing.T, text string) {
		for _, sch := range []schemaDef{userSchema, groupSchema} {
			e, err := parseFilter(text, sch)
			if err != nil {
				if se, ok := err.(*Error); !ok || se.Status != 400 || se.Type != "invalidFilter" {
					t.Fatalf("%q: error %v is not a 400 invalidFilter", text, err)
				}
				continue
			}
			var v view = userView{s, u}
			if sch["username"] == nil {
				v = groupView{s, g}
			}
			if match(e, v, sch) != match(e, v, sch) {
				t.Fatalf("%q: evaluation not deterministic", text)
			}
		}
	})
}
