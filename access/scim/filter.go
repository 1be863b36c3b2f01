package scim

import (
	"regexp"
	"strings"

	filter "github.com/scim2/filter-parser/v2"
)

// maxFilterLen bounds a filter's text: the parser's work grows with it.
const maxFilterLen = 4096

// parseFilter parses a filter (RFC 7644 section 3.4.2.2) and checks that
// every attribute it names exists in s: a filter on an attribute the
// server does not know is refused with invalidFilter rather than silently
// matching nothing.
func parseFilter(text string, s schemaDef) (filter.Expression, error) {
	if len(text) > maxFilterLen {
		return nil, badRequest("invalidFilter", "filter is %d bytes long (at most %d)", len(text), maxFilterLen)
	}
	e, err := filter.ParseFilter([]byte(entraValuePath(text)))
	if err != nil {
		return nil, badRequest("invalidFilter", "filter %q does not parse: %v", text, err)
	}
	if err := checkExpr(e, s, nil); err != nil {
		return nil, badRequest("invalidFilter", "filter %q: %v", text, err)
	}
	return e, nil
}

// entraSubFilter is Entra ID's emails[type eq "work"].value eq "x": a
// value path followed by a sub-attribute and a comparison, which RFC
// 7644's grammar lacks.
var entraSubFilter = regexp.MustCompile(`^\s*([A-Za-z][\w:.-]*)\[([^\]]*)\]\.([A-Za-z][\w-]*)\s+([A-Za-z]{2})\s+(.*?)\s*$`)

// entraValuePath rewrites Entra ID's form into the RFC's equivalent,
// emails[type eq "work" and value eq "x"]; other filters pass unchanged.
func entraValuePath(text string) string {
	m := entraSubFilter.FindStringSubmatch(text)
	if m == nil || strings.Contains(strings.ToLower(m[2]), " or ") {
		// The parser takes no parentheses inside brackets, so only a
		// conjunction can be extended safely.
		return text
	}
	return m[1] + "[" + m[2] + " and " + m[3] + " " + m[4] + " " + m[5] + "]"
}

type filterError string

func (e filterError) Error() string { return string(e) }

// checkExpr checks e's attributes against s, or against subs inside a
// value path's brackets.
func checkExpr(e filter.Expression, s schemaDef, subs map[string]*attrDef) error {
	switch e := e.(type) {
	case *filter.AttributeExpression:
		d, err := resolve(e.AttributePath, s, subs)
		if err != nil {
			return err
		}
		if d.subs != nil && e.Operator != filter.PR && e.AttributePath.SubAttribute == nil && d.subs["value"] == nil {
			return filterError("complex attribute " + d.name + " compared without a sub-attribute")
		}
		return nil
	case *filter.LogicalExpression:
		if err := checkExpr(e.Left, s, subs); err != nil {
			return err
		}
		return checkExpr(e.Right, s, subs)
	case *filter.NotExpression:
		return checkExpr(e.Expression, s, subs)
	case *filter.ValuePath:
		if subs != nil {
			return filterError("a value path inside a value path")
		}
		d, err := resolve(e.AttributePath, s, nil)
		if err != nil {
			return err
		}
		if d.subs == nil {
			return filterError(d.name + " has no sub-attributes to filter on")
		}
		return checkExpr(e.ValueFilter, s, d.subs)
	default:
		return filterError("unsupported expression")
	}
}

// resolve finds the attribute a path names: in subs when given (inside a
// value path), else in s or one of its extensions.
func resolve(p filter.AttributePath, s schemaDef, subs map[string]*attrDef) (*attrDef, error) {
	if subs != nil {
		if p.URIPrefix != nil || p.SubAttribute != nil {
			return nil, filterError("sub-attribute path " + p.String() + " inside a value path")
		}
		d := subs[strings.ToLower(p.AttributeName)]
		if d == nil {
			return nil, filterError("unknown sub-attribute " + p.AttributeName)
		}
		return d, nil
	}
	schema := s
	if p.URIPrefix != nil {
		uri := strings.ToLower(*p.URIPrefix)
		switch ext, ok := extensions(s)[uri]; {
		case uri == strings.ToLower(coreURN(s)):
		case ok:
			schema = ext
		default:
			return nil, filterError("unknown schema " + *p.URIPrefix)
		}
	}
	d := schema[strings.ToLower(p.AttributeName)]
	if d == nil || d.name == "password" {
		return nil, filterError("unknown attribute " + p.AttributeName)
	}
	if p.SubAttribute != nil {
		if d.subs == nil {
			return nil, filterError(d.name + " has no sub-attribute " + *p.SubAttribute)
		}
		sd := d.subs[strings.ToLower(*p.SubAttribute)]
		if sd == nil {
			return nil, filterError("unknown sub-attribute " + d.name + "." + *p.SubAttribute)
		}
		return sd, nil
	}
	return d, nil
}

// view is what a filter reads: a resource (with the attributes the server
// keeps beside the document: id, meta, members) or one element of a
// multi-valued attribute.
type view interface {
	// get returns the attribute name (canonical spelling) of the schema
	// ext ("" for the core schema).
	get(ext, name string) (any, bool)
}

// mapView is a plain JSON object.
type mapView map[string]any

func (m mapView) get(ext, name string) (any, bool) {
	if ext != "" {
		_, e, ok := lookup(m, ext)
		em, _ := e.(map[string]any)
		if !ok || em == nil {
			return nil, false
		}
		_, v, ok := lookup(em, name)
		return v, ok
	}
	_, v, ok := lookup(m, name)
	return v, ok
}

// memberSet is a view that answers "members eq id" without building the
// member list.
type memberSet interface{ hasMember(id string) bool }

// match evaluates e on v.
func match(e filter.Expression, v view, s schemaDef) bool {
	switch e := e.(type) {
	case *filter.AttributeExpression:
		p := e.AttributePath
		if ms, ok := v.(memberSet); ok && strings.EqualFold(p.AttributeName, "members") && p.URIPrefix == nil &&
			(p.SubAttribute == nil || strings.EqualFold(*p.SubAttribute, "value")) && e.Operator == filter.EQ {
			id, ok := e.CompareValue.(string)
			return ok && ms.hasMember(id)
		}
		val, caseExact, ok := value(p, v, s)
		if !ok {
			return e.Operator == filter.NE
		}
		return compare(val, e.Operator, e.CompareValue, caseExact)
	case *filter.LogicalExpression:
		if e.Operator == filter.AND {
			return match(e.Left, v, s) && match(e.Right, v, s)
		}
		return match(e.Left, v, s) || match(e.Right, v, s)
	case *filter.NotExpression:
		return !match(e.Expression, v, s)
	case *filter.ValuePath:
		val, _, ok := value(e.AttributePath, v, s)
		if !ok {
			return false
		}
		d, _ := resolve(e.AttributePath, s, nil)
		for _, el := range elements(val) {
			if m, ok := el.(map[string]any); ok && d != nil && match(e.ValueFilter, mapView(m), subSchema(d)) {
				return true
			}
		}
		return false
	}
	return false
}

// subSchema turns an attribute's sub-attributes into a schema, for the
// filter inside a value path.
func subSchema(d *attrDef) schemaDef { return schemaDef(d.subs) }

// value reads the attribute p names from v: the attribute itself, or its
// sub-attribute from the object or from each element of the list.
func value(p filter.AttributePath, v view, s schemaDef) (any, bool, bool) {
	ext := ""
	if p.URIPrefix != nil && !strings.EqualFold(*p.URIPrefix, coreURN(s)) {
		ext = canonicalURN(strings.ToLower(*p.URIPrefix))
	}
	name, caseExact := p.AttributeName, false
	var d *attrDef
	if ext == "" {
		d = s[strings.ToLower(name)]
	} else if es := extensions(s)[strings.ToLower(ext)]; es != nil {
		d = es[strings.ToLower(name)]
	}
	if d != nil {
		name, caseExact = d.name, d.caseExact
	}
	val, ok := v.get(ext, name)
	if !ok || p.SubAttribute == nil {
		return val, caseExact, ok
	}
	sub := *p.SubAttribute
	if d != nil && d.subs != nil {
		if sd := d.subs[strings.ToLower(sub)]; sd != nil {
			caseExact = sd.caseExact
		}
	}
	var out []any
	for _, el := range elements(val) {
		if m, ok := el.(map[string]any); ok {
			if _, sv, ok := lookup(m, sub); ok {
				out = append(out, sv)
			}
		}
	}
	if len(out) == 0 {
		return nil, caseExact, false
	}
	if _, multi := val.([]any); !multi {
		return out[0], caseExact, true
	}
	return out, caseExact, true
}

// elements is a value as a list: a multi-valued attribute's elements, or
// the one value.
func elements(v any) []any {
	if s, ok := v.([]any); ok {
		return s
	}
	if v == nil {
		return nil
	}
	return []any{v}
}

// compare applies op to an attribute's value and the filter's literal. A
// multi-valued attribute matches when one of its elements does; a complex
// value compares its "value" sub-attribute.
func compare(val any, op filter.CompareOperator, lit any, caseExact bool) bool {
	if op == filter.PR {
		switch v := val.(type) {
		case nil:
			return false
		case string:
			return v != ""
		case []any:
			return len(v) > 0
		case map[string]any:
			return len(v) > 0
		}
		return true
	}
	if list, ok := val.([]any); ok {
		if op == filter.NE {
			for _, el := range list {
				if compare(el, filter.EQ, lit, caseExact) {
					return false
				}
			}
			return true
		}
		for _, el := range list {
			if compare(el, op, lit, caseExact) {
				return true
			}
		}
		return false
	}
	if m, ok := val.(map[string]any); ok {
		_, val, _ = lookup(m, "value")
	}
	switch v := val.(type) {
	case string:
		l, ok := lit.(string)
		if !ok {
			return op == filter.NE
		}
		if !caseExact {
			v, l = strings.ToLower(v), strings.ToLower(l)
		}
		switch op {
		case filter.EQ:
			return v == l
		case filter.NE:
			return v != l
		case filter.CO:
			return strings.Contains(v, l)
		case filter.SW:
			return strings.HasPrefix(v, l)
		case filter.EW:
			return strings.HasSuffix(v, l)
		case filter.GT:
			return v > l
		case filter.GE:
			return v >= l
		case filter.LT:
			return v < l
		case filter.LE:
			return v <= l
		}
	case bool:
		l, ok := lit.(bool)
		switch {
		case !ok:
			return op == filter.NE
		case op == filter.EQ:
			return v == l
		case op == filter.NE:
			return v != l
		}
	case float64:
		var l float64
		switch n := lit.(type) {
		case int:
			l = float64(n)
		case float64:
			l = n
		default:
			return op == filter.NE
		}
		switch op {
		case filter.EQ:
			return v == l
		case filter.NE:
			return v != l
		case filter.GT:
			return v > l
		case filter.GE:
			return v >= l
		case filter.LT:
			return v < l
		case filter.LE:
			return v <= l
		}
	case nil:
		return (op == filter.EQ) == (lit == nil)
	}
	return false
}
