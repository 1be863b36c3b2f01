package gateway_test

import (
	"go/format"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Repository policy, checked on every test run: gofmt, and a doc comment on
// every package.
func TestRepoPolicy(t *testing.T) {
	root := ".."
	docs := map[string]bool{} // package dir → has a "// Package" comment
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if out, err := format.Source(src); err != nil || string(out) != string(src) {
			t.Errorf("%s is not gofmt-ed", path)
		}
		if strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		has := f.Doc != nil && (strings.HasPrefix(f.Doc.Text(), "Package ") || strings.HasPrefix(f.Doc.Text(), "Command "))
		docs[dir] = docs[dir] || has
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, ok := range docs {
		if !ok {
			t.Errorf("package %s has no doc comment (// Package … or // Command …)", dir)
		}
	}
}

// TestSelfContained: nothing in the repository refers to a file outside it.
// A fresh clone, with nothing beside it, must build, test and read
// complete; a path into a sibling directory works only on the machine
// where it was written.
func TestSelfContained(t *testing.T) {
	// Written in pieces so that this file does not match itself.
	outside := []string{"../" + "shared/", "/work/" + "shared", "/work/" + "main"}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil // a worktree's pointer to its repository
		}
		if d.IsDir() {
			switch d.Name() {
			case "bin", "out", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.IndexByte(string(b[:min(len(b), 8000)]), 0) >= 0 {
			return nil // binary
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, o := range outside {
				if strings.Contains(line, o) {
					t.Errorf("%s:%d refers to %q, outside the repository", path, i+1, o)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
