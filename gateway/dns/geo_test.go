package dns

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// countryMap is a CountryLookup over exact addresses.
type countryMap map[netip.Addr]string

func (m countryMap) Country(a netip.Addr) string { return m[a] }

// TestRecordCountries: with a country lookup the query log has the
// client's country (SrcIPCountryCode) and one country per resolved
// address (ResolvedIPCountryCodes, parallel to ResolvedIPs); without one
// both are empty.
func TestRecordCountries(t *testing.T) {
	up := newTestUpstream(t)
	for _, tc := range []struct {
		name      string
		countries CountryLookup
		src       string
		resolved  []string
	}{
		{"with", countryMap{netip.MustParseAddr("127.0.0.1"): "NL", netip.MustParseAddr("198.51.100.7"): "KP"}, "NL", []string{"KP"}},
		{"unknown resolved address", countryMap{netip.MustParseAddr("127.0.0.1"): "NL"}, "NL", []string{""}},
		{"without", nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			_, addr := startServer(t, Config{Upstreams: []string{up.addr}}, Options{Sink: sink, Countries: tc.countries})
			ask(t, addr, "udp", "chain.test", mdns.TypeA)
			eventually(t, 5*time.Second, "record", func() bool { return sink.len() == 1 })
			rec := sink.last()
			if v, _ := rec.Get("SrcIPCountryCode"); v.Str() != tc.src {
				t.Errorf("SrcIPCountryCode = %q, want %q", v.Str(), tc.src)
			}
			var m struct{ ResolvedIPs, ResolvedIPCountryCodes []string }
			line := logpush.AppendNDJSON(nil, rec, logpush.TimestampRFC3339)
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if !slices.Equal(m.ResolvedIPCountryCodes, tc.resolved) && len(m.ResolvedIPCountryCodes)+len(tc.resolved) > 0 {
				t.Errorf("ResolvedIPCountryCodes = %q for ResolvedIPs %q, want %q", m.ResolvedIPCountryCodes, m.ResolvedIPs, tc.resolved)
			}
		})
	}
}

// TestGeoPolicies: dns.src.geo.country judges the client before
// resolution, dns.dst.geo.country the answer's addresses after it; an
// unknown country matches neither, and without a lookup nothing matches.
func TestGeoPolicies(t *testing.T) {
	up := newTestUpstream(t)
	nl := countryMap{netip.MustParseAddr("127.0.0.1"): "NL", netip.MustParseAddr("198.51.100.7"): "KP"}
	cfg := Config{Upstreams: []string{up.addr}, Policies: []Policy{
		{ID: "nl-no-bad-ip", Expression: `dns.src.geo.country == "NL" and dns.fqdn == "bad-ip.test"`, Action: "block"},
		{ID: "no-kp-answers", Expression: `dns.dst.geo.country in {"KP" "IR"}`, Action: "block"},
	}}
	for _, tc := range []struct {
		name      string
		countries CountryLookup
		qname     string
		policy    string // "": allowed on no match
		decision  string
	}{
		{"client country", nl, "bad-ip.test", "nl-no-bad-ip", decBlockQuery},
		{"answer country", nl, "chain.test", "no-kp-answers", decBlockAnswer},
		{"other client country", countryMap{netip.MustParseAddr("127.0.0.1"): "DE"}, "bad-ip.test", "", decAllowNoMatch},
		{"unknown answer country", countryMap{netip.MustParseAddr("127.0.0.1"): "NL"}, "chain.test", "", decAllowNoMatch},
		{"no lookup", nil, "chain.test", "", decAllowNoMatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			_, addr := startServer(t, cfg, Options{Sink: sink, Countries: tc.countries})
			r := ask(t, addr, "udp", tc.qname, mdns.TypeA)
			blocked := len(r.Answer) == 1 && r.Answer[0].(*mdns.A).A.IsUnspecified()
			if blocked != (tc.policy != "") {
				t.Errorf("answer %v, want blocked=%v", r.Answer, tc.policy != "")
			}
			eventually(t, 5*time.Second, "record", func() bool { return sink.len() == 1 })
			rec := sink.last()
			if v, _ := rec.Get("PolicyID"); v.Str() != tc.policy {
				t.Errorf("PolicyID = %q, want %q", v.Str(), tc.policy)
			}
			if v, _ := rec.Get("ResolverDecision"); v.Str() != tc.decision {
				t.Errorf("ResolverDecision = %q, want %q", v.Str(), tc.decision)
			}
		})
	}
	if !UsesGeo(cfg.Policies[1:]) || !UsesGeo(cfg.Policies[:1]) {
		t.Error("UsesGeo misses a geo field")
	}
	if UsesGeo([]Policy{{ID: "x", Expression: `dns.fqdn in $ads and dns.src == 10.0.0.0/8`, Action: "block"}}) {
		t.Error("UsesGeo: no geo field, yet true")
	}
}
