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
