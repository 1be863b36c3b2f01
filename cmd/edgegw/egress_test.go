package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/admin"
)

// TestPrintEgress checks the tables of `edgegw egress`: each address with
// where it is, its policies, identities and counters; each identity with
// its egress or "masqueraded", and its live connections.
func TestPrintEgress(t *testing.T) {
	v := admin.EgressView{
		Addresses: []admin.EgressAddress{
			{Name: "fra", Address: "198.51.100.10", Interface: "eth0", Country: "DE", Region: "DE-HE", City: "Frankfurt",
				Policies: []string{"eu-staff"}, Identities: []string{"alice@corp.example"}, ConnectionsTotal: 7,
				EgressFlows: admin.EgressFlows{ActiveConnections: 2, BytesOut: 1200, BytesIn: 34000}},
			{Name: "nyc", Address: "198.18.0.11", Interface: "eth2", Country: "US", Policies: []string{}, Identities: []string{}},
		},
		Identities: []admin.EgressIdentity{
			{Email: "alice@corp.example", Source: "100.96.0.10/32", Egress: "fra", EgressAddress: "198.51.100.10", Country: "DE",
				Policy: "eu-staff", Active: []admin.EgressActive{{EgressAddress: "198.51.100.10", EgressFlows: admin.EgressFlows{ActiveConnections: 2}}}},
			{Email: "carol@corp.example", Source: "100.96.0.12/32"},
		},
		GeofeedPath: "/geofeed.csv",
	}
	var b bytes.Buffer
	if err := printEgress(&b, v); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, re := range []string{
		`(?m)^fra\s+198\.51\.100\.10\s+eth0\s+DE DE-HE Frankfurt\s+eu-staff\s+alice@corp\.example\s+7\s+2\s+1200\s+34000$`,
		`(?m)^nyc\s+198\.18\.0\.11\s+eth2\s+US\s+-\s+-\s+0\s+0\s+0\s+0$`,
		`(?m)^alice@corp\.example\s+100\.96\.0\.10/32\s+fra\s+198\.51\.100\.10\s+DE\s+eu-staff\s+2 via 198\.51\.100\.10$`,
		`(?m)^carol@corp\.example\s+100\.96\.0\.12/32\s+\(wan\)\s+masqueraded\s+-\s+-\s+-$`,
		`Geofeed \(RFC 8805\): /geofeed\.csv`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	b.Reset()
	if err := printEgress(&b, admin.EgressView{}); err != nil || !strings.Contains(b.String(), "No egress addresses") {
		t.Errorf("no addresses: %v %q", err, b.String())
	}
	var stderr bytes.Buffer
	if err := cmdEgress([]string{"extra"}, &b, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("edgegw egress extra: %v, want a usage error", err)
	}
}
