package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The repository's example is the contract for the configuration's shape.
func TestExampleAccepted(t *testing.T) {
	cfg, err := Load(exampleFile, Options{SkipFiles: true})
	if err != nil {
		t.Fatalf("the reference example must validate:\n%v", err)
	}
	if got := cfg.Tunnels.WireGuard.Peers[0].Name; got != "ops-laptop" {
		t.Errorf("peer name = %q", got)
	}
	if got := len(cfg.Routes); got != 3 {
		t.Errorf("routes = %d, want 3", got)
	}
	if cfg.Tunnels.GRE[0].HealthCheck.Enabled == nil || !*cfg.Tunnels.GRE[0].HealthCheck.Enabled {
		t.Error("GRE health check should be enabled")
	}
	if cfg.Logpush[0].SpoolLimit != 0 {
		t.Errorf("spool_limit = %d", cfg.Logpush[0].SpoolLimit)
	}
}

// Without --skip-files the example's files must exist: each missing one is
// reported at its own line.
func TestExampleFilesChecked(t *testing.T) {
	_, err := Load(exampleFile, Options{})
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want *Errors, got %v", err)
	}
	for _, want := range []string{"identity.providers[0].client_secret_file", "tunnels.ipsec[0].psk_file", "logpush[0].token_file", "gateway.dns.lists.malware.file"} {
		found := false
		for _, e := range errs.List {
			found = found || (e.Path == want && e.Line > 0 && strings.Contains(e.Msg, "does not exist"))
		}
		if !found {
			t.Errorf("no missing-file error for %s in:\n%v", want, err)
		}
	}
}

func TestDefault(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	wg := cfg.Tunnels.WireGuard
	if wg == nil || wg.ListenPort != 51820 || wg.Interface != "wg0" || wg.Address.String() != "100.96.0.1/12" {
		t.Errorf("default wireguard = %+v", wg)
	}
	if cfg.Admin.Listen != "127.0.0.1:9100" || cfg.Admin.Socket != "/run/edgegw/admin.sock" {
		t.Errorf("admin listen, socket = %q, %q", cfg.Admin.Listen, cfg.Admin.Socket)
	}
	// The appliance's start script (image/rootfs/usr/libexec/edgegw/start)
	// moves the fallback's listener by rewriting exactly this line.
	if !strings.Contains(string(DefaultYAML()), "\n  listen: 127.0.0.1:9100\n") {
		t.Error("the default's admin listen line is not \"  listen: 127.0.0.1:9100\" alone")
	}
	if cfg.Access != nil || cfg.Firewall != nil {
		t.Error("the default configures only WireGuard and the admin listener")
	}
}

func TestSecretPermissions(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "psk")
	if err := os.WriteFile(psk, []byte("a key of twenty characters\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `
tunnels:
  ipsec:
    - name: b1
      local: 203.0.113.10
      local_id: a.example
      remote_id: b.example
      psk_file: ` + psk + `
      address: 10.200.2.0/31
`
	_, err := Parse("t.yaml", []byte(src), Options{})
	if err == nil || !strings.Contains(err.Error(), "t.yaml:8:17: tunnels.ipsec[0].psk_file: "+psk+" holds a secret but is accessible to other users (mode 0644)") {
		t.Fatalf("got %v", err)
	}
	os.Chmod(psk, 0o600)
	if _, err := Parse("t.yaml", []byte(src), Options{}); err != nil {
		t.Fatalf("0600 secret rejected: %v", err)
	}
	// A PSK shorter than 20 characters is refused at its field, with why.
	os.WriteFile(psk, []byte("short\n"), 0o600)
	_, err = Parse("t.yaml", []byte(src), Options{})
	if err == nil || !strings.Contains(err.Error(), "t.yaml:8:17: tunnels.ipsec[0].psk_file: tunnel \"b1\": the pre-shared key in "+psk+
		" is 5 characters long, the minimum is 20: anyone who captures one IKEv2 exchange can guess a short key offline") {
		t.Fatalf("short PSK: got %v", err)
	}
	os.Truncate(psk, 0)
	_, err = Parse("t.yaml", []byte(src), Options{})
	if err == nil || !strings.Contains(err.Error(), "t.yaml:8:17: tunnels.ipsec[0].psk_file: "+psk+" is empty: expected the secret in it") {
		t.Fatalf("empty secret: got %v", err)
	}
}

// Golden error tests: testdata/errors/NAME.yaml holds a bad file and
// NAME.golden exactly what `edgegw check` prints for it.
func TestErrorsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(files) == 0 {
		t.Fatal("no golden cases")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(name+".yaml", data, Options{SkipFiles: true})
			if err == nil {
				t.Fatal("accepted a bad file")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, _ := os.ReadFile(golden)
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	e := Error{File: "f.yaml", Pos: Pos{Line: 3, Col: 5}, Path: "a.b", Msg: "bad"}
	if got := e.Error(); got != "f.yaml:3:5: a.b: bad" {
		t.Errorf("got %q", got)
	}
}

func FuzzParse(f *testing.F) {
	ex, _ := os.ReadFile(exampleFile)
	f.Add(string(ex))
	f.Add(string(defaultYAML))
	f.Add("tunnels: {wireguard: {peers: [{name: a, allowed_ips: [1.2.3.4/32]}]}}")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse("fuzz.yaml", []byte(s), Options{SkipFiles: true})
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		var errs *Errors
		if err != nil && errors.As(err, &errs) && len(errs.List) == 0 {
			t.Fatal("empty error list")
		}
	})
}

// exampleFile is the repository's example configuration, the one
// `edgegw config example` prints.
const exampleFile = "edgegw.example.yaml"

// The embedded example is the file in the repository, byte for byte.
func TestExampleEmbedded(t *testing.T) {
	b, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(ExampleYAML()) {
		t.Error("ExampleYAML differs from edgegw.example.yaml")
	}
	if _, err := Parse("example", ExampleYAML(), Options{SkipFiles: true}); err != nil {
		t.Errorf("the embedded example does not validate:\n%v", err)
	}
}

// TestHASection loads an ha: section: the VRID default applies and a bad
// priority is reported at its path.
func TestHASection(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		f := filepath.Join(dir, "edgegw.yaml")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	cfg, err := Load(write(`
ha:
  priority: 200
  peer: 10.255.0.2
  interface: sync0
  virtual_addresses:
    wan: [203.0.113.10/24]
`), Options{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HA == nil || cfg.HA.VRID != 51 || cfg.HA.Priority != 200 || cfg.HA.Preempt {
		t.Fatalf("ha section %+v", cfg.HA)
	}
	_, err = Load(write(`
ha:
  priority: 300
  peer: 10.255.0.2
  interface: sync0
  virtual_addresses:
    wan: [203.0.113.10/24]
`), Options{SkipFiles: true})
	if err == nil || !strings.Contains(err.Error(), "ha.priority") {
		t.Fatalf("priority 300: %v", err)
	}
	for _, tc := range []struct{ body, want string }{
		{`
ha:
  priority: 100
  peer: 10.255.0.2
  interface: sync0
  virtual_addresses:
    lan: [10.0.0.1/24]
`, "ha.virtual_addresses.lan"},
		{`
interfaces:
  wan: eth0
ha:
  priority: 100
  peer: 10.255.0.2
  interface: eth0
  virtual_addresses:
    wan: [203.0.113.10/24]
`, "ha.interface"},
	} {
		_, err = Load(write(tc.body), Options{SkipFiles: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error at %s, got %v", tc.want, err)
		}
	}
}
