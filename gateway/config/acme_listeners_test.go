package config

import (
	"strings"
	"testing"
)

// TestACMEListenersCheck: gateway.dns.dot.acme and admin.tls.acme need
// access.acme, and the admin listener a name (admin.hosts) among its
// domains; a configuration that has both loads.
func TestACMEListenersCheck(t *testing.T) {
	const acme = `access:
  listen: 0.0.0.0:443
  acme:
    domains: [wiki.corp.example, gw.corp.example]
    challenges: [http-01]
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: all
          action: bypass
          include: [{everyone: true}]
`
	const dot = `gateway:
  dns:
    listen: [10.0.0.1:53]
    upstreams: [9.9.9.9:53]
    dot:
      listen: [10.0.0.1:853]
      cert_file: /etc/edgegw/dot.crt
      key_file: /etc/edgegw/dot.key
      acme: true
`
	admin := func(hosts string) string {
		return `admin:
  listen: 10.0.0.1:9443
  tls:
    cert_file: /etc/edgegw/admin.crt
    key_file: /etc/edgegw/admin.key
    acme: true
  hosts: ` + hosts + "\n"
	}
	for _, tc := range []struct {
		name, yaml, want string // want "": loads
	}{
		{"both, with access.acme", acme + dot + admin("[GW.corp.example.]"), ""},
		{"dot without access.acme", dot, `gateway.dns.dot.acme: the certificate comes from access.acme, which is not configured`},
		{"admin without access.acme", admin("[gw.corp.example]"), `admin.tls.acme: the certificate comes from access.acme, which is not configured`},
		{"admin name not among the domains", acme + admin("[console.corp.example]"),
			`admin.tls.acme: none of admin.hosts ["console.corp.example"] is among access.acme.domains ["wiki.corp.example" "gw.corp.example"]`},
		{"admin without hosts", acme + admin("[]"), `admin.tls.acme: none of admin.hosts`},
	} {
		_, err := Parse("acme.yaml", []byte(tc.yaml), Options{SkipFiles: true})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: must load: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}
