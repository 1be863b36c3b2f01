package wgconf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

func TestParseKey(t *testing.T) {
	for _, s := range []string{"", "abc", "hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q", "hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q==", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if _, err := ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) accepted", s)
		}
	}
	k, err := ParseKey("hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=")
	if err != nil || k.String() != "hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=" {
		t.Fatalf("round trip: %v %v", k, err)
	}
	var u Key
	if err := u.UnmarshalText([]byte(k.String())); err != nil || u != k {
		t.Fatalf("UnmarshalText: %v", err)
	}
}

// RFC 7748 section 6.1's test vector.
func TestPublicKey(t *testing.T) {
	var priv, pub Key
	copy(priv[:], mustHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	copy(pub[:], mustHex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
	if got := priv.PublicKey(); got != pub {
		t.Errorf("PublicKey = %x, want %x", got, pub)
	}
}

func mustHex(s string) []byte {
	k, err := ParseHex(s)
	if err != nil {
		panic(err)
	}
	return k[:]
}

func TestLoadOrCreatePrivateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "wireguard", "wg0.key")
	k, err := LoadOrCreatePrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k[0]&7 != 0 || k[31]&128 != 0 || k[31]&64 == 0 {
		t.Errorf("key %x is not clamped", k)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", di.Mode())
	}
	b, _ := os.ReadFile(path)
	if string(b) != k.String()+"\n" {
		t.Errorf("file holds %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	k2, err := LoadOrCreatePrivateKey(path)
	if err != nil || k2 != k {
		t.Fatalf("second load: %v %v", k2, err)
	}
	t.Run("wg pubkey agrees", func(t *testing.T) {
		cmd := exec.Command(testkit.NeedTool(t, "wg", "wireguard-tools"), "pubkey")
		cmd.Stdin = strings.NewReader(string(b))
		out, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != k.PublicKey().String() {
			t.Errorf("wg pubkey says %q (%v), we say %s", out, err, k.PublicKey())
		}
	})

	os.Chmod(path, 0o640)
	if _, err := LoadOrCreatePrivateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	if _, err := LoadOrCreatePrivateKey(path); err == nil {
		t.Error("garbage key accepted")
	}
	// A key as `wg genkey > file` writes it, without the trailing newline too.
	os.WriteFile(path, []byte(testKeyA.String()), 0o600)
	if k, err := LoadOrCreatePrivateKey(path); err != nil || k != testKeyA {
		t.Errorf("load without newline: %v %v", k, err)
	}
}

var testKeyA = func() Key {
	k, err := ParseKey("hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=")
	if err != nil {
		panic(err)
	}
	return k
}()
