// Command edgegw-sign signs edgegw update bundles for image/build.sh: a
// minisign (ed25519) signature of a bundle's SHA256SUMS, which
// `edgegw update` verifies with the public key the image carries. It reads
// and writes minisign's own key and signature formats, so a key made with
// `minisign -G` works here and `minisign -Vm SHA256SUMS -p update.pub`
// checks what this signs.
//
//	edgegw-sign keygen -key FILE -pub FILE   a new key pair with no password (test keys)
//	edgegw-sign pubkey -key FILE -pub FILE   the public key of a secret key
//	edgegw-sign sign -key FILE -trusted COMMENT FILE
//	                                         FILE.minisig, with a signed comment
//	edgegw-sign encrypted FILE               exit 0 when the key has a password
//
// A password-protected secret key (minisign -G's default) takes its
// password from $EDGEGW_SIGNING_KEY_PASSWORD; build.sh prompts for it.
package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"aead.dev/minisign"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "edgegw-sign: %v\n", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: edgegw-sign keygen|pubkey -key FILE -pub FILE | sign -key FILE -trusted COMMENT FILE | encrypted FILE")

func run(args []string, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "minisign secret key `file`")
	pubFile := fs.String("pub", "", "minisign public key `file`")
	trusted := fs.String("trusted", "", "the signature's trusted (signed) comment")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	switch {
	case args[0] == "keygen" && *keyFile != "" && *pubFile != "" && fs.NArg() == 0:
		return keygen(*keyFile, *pubFile)
	case args[0] == "pubkey" && *keyFile != "" && *pubFile != "" && fs.NArg() == 0:
		priv, err := readKey(*keyFile)
		if err != nil {
			return err
		}
		return writePub(*pubFile, priv.Public().(minisign.PublicKey))
	case args[0] == "sign" && *keyFile != "" && *trusted != "" && fs.NArg() == 1:
		priv, err := readKey(*keyFile)
		if err != nil {
			return err
		}
		return sign(priv, fs.Arg(0), *trusted)
	case args[0] == "encrypted" && fs.NArg() == 1:
		b, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		if !minisign.IsEncrypted(b) {
			return errors.New(fs.Arg(0) + ": no password")
		}
		return nil
	}
	return errUsage
}

// keygen writes a new key pair, the secret key without a password: for
// throwaway test keys, never for a release key (image/README.md).
func keygen(keyFile, pubFile string) error {
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	text, err := priv.MarshalText()
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, append(text, '\n'), 0o600); err != nil {
		return err
	}
	return writePub(pubFile, pub)
}

func writePub(path string, pub minisign.PublicKey) error {
	text, err := pub.MarshalText()
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(text, '\n'), 0o644)
}

// readKey reads a minisign secret key, decrypting it with
// $EDGEGW_SIGNING_KEY_PASSWORD when it has a password.
func readKey(path string) (minisign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("signing key: %w", err)
	}
	var priv minisign.PrivateKey
	if minisign.IsEncrypted(b) {
		pw, ok := os.LookupEnv("EDGEGW_SIGNING_KEY_PASSWORD")
		if !ok {
			return priv, fmt.Errorf("signing key %s has a password: set EDGEGW_SIGNING_KEY_PASSWORD", path)
		}
		if priv, err = minisign.DecryptKey(pw, b); err != nil {
			return priv, fmt.Errorf("signing key %s: wrong password? %w", path, err)
		}
		return priv, nil
	}
	if err := priv.UnmarshalText(b); err != nil {
		return priv, fmt.Errorf("signing key %s: %w", path, err)
	}
	return priv, nil
}

// sign writes FILE.minisig: a prehashed signature (minisign's default
// since 0.10) with the trusted comment.
func sign(priv minisign.PrivateKey, path, trusted string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := minisign.NewReader(f)
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	sig := r.SignWithComments(priv, trusted, "signature from edgegw-sign secret key "+fmt.Sprintf("%016X", priv.ID()))
	return os.WriteFile(path+".minisig", sig, 0o644)
}
