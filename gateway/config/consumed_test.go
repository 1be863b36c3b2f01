package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/edgegw/edgegw"

// notReadFuncs are the methods whose reads of a configuration field do not
// count as using it: they check, default, copy or compare the setting, so
// a field read only there is accepted and then ignored.
var notReadFuncs = []string{"SetDefaults", "Validate", "CheckFiles", "Equal", "Clone"}

// TestEveryFieldIsRead fails on a configuration field that no code acts
// on: every YAML field of the Config tree (found by reflection, as the
// decoder finds them) must be read by a selector expression somewhere in
// the module's non-test Go code, outside the methods in notReadFuncs
// (and functions whose name starts with "validate" or "check"). The
// reads are found with go/types, so a field is matched by its declaring
// type, not just by its name. testdata/unread-fields.txt lists the
// exceptions, each with the reason it is not a silently ignored setting.
func TestEveryFieldIsRead(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: type-checks the whole module")
	}
	schema := map[string][]string{} // "pkg.Type.Field" → YAML paths
	schemaFields(reflect.TypeFor[Config](), "", schema, map[reflect.Type]bool{})
	if len(schema) < 50 {
		t.Fatalf("found only %d schema fields: the walk is broken", len(schema))
	}
	read := moduleFieldReads(t)

	allowed := map[string]bool{}
	f, err := os.Open("testdata/unread-fields.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, reason, _ := strings.Cut(line, " ")
		if strings.TrimSpace(reason) == "" {
			t.Errorf("unread-fields.txt: %s has no reason", path)
		}
		allowed[path] = true
	}

	var paths []string
	for key, ps := range schema {
		if read[key] {
			for _, p := range ps {
				if allowed[p] {
					t.Errorf("%s (%s) is read now: remove it from testdata/unread-fields.txt", p, key)
				}
			}
			continue
		}
		for _, p := range ps {
			if !allowed[p] {
				paths = append(paths, p+" ("+key+")")
			}
		}
	}
	slices.Sort(paths)
	for _, p := range paths {
		t.Errorf("configuration field %s is never read outside %s: "+
			"make the code act on it, refuse it in Validate, or list it in testdata/unread-fields.txt with the reason",
			p, strings.Join(notReadFuncs, "/"))
	}
	all := map[string]bool{}
	for _, ps := range schema {
		for _, p := range ps {
			all[p] = true
		}
	}
	for p := range allowed {
		if !all[p] {
			t.Errorf("unread-fields.txt names %s, which is not a configuration field", p)
		}
	}
}

// schemaFields records every YAML field of the module's struct types
// reachable from t, keyed by declaring type and field name. Paths use
// "[]" for list elements and "*" for map values.
func schemaFields(t reflect.Type, path string, out map[string][]string, seen map[reflect.Type]bool) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		suffix := ""
		if t.Kind() != reflect.Pointer {
			suffix = "[]"
		}
		schemaFields(t.Elem(), path+suffix, out, seen)
		return
	case reflect.Map:
		schemaFields(t.Elem(), join(path, "*"), out, seen)
		return
	case reflect.Struct:
	default:
		return
	}
	if !strings.HasPrefix(t.PkgPath(), module) || seen[t] {
		return
	}
	seen[t] = true
	defer delete(seen, t)
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
			schemaFields(sf.Type, path, out, seen)
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		p := join(path, name)
		key := t.PkgPath() + "." + t.Name() + "." + sf.Name
		out[key] = append(out[key], p)
		schemaFields(sf.Type, p, out, seen)
	}
}

type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Export     string
	Standard   bool
}

// moduleFieldReads type-checks every package of the module (imports from
// the compiler's export data, as go vet does) and returns the struct
// fields read by a selector expression outside notReadFuncs, keyed
// "pkg.Type.Field".
func moduleFieldReads(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-export", "-deps", "-json", module+"/...")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.Bytes())
	}
	exports := map[string]string{}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if strings.HasPrefix(p.ImportPath, module) {
			pkgs = append(pkgs, p)
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		return os.Open(exports[path])
	})
	read := map[string]bool{}
	for _, p := range pkgs {
		var files []*ast.File
		for _, name := range append(p.GoFiles, p.CgoFiles...) {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Selections: map[*ast.SelectorExpr]*types.Selection{}}
		conf := types.Config{Importer: imp, FakeImportC: true, Error: func(error) {}}
		if _, err := conf.Check(p.ImportPath, fset, files, info); err != nil && len(p.CgoFiles) == 0 {
			t.Fatalf("type-check %s: %v", p.ImportPath, err)
		}
		for _, f := range files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil || notRead(fd) {
					continue
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					if sel, ok := n.(*ast.SelectorExpr); ok {
						if s := info.Selections[sel]; s != nil && s.Kind() == types.FieldVal {
							if key := fieldKey(s); key != "" {
								read[key] = true
							}
						}
					}
					return true
				})
			}
		}
	}
	return read
}

func notRead(fd *ast.FuncDecl) bool {
	name := fd.Name.Name
	return (fd.Recv != nil && slices.Contains(notReadFuncs, name)) ||
		strings.HasPrefix(name, "validate") || strings.HasPrefix(name, "check")
}

// fieldKey names the field a selection reads by its declaring named type:
// it follows the embedded fields the selection passes through.
func fieldKey(s *types.Selection) string {
	typ := s.Recv()
	idx := s.Index()
	for i, x := range idx {
		if p, ok := typ.(*types.Pointer); ok {
			typ = p.Elem()
		}
		named, _ := typ.(*types.Named)
		st, ok := typ.Underlying().(*types.Struct)
		if !ok {
			return ""
		}
		f := st.Field(x)
		if i == len(idx)-1 {
			if named == nil || named.Obj().Pkg() == nil {
				return ""
			}
			return named.Obj().Pkg().Path() + "." + named.Obj().Name() + "." + f.Name()
		}
		typ = f.Type()
	}
	return ""
}
