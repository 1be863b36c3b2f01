package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("admin:\n  listen: nowhere\n  tsl: yes\n"), 0o600)
	// A LAN listener without TLS: refused, at its line.
	open := filepath.Join(t.TempDir(), "open.yaml")
	os.WriteFile(open, []byte("admin:\n  listen: 0.0.0.0:9100\n"), 0o600)
	tests := []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{args: nil, code: 2, stderr: "Usage:"},
		{args: []string{"--help"}, code: 0, stdout: "edgegw check --config FILE"},
		{args: []string{"version"}, code: 0, stdout: "edgegw "},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"check"}, code: 2, stderr: "Usage: edgegw check"},
		{args: []string{"check", "--help"}, code: 0, stderr: "-skip-files"},
		{args: []string{"check", "--bogus"}, code: 2, stderr: "flag provided but not defined"},
		{args: []string{"check", "--skip-files", "--config", "../../gateway/config/edgegw.example.yaml"}, code: 0, stdout: "edgegw.example.yaml: ok"},
		{args: []string{"check", "--config", bad}, code: 1, stderr: bad + ":2:11: admin.listen: \"nowhere\": expected HOST:PORT"},
		{args: []string{"check", "--config", bad}, code: 1, stderr: bad + ":3:3: admin.tsl: unknown key (did you mean \"tls\"?)"},
		{args: []string{"check", "--skip-files", "--config", open}, code: 1, stderr: open + ":2:11: admin.listen: \"0.0.0.0:9100\" is not a loopback address: other hosts could reach the admin API, so it needs admin.tls"},
		{args: []string{"check", "--config", "/nonexistent.yaml"}, code: 1, stderr: "no such file"},
		{args: []string{"config", "default"}, code: 0, stdout: "listen_port: 51820"},
		{args: []string{"config", "example"}, code: 0, stdout: "name: branch-fra"},
		{args: []string{"config", "bogus"}, code: 2, stderr: `"config example"`},
		{args: []string{"peer", "config"}, code: 2, stderr: "Usage: edgegw peer config"},
		{args: []string{"run", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, out.String())
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, errb.String())
			}
		})
	}
}
