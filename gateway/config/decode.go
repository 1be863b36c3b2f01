package config

import (
	"encoding"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgegw/edgegw/firewall/rules"
)

// decoder turns a YAML node tree into typed structs. It exists (rather than
// yaml.Node.Decode) so that every problem is reported at once, with its line,
// column and dotted field path, and so that unknown keys are errors that name
// the key instead of the Go type.
type decoder struct {
	errs      *Errors
	pos       map[string]Pos // field path → position of its value, for Validate reports
	shapeErrs int            // errs.List[:shapeErrs] are decoding errors
}

// report adds a validation error unless it concerns a path that already
// failed to decode, or a field that already has an error (two checks that
// both catch, say, a duplicate tunnel name say it once).
func (d *decoder) report(path, msg string) {
	for i, e := range d.errs.List {
		if (i < d.shapeErrs && related(e.Path, path)) || e.Path == path {
			return
		}
	}
	d.errs.add(d.position(path), path, msg)
}

// related says whether one path is the other or lies under it.
func related(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	return a == b || (strings.HasPrefix(b, a) && (b[len(a)] == '.' || b[len(a)] == '['))
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	unmarshalType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs.add(Pos{Line: n.Line, Col: n.Column}, path, fmt.Sprintf(format, args...))
}

// decode fills v (settable) from n. path is the dotted path of v.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.pos[path] = Pos{Line: n.Line, Col: n.Column}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value leaves the zero value (and its defaults)
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if v.Type() == durationType {
		d.duration(n, v, path)
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalType) {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a single value, got %s", kindName(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			msg := cleanErr(err)
			if !strings.Contains(msg, n.Value) {
				msg = fmt.Sprintf("%q: %s", n.Value, msg)
			}
			d.fail(n, path, "%s", msg)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := scalarBool(n)
		if !ok {
			d.fail(n, path, "expected true or false, got %s", quote(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(n.Value, 0, v.Type().Bits())
		if n.Kind != yaml.ScalarNode || err != nil {
			d.fail(n, path, "expected a whole number, got %s", quote(n))
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(n.Value, 0, v.Type().Bits())
		if n.Kind != yaml.ScalarNode || err != nil {
			max := uint64(math.MaxUint64) >> (64 - v.Type().Bits())
			d.fail(n, path, "expected a whole number from 0 to %d, got %s", max, quote(n))
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.fail(n, path, "expected a number, got %s", quote(n))
			return
		}
		v.SetFloat(f)
	default:
		// A config type the decoder cannot fill is a programming error.
		panic(fmt.Sprintf("config: cannot decode into %s at %s", v.Type(), path))
	}
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected a duration such as 30s or 24h, got %s", kindName(n))
		return
	}
	if n.Value == "0" {
		v.SetInt(0)
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		d.fail(n, path, "expected a duration such as 30s or 24h, got %s", quote(n))
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping of keys, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if seen[k.Value] {
			d.fail(k, p, "duplicate key")
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			d.fail(k, p, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		d.decode(val, v.FieldByIndex(f.index), p)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic(fmt.Sprintf("config: map key of %s must be a string", v.Type()))
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if m.MapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key())).IsValid() {
			d.fail(k, p, "duplicate key")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, p)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

type field struct {
	index []int
	file  string // the `file:` tag: "secret", "read" or ""
}

// structFields maps YAML keys to struct fields, following `yaml:",inline"`
// so that a section can be assembled from several subsystems' types.
func structFields(t reflect.Type) map[string]field {
	out := map[string]field{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if opts == "inline" {
			for k, f := range structFields(sf.Type) {
				f.index = append([]int{i}, f.index...)
				out[k] = f
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out[name] = field{index: []int{i}, file: sf.Tag.Get("file")}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func scalarBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	switch n.Value {
	case "true", "True", "TRUE", "yes", "on":
		return true, true
	case "false", "False", "FALSE", "no", "off":
		return false, true
	}
	return false, false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return quote(n)
	}
}

func quote(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return kindName(n)
	}
	return strconv.Quote(n.Value)
}

// cleanErr drops the "netip.ParsePrefix(...)" style prefixes the standard
// library puts on parse errors; the position and path already say where.
func cleanErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "): "); i >= 0 && strings.Contains(s[:i], "(") {
		return s[i+3:]
	}
	return s
}

// suggest names the closest known key when one is a likely typo.
func suggest(key string, fields map[string]field) string {
	if best, ok := rules.Closest(key, slices.Sorted(maps.Keys(fields))); ok {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}
