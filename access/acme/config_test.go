package acme

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}
	c.SetDefaults([]string{"wiki.corp.example", "docs.corp.example"})
	if c.Directory != DefaultDirectory || c.HTTPListen != DefaultHTTPListen ||
		!slices.Equal(c.Domains, []string{"wiki.corp.example", "docs.corp.example"}) ||
		!slices.Equal(c.Challenges, []string{HTTP01, TLSALPN01}) {
		t.Fatalf("defaults: %+v", c)
	}
	c = Config{Domains: []string{"Wiki.Corp.Example."}}
	c.SetDefaults([]string{"other.example"})
	if !slices.Equal(c.Domains, []string{"wiki.corp.example"}) {
		t.Fatalf("given domains are normalised and kept: %v", c.Domains)
	}
}

func TestConfigValidate(t *testing.T) {
	rfc := RFC2136{Server: "192.0.2.53", Zone: "Corp.Example.", TSIGKeyName: "edgegw-acme", TSIGSecretFile: "/etc/edgegw/tsig.secret"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // "field: part of the message"; none: valid
	}{
		{"defaults", Config{}, nil},
		{"private CA", Config{Directory: "https://ca.corp.example:9000/acme/acme/directory", Email: "ops@corp.example", Challenges: []string{TLSALPN01}}, nil},
		{"plain http directory", Config{Directory: "http://ca.example/dir"}, []string{"directory: \"http://ca.example/dir\" is not an https://"}},
		{"bad email", Config{Email: "ops"}, []string{"email: \"ops\" is not an email address"}},
		{"no domains", Config{Domains: []string{}}, nil}, // the apps' domains
		{"wildcard", Config{Domains: []string{"*.corp.example"}}, []string{"domains[0]: \"*.corp.example\" is not a host name", "wildcards need DNS-01"}},
		{"single label", Config{Domains: []string{"intranet"}}, []string{"domains[0]: \"intranet\" is not a host name"}},
		{"twice", Config{Domains: []string{"a.example", "a.example"}}, []string{"domains[1]: \"a.example\" is listed twice"}},
		{"unknown challenge", Config{Challenges: []string{"dns-02"}}, []string{"challenges[0]: \"dns-02\" is not one of http-01, tls-alpn-01, dns-01"}},
		{"dns-01", Config{Challenges: []string{DNS01}, Domains: []string{"wiki.corp.example", "*.corp.example", "corp.example"}, RFC2136: &rfc}, nil},
		{"dns-01 without rfc2136", Config{Challenges: []string{DNS01}}, []string{"rfc2136: missing: dns-01 needs the zone"}},
		{"dns-01 with others", Config{Challenges: []string{DNS01, HTTP01}, RFC2136: &rfc}, []string{"challenges: dns-01 is answered alone"}},
		{"rfc2136 unused", Config{RFC2136: &rfc}, []string{"rfc2136: set, but dns-01 is not among challenges"}},
		{"dns-01 outside the zone", Config{Challenges: []string{DNS01}, Domains: []string{"wiki.other.example"}, RFC2136: &rfc}, []string{"domains[0]: \"wiki.other.example\" is outside rfc2136.zone \"corp.example\""}},
		{"dns-01 for an address", Config{Challenges: []string{DNS01}, Domains: []string{"192.0.2.1"}, RFC2136: &rfc}, []string{"domains[0]: \"192.0.2.1\" is an address"}},
		{"rfc2136 fields", Config{Challenges: []string{DNS01}, RFC2136: &RFC2136{Server: "ns1.corp.example:", Zone: "-bad", TSIGKeyName: "", TSIGAlgorithm: "hmac-md5"}}, []string{
			"rfc2136.server: \"ns1.corp.example:\" is not", "rfc2136.zone: \"-bad\" is not a zone name", "rfc2136.tsig_key_name: \"\" is not a key name",
			"rfc2136.tsig_algorithm: \"hmac-md5\" is not one of", "rfc2136.tsig_secret_file: missing"}},
		{"bad http_listen", Config{HTTPListen: "80"}, []string{"http_listen: \"80\" is not host:port"}},
		{"an address", Config{Domains: []string{"192.0.2.1", "2001:db8::1"}}, nil},
		{"http_listen unused", Config{HTTPListen: "80", Challenges: []string{TLSALPN01}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg = *tc.cfg.Clone() // rfc is shared; SetDefaults writes
			tc.cfg.SetDefaults([]string{"wiki.corp.example"})
			var got []string
			tc.cfg.Validate(func(f, m string) { got = append(got, f+": "+m) })
			if len(tc.want) == 0 {
				if len(got) > 0 {
					t.Fatalf("unexpected problems: %q", got)
				}
				return
			}
			all := strings.Join(got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("want %q among %q", w, got)
				}
			}
		})
	}
	c := Config{}
	c.SetDefaults(nil)
	var got []string
	c.Validate(func(f, m string) { got = append(got, f+": "+m) })
	if len(got) != 1 || !strings.HasPrefix(got[0], "domains: missing") {
		t.Fatalf("no domains and no apps: %q", got)
	}
}

func TestCompileReadsTheCABundle(t *testing.T) {
	dir := t.TempDir()
	c := Config{CAFile: filepath.Join(dir, "missing.pem")}
	c.SetDefaults([]string{"wiki.corp.example"})
	if _, err := Compile(c); err == nil || !strings.Contains(err.Error(), "access.acme.ca_file") || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("a missing ca_file: %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.CAFile = junk
	if _, err := Compile(c); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Fatalf("a ca_file without certificates: %v", err)
	}
	c.CAFile = ""
	p, err := Compile(c)
	if err != nil || p.roots != nil || !slices.Equal(p.NextProtos(), []string{"acme-tls/1"}) {
		t.Fatalf("no ca_file: %v, %+v", err, p)
	}
}

func TestRFC2136DefaultsAndCompile(t *testing.T) {
	dir := t.TempDir()
	c := Config{Challenges: []string{DNS01}, Domains: []string{"wiki.corp.example"},
		RFC2136: &RFC2136{Server: "192.0.2.53", Zone: "corp.example.", TSIGKeyName: "edgegw-acme", TSIGSecretFile: filepath.Join(dir, "missing")}}
	c.SetDefaults(nil)
	if r := c.RFC2136; r.Server != "192.0.2.53:53" || r.Zone != "corp.example" || r.TSIGAlgorithm != DefaultTSIG {
		t.Fatalf("defaults: %+v", r)
	}
	if _, err := Compile(c); err == nil || !strings.Contains(err.Error(), "access.acme.rfc2136.tsig_secret_file") {
		t.Fatalf("a missing secret file: %v", err)
	}
	for _, tc := range []struct{ content, want string }{
		{"not base64!\n", "not base64"},
		{"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n", ""},
	} {
		f := filepath.Join(dir, "secret")
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		c.RFC2136.TSIGSecretFile = f
		p, err := Compile(c)
		switch {
		case tc.want == "" && (err != nil || p.dns == nil || p.dns.Secret != "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" || p.NextProtos() != nil):
			t.Fatalf("a good secret: %v %+v", err, p)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), f)):
			t.Fatalf("%q: err = %v, want %q naming the file", tc.content, err, tc.want)
		}
	}
}
