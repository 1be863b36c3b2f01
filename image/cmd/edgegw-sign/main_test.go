package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

// TestSign makes a key pair, derives the public key again from the secret
// one, signs a file, and checks the signature as `edgegw update` does
// (minisign.Verify with the trusted comment).
func TestSign(t *testing.T) {
	dir := t.TempDir()
	key, pub, pub2 := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub"), filepath.Join(dir, "k2.pub")
	msg := filepath.Join(dir, "SHA256SUMS")
	os.WriteFile(msg, []byte(strings.Repeat("0", 64)+"  version\n"), 0o644)
	var stderr bytes.Buffer
	for _, args := range [][]string{
		{"keygen", "-key", key, "-pub", pub},
		{"pubkey", "-key", key, "-pub", pub2},
		{"sign", "-key", key, "-trusted", "edgegw-update version=1", msg},
	} {
		if err := run(args, &stderr); err != nil {
			t.Fatalf("%v: %v %s", args, err, stderr.String())
		}
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %v, want 0600", st.Mode().Perm())
	}
	a, _ := os.ReadFile(pub)
	b, _ := os.ReadFile(pub2)
	if !bytes.Equal(a, b) {
		t.Errorf("derived public key %q, generated %q", b, a)
	}
	p, err := minisign.PublicKeyFromFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := os.ReadFile(msg)
	sig, _ := os.ReadFile(msg + ".minisig")
	if !minisign.Verify(p, m, sig) {
		t.Fatalf("signature does not verify:\n%s", sig)
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil || s.TrustedComment != "edgegw-update version=1" || s.Algorithm != minisign.HashEdDSA {
		t.Errorf("signature %+v, %v", s, err)
	}
	if err := run([]string{"encrypted", key}, &stderr); err == nil {
		t.Errorf("a test key without a password reported encrypted")
	}
	for _, args := range [][]string{nil, {"sign", "-key", key, msg}, {"keygen", "-key", key}, {"bogus"}} {
		if err := run(args, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want usage", args, err)
		}
	}
}
