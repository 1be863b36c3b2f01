package gateway

import (
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
)

// TestGeoSelectorsNeedADatabase: `edgegw check` (Prepare) refuses geo
// selectors in Access and enrollment policies without
// firewall.geoip.country, naming where they are and the missing file,
// and accepts them with it.
func TestGeoSelectorsNeedADatabase(t *testing.T) {
	const access = `
access:
  listen: 127.0.0.1:8443
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: office-country
          action: bypass
          include: [{geo: DE}]
`
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"access without geoip", access, `access.apps[0] ("wiki").policies: a geo selector needs the GeoIP country database, firewall.geoip.country`},
		{"access with an ASN database only", access + `
firewall:
  geoip:
    asn: /var/lib/GeoLite2-ASN.mmdb
`, "firewall.geoip.country"},
		{"access with a country database", access + `
firewall:
  geoip:
    country: /var/lib/GeoLite2-Country.mmdb
`, ""},
		{"no geo selector", strings.ReplaceAll(access, "{geo: DE}", "{everyone: true}"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("t.yaml", []byte(tc.yaml), config.Options{SkipFiles: true})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Prepare(cfg, PrepareOptions{SkipFiles: true})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Gateway DNS policies with a geo field.
	cfg, err := config.Parse("t.yaml", []byte(`
gateway:
  dns:
    listen: [127.0.0.1:53]
    upstreams: [192.0.2.53:53]
    policies:
      - id: no-kp-answers
        expression: dns.dst.geo.country == "KP"
        action: block
`), config.Options{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(cfg, PrepareOptions{SkipFiles: true}); err == nil || !strings.Contains(err.Error(), "gateway.dns.policies (dns.src.geo.country, dns.dst.geo.country): a geo selector needs") {
		t.Fatalf("gateway.dns: err = %v", err)
	}
	// Enrollment policies, checked the same way.
	cfg, err = config.Parse("t.yaml", []byte(`
tunnels:
  wireguard:
    interface: wg0
    listen_port: 51820
    address: 100.96.0.1/12
    enrollment:
      enabled: true
      policies:
        - name: staff-in-de
          action: allow
          include: [{email_domain: corp.example}]
          require: [{geo: DE}]
identity:
  providers:
    - name: corp
      issuer: https://idp.corp.example
      client_id: edgegw
access:
  listen: 127.0.0.1:8443
`), config.Options{SkipFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(cfg, PrepareOptions{SkipFiles: true}); err == nil || !strings.Contains(err.Error(), "tunnels.wireguard.enrollment.policies: a geo selector needs") {
		t.Fatalf("enrollment: err = %v", err)
	}
}
