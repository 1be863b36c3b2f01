package config

import (
	"os"
	"path/filepath"
	"testing"
)

// A file the configuration names is part of "has the configuration
// changed": rotating a secret in place, with the YAML untouched, must make
// the next load differ under that section and only there.
func TestFilesFingerprinted(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "bot.secret")
	hec := filepath.Join(dir, "hec.token")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(secret, "first-secret-value\n")
	write(hec, "hec-token\n")
	yml := `tunnels:
  wireguard:
    address: 100.96.0.1/12
access:
  listen: 127.0.0.1:8443
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: ci
          action: service_auth
          include: [{service_token: ci-bot}]
  service_tokens:
    - name: ci-bot
      client_id: ci.access
      client_secret_file: ` + secret + `
logpush:
  - name: splunk
    dataset: access_requests
    destination: https://splunk.example:8088/services/collector/event
    token_file: ` + hec + `
`
	path := filepath.Join(dir, "edgegw.yaml")
	write(path, yml)
	load := func() *Config {
		t.Helper()
		c, err := Load(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := load()
	if got := a.Files["access.service_tokens[0].client_secret_file"]; len(got) != 64 {
		t.Fatalf("no fingerprint for the service token secret: %v", a.Files)
	}
	if !SameFiles(a, load()) {
		t.Fatal("two loads of unchanged files differ")
	}

	write(secret, "rotated-secret-value\n")
	b := load()
	if SameFiles(a, b) || SameFiles(a, b, "access") {
		t.Error("a rotated service-token secret is not a change of the access section")
	}
	if !SameFiles(a, b, "logpush", "tunnels.wireguard") {
		t.Error("rotating an access secret changed other sections' files")
	}
	if SameFiles(a, b, "access.service_tokens[0]") {
		t.Error("the token's own path does not see the change")
	}

	// SkipFiles (edgegw check --skip-files) reads no file at all.
	c, err := Load(path, Options{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Files) != 0 {
		t.Errorf("SkipFiles fingerprinted %v", c.Files)
	}
}
