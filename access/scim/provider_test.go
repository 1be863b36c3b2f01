package scim

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type conversation struct {
	Provider string `json:"provider"`
	Devices  []struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	} `json:"devices"`
	Steps []json.RawMessage `json:"steps"`
}

type step struct {
	Comment           string                     `json:"comment"`
	Method            string                     `json:"method"`
	Path              string                     `json:"path"`
	Body              json.RawMessage            `json:"body"`
	Status            int                        `json:"status"`
	Response          map[string]any             `json:"response"`
	Absent            []string                   `json:"absent"`
	AbsentInResources []string                   `json:"absentInResources"`
	Capture           string                     `json:"capture"`
	Devices           map[string]json.RawMessage `json:"devices"`
}

// escapeQuery escapes the values of the path's query, which the files
// keep readable.
func escapeQuery(p string) string {
	path, query, ok := strings.Cut(p, "?")
	if !ok {
		return p
	}
	var parts []string
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		parts = append(parts, k+"="+url.QueryEscape(v))
	}
	return path + "?" + strings.Join(parts, "&")
}

// TestProviderConversations replays testdata/*.json, the requests Entra ID
// and Okta send (testdata/README.md), against a real device registry and
// checks each answer and what it did to the devices.
func TestProviderConversations(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) < 2 {
		t.Fatalf("conversations: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c conversation
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			e := newEnv(t)
			for _, d := range c.Devices {
				e.enroll(d.Email, d.Groups...)
			}
			ids := map[string]string{}
			subst := func(b []byte) []byte {
				s := string(b)
				for k, v := range ids {
					s = strings.ReplaceAll(s, "{"+k+"}", v)
				}
				return []byte(s)
			}
			for i, rawStep := range c.Steps {
				var st step
				if err := json.Unmarshal(subst(rawStep), &st); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				name := fmt.Sprintf("%s step %d (%s %s) %s", c.Provider, i, st.Method, st.Path, st.Comment)
				var body any
				if len(st.Body) > 0 {
					body = []byte(st.Body)
				}
				status, got := e.do(st.Method, escapeQuery(st.Path), body)
				if status != st.Status {
					t.Fatalf("%s: status %d, want %d: %v", name, status, st.Status, got)
				}
				if st.Response != nil && !subset(st.Response, got) {
					gj, _ := json.MarshalIndent(got, "", "  ")
					t.Fatalf("%s: answer lacks %v:\n%s", name, st.Response, gj)
				}
				for _, k := range st.Absent {
					if _, ok := got[k]; ok {
						t.Errorf("%s: answer has %q", name, k)
					}
				}
				if res, ok := got["Resources"].([]any); ok {
					for _, r := range res {
						for _, k := range st.AbsentInResources {
							if _, ok := r.(map[string]any)[k]; ok {
								t.Errorf("%s: a resource has %q", name, k)
							}
						}
					}
				}
				if st.Capture != "" {
					id, _ := got["id"].(string)
					if id == "" {
						t.Fatalf("%s: no id to capture", name)
					}
					ids[st.Capture] = id
				}
				for email, want := range st.Devices {
					active, revoked := e.devicesOf(email)
					if string(want) == `"revoked"` {
						if len(active) != 0 || revoked == 0 {
							t.Errorf("%s: %s has %d active devices, %d revoked; want all revoked", name, email, len(active), revoked)
						}
						continue
					}
					var groups []string
					if err := json.Unmarshal(want, &groups); err != nil {
						t.Fatalf("%s: devices[%s]: %v", name, email, err)
					}
					if len(active) == 0 {
						t.Errorf("%s: %s has no active device", name, email)
					}
					for _, d := range active {
						if !slices.Equal(d.Groups, groups) && !(len(d.Groups) == 0 && len(groups) == 0) {
							t.Errorf("%s: device of %s has groups %v, want %v", name, email, d.Groups, groups)
						}
					}
				}
			}
		})
	}
}
