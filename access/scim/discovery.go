package scim

import "strings"

// serviceProviderConfig is what the server supports (RFC 7643 section 5):
// PATCH and filters, no bulk, sorting, ETags or password changes.
func serviceProviderConfig(base string) map[string]any {
	return map[string]any{
		"schemas":               []string{schemaSPConfig},
		"documentationUri":      "https://github.com/edgegw/edgegw",
		"patch":                 map[string]any{"supported": true},
		"bulk":                  map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":                map[string]any{"supported": true, "maxResults": maxCount},
		"changePassword":        map[string]any{"supported": false},
		"sort":                  map[string]any{"supported": false},
		"etag":                  map[string]any{"supported": false},
		"authenticationSchemes": []any{map[string]any{"type": "oauthbearertoken", "name": "Bearer token", "description": "The token in scim.token_file", "primary": true}},
		"meta":                  map[string]any{"resourceType": "ServiceProviderConfig", "location": base + "/ServiceProviderConfig"},
	}
}

// resourceTypes lists User and Group, or names one.
func resourceTypes(base, name string) any {
	rt := func(n, endpoint, schema string, ext ...string) map[string]any {
		m := map[string]any{
			"schemas":  []string{schemaResType},
			"id":       n,
			"name":     n,
			"endpoint": endpoint,
			"schema":   schema,
			"meta":     map[string]any{"resourceType": "ResourceType", "location": base + "/ResourceTypes/" + n},
		}
		if len(ext) > 0 {
			m["schemaExtensions"] = []any{map[string]any{"schema": ext[0], "required": false}}
		}
		return m
	}
	user, grp := rt("User", "/Users", SchemaUser, SchemaEnterprise), rt("Group", "/Groups", SchemaGroup)
	switch strings.ToLower(name) {
	case "user":
		return user
	case "group":
		return grp
	}
	return map[string]any{"schemas": []string{msgListResponse}, "totalResults": 2, "startIndex": 1, "itemsPerPage": 2, "Resources": []any{user, grp}}
}
