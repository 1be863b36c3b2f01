package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"strings"
)

// Subsystem config types opt into these by method; they import nothing of
// this package, so a subsystem's config stays its own.
type (
	defaulter interface{ SetDefaults() }
	validator interface {
		Validate(report func(field, msg string))
	}
	// fileChecker checks what is inside the files a section names (a
	// PSK's length, say); it runs with the file checks, after them.
	fileChecker interface {
		CheckFiles(report func(field, msg string))
	}
)

// walk visits every struct reachable from v, parents before children, with
// the dotted path of each.
func walk(v reflect.Value, path string, fn func(v reflect.Value, path string)) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			walk(v.Elem(), path, fn)
		}
	case reflect.Struct:
		fn(v, path)
		for key, f := range structFields(v.Type()) {
			walk(v.FieldByIndex(f.index), join(path, key), fn)
		}
	case reflect.Slice:
		for i := range v.Len() {
			walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i), fn)
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			// Map values are not addressable: copy, visit, store back so
			// SetDefaults on a map element sticks.
			elem := reflect.New(v.Type().Elem()).Elem()
			elem.Set(iter.Value())
			walk(elem, join(path, iter.Key().String()), fn)
			v.SetMapIndex(iter.Key(), elem)
		}
	}
}

func setDefaults(root reflect.Value) {
	walk(root, "", func(v reflect.Value, _ string) {
		if d, ok := v.Addr().Interface().(defaulter); ok {
			d.SetDefaults()
		}
	})
}

func (d *decoder) validate(root reflect.Value) {
	walk(root, "", func(v reflect.Value, path string) {
		val, ok := v.Addr().Interface().(validator)
		if !ok {
			return
		}
		val.Validate(func(field, msg string) {
			p := path
			switch {
			case field == "":
			case strings.HasPrefix(field, "["):
				p += field
			default:
				p = join(path, field)
			}
			d.report(p, msg)
		})
	})
}

// position finds where a path's value is written, or failing that where its
// nearest written parent is (a missing required key is reported at the
// section that lacks it).
func (d *decoder) position(path string) Pos {
	for path != "" {
		if p, ok := d.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return Pos{}
}

// checkFiles checks every field tagged `file:"read"` or `file:"secret"`: the
// file must exist and be readable, and a secret must not be readable by
// other users (group access is allowed, as for Debian's ssl-cert group).
// It returns the fingerprints of the files it read (Config.Files): field
// path → SHA-256 of the content, hashed as the check reads it, so a file is
// read once per load. A file that fails its check is reported and left out.
func (d *decoder) checkFiles(root reflect.Value) map[string]string {
	sums := map[string]string{}
	walk(root, "", func(v reflect.Value, path string) {
		for key, f := range structFields(v.Type()) {
			if f.file == "" {
				continue
			}
			fv := v.FieldByIndex(f.index)
			if fv.Kind() != reflect.String || fv.String() == "" {
				continue
			}
			p := join(path, key)
			sum, msg := checkFile(fv.String(), f.file == "secret")
			if msg != "" {
				d.report(p, msg)
				continue
			}
			sums[p] = sum
		}
		if fc, ok := v.Addr().Interface().(fileChecker); ok {
			fc.CheckFiles(func(field, msg string) { d.report(join(path, field), msg) })
		}
	})
	return sums
}

// checkFile checks one named file and returns the hex SHA-256 of its
// content, or why it is not usable.
func checkFile(name string, secret bool) (sum, msg string) {
	fi, err := os.Stat(name)
	switch {
	case err != nil && os.IsNotExist(err):
		return "", fmt.Sprintf("file %s does not exist", name)
	case err != nil:
		return "", fmt.Sprintf("cannot read %s: %v", name, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Sprintf("%s is not a regular file", name)
	case secret && fi.Size() == 0:
		return "", fmt.Sprintf("%s is empty: expected the secret in it", name)
	case secret && fi.Mode().Perm()&0o007 != 0:
		return "", fmt.Sprintf("%s holds a secret but is accessible to other users (mode %04o); run chmod o-rwx %s", name, fi.Mode().Perm(), name)
	}
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Sprintf("cannot read %s: %v", name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Sprintf("cannot read %s: %v", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), ""
}

// SameFiles reports whether a and b name the same files with the same
// content under the given sections (field paths such as "access" or
// "tunnels.ipsec"; none means the whole file). A part whose section is
// unchanged must still re-apply when this is false: a secret, certificate
// or PSK was rotated in place.
func SameFiles(a, b *Config, sections ...string) bool {
	pick := func(c *Config) map[string]string {
		if c == nil {
			return nil
		}
		if len(sections) == 0 {
			return c.Files
		}
		out := map[string]string{}
		for k, v := range c.Files {
			for _, s := range sections {
				if k == s || strings.HasPrefix(k, s+".") || strings.HasPrefix(k, s+"[") {
					out[k] = v
				}
			}
		}
		return out
	}
	return maps.Equal(pick(a), pick(b))
}
