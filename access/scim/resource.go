package scim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// user is one provisioned user. A stored user is never changed: a write
// replaces it, so readers may hold one without a lock.
type user struct {
	id                string
	doc               map[string]any // without id, meta, schemas, groups, password
	created, modified time.Time
}

// group is one provisioned group. Its document is never changed once
// stored; its member set changes only under the server's write lock (a
// deleted user leaves it).
type group struct {
	id                string
	doc               map[string]any // without id, meta, schemas, members
	members           map[string]struct{}
	created, modified time.Time
}

// active is the user's active attribute; a user without one is active.
func (u *user) active() bool {
	a, ok := u.doc["active"].(bool)
	return !ok || a
}

func (u *user) userName() string { s, _ := u.doc["userName"].(string); return s }

func (g *group) displayName() string { s, _ := g.doc["displayName"].(string); return s }

// emails are the addresses the user's devices may have been enrolled with:
// the userName (Entra ID's user principal name, Okta's login) and every
// email value, lower case, without duplicates.
func (u *user) emails() []string {
	out := []string{strings.ToLower(u.userName())}
	if list, ok := u.doc["emails"].([]any); ok {
		for _, el := range list {
			if m, ok := el.(map[string]any); ok {
				if v, ok := m["value"].(string); ok && v != "" {
					out = append(out, strings.ToLower(v))
				}
			}
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxEmails {
		out = out[:maxEmails]
	}
	return out
}

// Limits on what a provider may store; they bound memory and the database.
const (
	maxEmails     = 32
	maxTextLen    = 1024
	maxGroupName  = 256
	maxBodyBytes  = 4 << 20
	maxMemberList = 100_000
)

// decodeJSON decodes a request body; any failure is invalidSyntax.
func decodeJSON(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(v); err != nil {
		return badRequest("invalidSyntax", "body is not the expected JSON: %v", err)
	}
	if d.More() {
		return badRequest("invalidSyntax", "body has data after its JSON value")
	}
	return nil
}

// decodeDoc decodes a POST or PUT body: one JSON object.
func decodeDoc(body []byte) (map[string]any, error) {
	var doc map[string]any
	if err := decodeJSON(body, &doc); err != nil {
		return nil, err
	}
	if doc == nil {
		return nil, badRequest("invalidSyntax", "body is not a JSON object")
	}
	return doc, nil
}

// dropServerAttrs removes what the server keeps itself: a client's id,
// meta and schemas are ignored (RFC 7644 section 3.3), and a password is
// never stored.
func dropServerAttrs(doc map[string]any, s schemaDef) {
	for k := range doc {
		switch strings.ToLower(k) {
		case "id", "meta", "schemas", "password":
			delete(doc, k)
		case "groups":
			if s["username"] != nil {
				delete(doc, k) // a user's groups are the groups' members
			}
		}
	}
}

// normalizeUser checks a user document and puts it in its stored form.
func normalizeUser(doc map[string]any) error {
	canonicalize(doc, userSchema)
	dropServerAttrs(doc, userSchema)
	name, ok := doc["userName"].(string)
	if !ok || strings.TrimSpace(name) == "" {
		return badRequest("invalidValue", "userName is required and must be a string")
	}
	if err := checkText("userName", name, maxTextLen); err != nil {
		return err
	}
	switch a := doc["active"].(type) {
	case nil:
		doc["active"] = true
	case bool:
	case string:
		// Entra ID sent "True"/"False" strings before its 2020 fix, and
		// still does for applications created without the flag.
		switch strings.ToLower(a) {
		case "true":
			doc["active"] = true
		case "false":
			doc["active"] = false
		default:
			return badRequest("invalidValue", "active is %q, not a boolean", a)
		}
	default:
		return badRequest("invalidValue", "active is %T, not a boolean", a)
	}
	for _, attr := range []string{"displayName", "externalId"} {
		if v, ok := doc[attr]; ok && v != nil {
			s, ok := v.(string)
			if !ok {
				return badRequest("invalidValue", "%s must be a string", attr)
			}
			if err := checkText(attr, s, maxTextLen); err != nil {
				return err
			}
		}
	}
	for _, d := range userSchema {
		if !d.multi {
			continue
		}
		v, ok := doc[d.name]
		if !ok {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			if v == nil {
				delete(doc, d.name)
				continue
			}
			list = []any{v}
			doc[d.name] = list
		}
		for _, el := range list {
			m, ok := el.(map[string]any)
			if !ok {
				continue
			}
			if p, ok := m["primary"].(string); ok {
				m["primary"] = strings.EqualFold(p, "true")
			}
		}
	}
	if list, ok := doc["emails"].([]any); ok {
		if len(list) > maxEmails {
			return badRequest("invalidValue", "%d emails (at most %d)", len(list), maxEmails)
		}
		for _, el := range list {
			m, ok := el.(map[string]any)
			if !ok {
				return badRequest("invalidValue", "an email is an object with a value")
			}
			v, ok := m["value"].(string)
			if !ok {
				return badRequest("invalidValue", "an email's value must be a string")
			}
			if err := checkText("email", v, 320); err != nil {
				return err
			}
		}
	}
	return nil
}

// normalizeGroup checks a group document, takes its members out and puts
// it in its stored form.
func normalizeGroup(doc map[string]any) ([]string, error) {
	canonicalize(doc, groupSchema)
	var ids []string
	if v, ok := doc["members"]; ok {
		if v != nil {
			var err error
			if ids, err = memberIDs(v); err != nil {
				return nil, err
			}
		}
		delete(doc, "members")
	}
	if len(ids) > maxMemberList {
		return nil, badRequest("invalidValue", "%d members (at most %d)", len(ids), maxMemberList)
	}
	dropServerAttrs(doc, groupSchema)
	return ids, checkGroupDoc(doc)
}

func checkGroupDoc(doc map[string]any) error {
	name, ok := doc["displayName"].(string)
	if !ok || strings.TrimSpace(name) == "" {
		return badRequest("invalidValue", "displayName is required and must be a string")
	}
	if err := checkText("displayName", name, maxGroupName); err != nil {
		return err
	}
	if v, ok := doc["externalId"]; ok && v != nil {
		s, ok := v.(string)
		if !ok {
			return badRequest("invalidValue", "externalId must be a string")
		}
		return checkText("externalId", s, maxTextLen)
	}
	return nil
}

// checkText refuses what the device registry and logs cannot hold:
// oversized, non-UTF-8 or control characters.
func checkText(what, s string, limit int) error {
	if len(s) > limit {
		return badRequest("invalidValue", "%s is %d bytes long (at most %d)", what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return badRequest("invalidValue", "%s is not UTF-8", what)
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return badRequest("invalidValue", "%s %q contains a control character", what, s)
	}
	return nil
}

// meta is a resource's meta attribute.
func meta(kind, base, id string, created, modified time.Time) map[string]any {
	return map[string]any{
		"resourceType": kind,
		"created":      created.UTC().Format(time.RFC3339Nano),
		"lastModified": modified.UTC().Format(time.RFC3339Nano),
		"location":     base + "/" + kind + "s/" + id,
		"version":      fmt.Sprintf("W/%q", fmt.Sprint(modified.UnixNano())),
	}
}

// schemasOf lists the core URN and each extension the document carries.
func schemasOf(doc map[string]any, s schemaDef) []string {
	out := []string{coreURN(s)}
	for k := range doc {
		if _, ok := extensions(s)[strings.ToLower(k)]; ok {
			out = append(out, k)
		}
	}
	return out
}

// projection is a request's attributes/excludedAttributes (RFC 7644
// section 3.9), by lower-case top-level attribute name.
type projection struct {
	only, except map[string]bool
}

func parseProjection(attrs, excluded string) projection {
	split := func(s string) map[string]bool {
		if s == "" {
			return nil
		}
		m := map[string]bool{}
		for _, a := range strings.Split(s, ",") {
			a = strings.ToLower(strings.TrimSpace(a))
			for _, urn := range []string{SchemaUser, SchemaGroup} {
				a = strings.TrimPrefix(a, strings.ToLower(urn)+":")
			}
			if i := strings.IndexAny(a, ".["); i > 0 && !strings.HasPrefix(a, "urn:") {
				a = a[:i]
			}
			m[a] = true
		}
		return m
	}
	return projection{only: split(attrs), except: split(excluded)}
}

// keep reports whether the top-level attribute k is returned.
func (p projection) keep(k string) bool {
	lk := strings.ToLower(k)
	switch lk {
	case "id", "schemas", "meta":
		return true
	}
	if p.only != nil && !p.only[lk] {
		return false
	}
	return !p.except[lk]
}
