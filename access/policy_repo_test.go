package access

import (
	"context"
	"fmt"
	"go/format"
	"go/parser"
	"go/token"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestRepoPolicy: every file of the access tree is gofmt'ed and under 600
// lines, and every package has a doc comment.
func TestRepoPolicy(t *testing.T) {
	docs := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if out, err := format.Source(src); err != nil || string(out) != string(src) {
			t.Errorf("%s is not gofmt'ed", path)
		}
		if n := strings.Count(string(src), "\n"); n > 600 {
			t.Errorf("%s has %d lines; split it", path, n)
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		if _, ok := docs[dir]; !ok {
			docs[dir] = false
		}
		if f.Doc != nil && !strings.HasSuffix(path, "_test.go") {
			docs[dir] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, ok := range docs {
		if !ok {
			t.Errorf("package in %s has no doc comment", dir)
		}
	}
}

// TestRunStopsEverything: after Run returns, the goroutines it started are
// gone, including discovery retrying an unreachable issuer.
func TestRunStopsEverything(t *testing.T) {
	dir := t.TempDir()
	up := newUpstream(t)
	f := &fakeIdP{issuer: "http://127.0.0.1:1", clientID: "x", secret: "y"}
	before := runtime.NumGoroutine()
	srv, err := New(defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	for srv.Addr() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if srv.Ready() == nil {
		t.Fatal("ready after stop")
	}
	if err := srv.Run(t.Context()); err == nil {
		t.Fatal("second Run accepted")
	}
	testkit.Eventually(t, 5*time.Second, "goroutines stop", func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func FuzzSafeReturn(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil", "/\\evil", "https://evil", "/%2F%2Fevil", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := safeReturn(in)
		if out != "/" && out != in {
			t.Fatalf("rewrote %q to %q", in, out)
		}
		u, err := url.Parse(out)
		if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(out, "/") || strings.HasPrefix(out, "//") || strings.Contains(out, "\\") {
			t.Fatalf("unsafe return %q", out)
		}
		// Browsers also drop tabs and newlines before resolving.
		cleaned := strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(out)
		if strings.HasPrefix(cleaned, "//") {
			t.Fatalf("unsafe after browser cleanup %q", out)
		}
	})
}

func FuzzOpenSession(f *testing.F) {
	srv, err := New(Config{Listen: "127.0.0.1:0", Apps: []App{{Name: "a", Domain: "a.test", Upstream: "http://127.0.0.1:9",
		Policies: []policy.Policy{{Name: "p", Action: policy.Bypass, Include: []policy.Selector{{Everyone: yes()}}}}}}}, identity.Config{}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("")
	f.Add("a.b.c.d.e")
	f.Add("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..AAAA.AAAA.AAAA")
	app := srv.snap.Load().apps["a.test"]
	f.Fuzz(func(t *testing.T, v string) {
		if _, err := srv.openSession(v, app, time.Now()); err == nil {
			t.Fatalf("accepted %q", v)
		}
	})
}
