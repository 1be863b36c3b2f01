// Package scim is edgegw's SCIM 2.0 service provider (RFC 7643, RFC 7644)
// for identity providers that push users and groups: Microsoft Entra ID
// and Okta, as they send them (testdata/README.md documents their
// requests). It serves /scim/v2 on the Access listener behind a bearer
// token and keeps the provider's users and groups in a SQLite file in the
// state dir. A user deactivated or deleted at the provider has every
// device revoked in the device registry; a change to a user's group
// memberships changes the groups of that user's devices. Both reach the
// WireGuard peers and the firewall's identity sets through the registry's
// snapshots; a deactivation is answered once the gateway applied it.
//
// Users and groups are kept as the provider sent them (JSON objects),
// with the attributes of RFC 7643's core schemas (and the enterprise
// extension) put in their canonical spelling, so filters and PATCH paths
// match them without regard to case as the RFC asks.
package scim

import (
	"strings"
)

// URNs of the schemas and messages this server speaks.
const (
	SchemaUser       = "urn:ietf:params:scim:schemas:core:2.0:User"
	SchemaGroup      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	SchemaEnterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	msgPatchOp       = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	msgListResponse  = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	msgError         = "urn:ietf:params:scim:api:messages:2.0:Error"
	schemaSPConfig   = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	schemaResType    = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
)

// attrDef is one attribute of a schema: its canonical name, whether it
// holds a list, and its sub-attributes when it is complex.
type attrDef struct {
	name  string
	multi bool
	subs  map[string]*attrDef // by lower-case name; nil for simple attributes
	// readOnly attributes are the server's: a PUT or POST that sends them
	// is ignored for them, a PATCH that targets them is refused.
	readOnly bool
	// caseExact strings compare exactly in filters; the rest ignore case.
	caseExact bool
}

// schemaDef is a resource type's attributes by lower-case name.
type schemaDef map[string]*attrDef

func defs(list ...*attrDef) map[string]*attrDef {
	m := make(map[string]*attrDef, len(list))
	for _, d := range list {
		m[strings.ToLower(d.name)] = d
	}
	return m
}

func simple(name string) *attrDef { return &attrDef{name: name} }

// multiComplex is a multi-valued complex attribute with the sub-attributes
// RFC 7643 gives every such attribute plus extra.
func multiComplex(name string, extra ...string) *attrDef {
	subs := []*attrDef{simple("value"), simple("display"), simple("type"), simple("primary"), simple("$ref")}
	for _, e := range extra {
		subs = append(subs, simple(e))
	}
	return &attrDef{name: name, multi: true, subs: defs(subs...)}
}

var (
	commonAttrs = []*attrDef{
		{name: "id", readOnly: true, caseExact: true},
		{name: "externalId", caseExact: true},
		{name: "schemas", multi: true, readOnly: true},
		{name: "meta", readOnly: true, subs: defs(simple("resourceType"), simple("created"), simple("lastModified"), simple("location"), simple("version"))},
	}

	userSchema = schemaDef(defs(append(commonAttrs[:len(commonAttrs):len(commonAttrs)],
		simple("userName"),
		&attrDef{name: "name", subs: defs(simple("formatted"), simple("familyName"), simple("givenName"),
			simple("middleName"), simple("honorificPrefix"), simple("honorificSuffix"))},
		simple("displayName"), simple("nickName"), simple("profileUrl"), simple("title"), simple("userType"),
		simple("preferredLanguage"), simple("locale"), simple("timezone"), simple("active"), simple("password"),
		multiComplex("emails"), multiComplex("phoneNumbers"), multiComplex("ims"), multiComplex("photos"),
		&attrDef{name: "addresses", multi: true, subs: defs(simple("formatted"), simple("streetAddress"), simple("locality"),
			simple("region"), simple("postalCode"), simple("country"), simple("type"), simple("primary"))},
		&attrDef{name: "groups", multi: true, readOnly: true, subs: defs(simple("value"), simple("display"), simple("type"), simple("$ref"))},
		multiComplex("entitlements"), multiComplex("roles"), multiComplex("x509Certificates"),
	)...))

	enterpriseSchema = schemaDef(defs(
		simple("employeeNumber"), simple("costCenter"), simple("organization"), simple("division"), simple("department"),
		&attrDef{name: "manager", subs: defs(simple("value"), simple("$ref"), simple("displayName"))},
	))

	groupSchema = schemaDef(defs(append(commonAttrs[:len(commonAttrs):len(commonAttrs)],
		simple("displayName"),
		&attrDef{name: "members", multi: true, subs: defs(&attrDef{name: "value", caseExact: true}, simple("display"), simple("type"), simple("$ref"))},
	)...))
)

// extensions are the schema extensions a resource type may carry, by
// lower-case URN.
func extensions(s schemaDef) map[string]schemaDef {
	if s["username"] != nil {
		return map[string]schemaDef{strings.ToLower(SchemaEnterprise): enterpriseSchema}
	}
	return nil
}

// coreURN is the resource type's own schema URN.
func coreURN(s schemaDef) string {
	if s["username"] != nil {
		return SchemaUser
	}
	return SchemaGroup
}

// canonicalize renames, in place, the keys of doc that name an attribute of
// s (or a sub-attribute) to their canonical spelling, so that "UserName"
// and "userName" are one attribute. Unknown keys stay as sent.
func canonicalize(doc map[string]any, s schemaDef) {
	for k, v := range doc {
		lk := strings.ToLower(k)
		if ext, ok := extensions(s)[lk]; ok {
			if m, ok := v.(map[string]any); ok {
				canonicalizeKeys(m, ext)
			}
			renameKey(doc, k, canonicalURN(lk))
			continue
		}
		d := s[lk]
		if d == nil {
			continue
		}
		if d.subs != nil {
			switch v := v.(type) {
			case map[string]any:
				canonicalizeKeys(v, d.subs)
			case []any:
				for _, e := range v {
					if m, ok := e.(map[string]any); ok {
						canonicalizeKeys(m, d.subs)
					}
				}
			}
		}
		renameKey(doc, k, d.name)
	}
}

func canonicalizeKeys(m map[string]any, subs map[string]*attrDef) {
	for k := range m {
		if d := subs[strings.ToLower(k)]; d != nil {
			renameKey(m, k, d.name)
		}
	}
}

// canonicalURN is the spelling of a known extension URN.
func canonicalURN(lower string) string {
	if lower == strings.ToLower(SchemaEnterprise) {
		return SchemaEnterprise
	}
	return lower
}

// renameKey moves m[from] to m[to]; when both exist (a document that sent
// the attribute twice in different case) the canonical one wins.
func renameKey(m map[string]any, from, to string) {
	if from == to {
		return
	}
	if _, ok := m[to]; !ok {
		m[to] = m[from]
	}
	delete(m, from)
}

// lookup finds key in m without regard to case.
func lookup(m map[string]any, key string) (string, any, bool) {
	if v, ok := m[key]; ok {
		return key, v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return k, v, true
		}
	}
	return "", nil, false
}

// deepCopy copies a decoded JSON value.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	default:
		return v
	}
}
