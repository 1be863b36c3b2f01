package admin

import (
	"strings"
	"testing"
)

// TestValidateTLS: admin.tls needs a certificate and its key, except with
// acme and neither, where a self-signed certificate is the fallback.
func TestValidateTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  TLS
		want string // "" for valid
	}{
		{"files", TLS{CertFile: "/c", KeyFile: "/k"}, ""},
		{"files and acme", TLS{CertFile: "/c", KeyFile: "/k", ACME: true}, ""},
		{"acme alone: self-signed fallback", TLS{ACME: true}, ""},
		{"nothing", TLS{}, "tls.cert_file: missing"},
		{"no key", TLS{CertFile: "/c"}, "tls.key_file: missing"},
		{"a key without its certificate, with acme", TLS{KeyFile: "/k", ACME: true}, "tls.key_file: set without cert_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tls := tc.tls
			c := Config{Listen: "10.0.0.1:9100", TLS: &tls}
			c.SetDefaults()
			var got []string
			c.Validate(func(f, m string) { got = append(got, f+": "+m) })
			all := strings.Join(got, "\n")
			if tc.want == "" && len(got) > 0 || tc.want != "" && !strings.Contains(all, tc.want) {
				t.Errorf("got %q, want %q", all, tc.want)
			}
		})
	}
}
