package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/access/identity"
)

// TestCmdAccessKeys: `edgegw access keys` writes both files 0600 in a
// form access accepts, refuses to replace them without --force, and
// replaces them with it.
func TestCmdAccessKeys(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			var out bytes.Buffer
			if code := run([]string{"access", "keys", "--out", dir, "--algorithm", alg}, &out, io.Discard); code != 0 {
				t.Fatalf("exit %d", code)
			}
			cpath, spath := filepath.Join(dir, cookieKeyName), filepath.Join(dir, signingKeyName)
			for _, p := range []string{cpath, spath} {
				st, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Fatalf("%s mode %v, want 0600", p, st.Mode().Perm())
				}
			}
			if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
				t.Fatalf("dir mode %v", st.Mode().Perm())
			}
			for _, want := range []string{"cookie_key_file: " + cpath, "signing_key_file: " + spath, "algorithm: " + alg, "signing key id "} {
				if !strings.Contains(out.String(), want) {
					t.Fatalf("output lacks %q:\n%s", want, out.String())
				}
			}
			cfg := access.Config{Listen: "127.0.0.1:0", CookieKeyFile: cpath, SigningKeyFile: spath, Signing: access.SigningConfig{Algorithm: alg}}
			if _, err := access.Compile(cfg, identity.Config{}); err != nil {
				t.Fatalf("access refuses the files it wrote: %v", err)
			}

			before, _ := os.ReadFile(spath)
			var stderr bytes.Buffer
			if code := run([]string{"access", "keys", "--out", dir}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "exists") {
				t.Fatalf("without --force: exit %d, %s", code, stderr.String())
			}
			if after, _ := os.ReadFile(spath); !bytes.Equal(before, after) {
				t.Fatal("refused run changed the key")
			}
			if code := run([]string{"access", "keys", "--out", dir, "--force", "--algorithm", alg}, io.Discard, io.Discard); code != 0 {
				t.Fatalf("--force: exit %d", code)
			}
			if after, _ := os.ReadFile(spath); bytes.Equal(before, after) {
				t.Fatal("--force kept the old key")
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".edgegw-key-*")); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
	for _, args := range [][]string{{"access"}, {"access", "keys"}, {"access", "keys", "--out", t.TempDir(), "--algorithm", "HS256"}} {
		if code := run(args, io.Discard, io.Discard); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
