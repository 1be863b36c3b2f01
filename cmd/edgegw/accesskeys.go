package main

// `edgegw access keys`: the key files an HA pair's nodes share so that a
// session cookie and an upstream's cached JWKS stay valid on failover.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/edgegw/edgegw/access"
)

const accessKeysSynopsis = "edgegw access keys --out DIR [--algorithm ES256|RS256] [--force]"

// Names of the files `edgegw access keys` writes in --out.
const (
	cookieKeyName  = "access-cookie.key"
	signingKeyName = "access-signing.pem"
)

func cmdAccess(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "keys" {
		fmt.Fprintf(stderr, "edgegw access: expected %q\n", accessKeysSynopsis)
		return errUsage
	}
	return cmdAccessKeys(args[1:], stdout, stderr)
}

// cmdAccessKeys writes a cookie key (base64 of 32 random bytes) and a
// signing key (PKCS#8 PEM) into --out, both 0600, and says how to use
// them. It refuses to replace existing files without --force: replacing
// a pair's keys by mistake ends every session.
func cmdAccessKeys(args []string, stdout, stderr io.Writer) error {
	fl := newFlags("access keys", accessKeysSynopsis, stderr)
	out := fl.String("out", "", "`directory` to write "+cookieKeyName+" and "+signingKeyName+" into (made 0700 when missing)")
	alg := fl.String("algorithm", "ES256", "the signing key's `algorithm`: ES256 (EC P-256) or RS256 (RSA 2048); must match access.signing.algorithm")
	force := fl.Bool("force", false, "replace files that exist (every session they sealed or signed ends after the grace)")
	pos, err := parse(fl, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *out == "" {
		fmt.Fprintf(stderr, "edgegw access keys: expected %q\n", accessKeysSynopsis)
		return errUsage
	}
	if *alg != "ES256" && *alg != "RS256" {
		fmt.Fprintf(stderr, "edgegw access keys: --algorithm %q is not ES256 or RS256\n", *alg)
		return errUsage
	}
	cookie, signing, kid, err := access.NewKeyFiles(*alg)
	if err != nil {
		return fmt.Errorf("make keys: %w", err)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	cpath, spath := filepath.Join(*out, cookieKeyName), filepath.Join(*out, signingKeyName)
	if !*force {
		for _, p := range []string{cpath, spath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s exists: replacing it ends the sessions it protects; give --force to do it anyway", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	for p, b := range map[string][]byte{cpath: cookie, spath: signing} {
		if err := writePrivate(p, b); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, `wrote %s and %s (0600); signing key id %s

Copy both files to the same place on the other node (keep them 0600, root's), and on both:

access:
  cookie_key_file: %s
  signing_key_file: %s
  signing:
    algorithm: %s
`, cpath, spath, kid, cpath, spath, *alg)
	return nil
}

// writePrivate writes b to path 0600 through a temporary file beside it
// and a rename, so a reader never sees half a key.
func writePrivate(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".edgegw-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename: nothing left to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
