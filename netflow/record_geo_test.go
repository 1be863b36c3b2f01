package netflow

import (
	"net/netip"
	"testing"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/geo/geotest"
)

// TestHandlePlaces: with GeoIP databases the record carries the source's
// and destination's country and AS under Cloudflare's names, leaves out
// what the databases do not know, and follows a swapped snapshot.
func TestHandlePlaces(t *testing.T) {
	build := func(entries ...geotest.Entry) *geo.DB {
		t.Helper()
		b, err := geotest.Build(entries)
		if err != nil {
			t.Fatal(err)
		}
		db, err := geo.Parse(b, b)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	places := &fixedPlaces{db: build(
		geotest.Entry{Prefix: netip.MustParsePrefix("10.0.0.1/32"), Country: "KP", ASN: 64512, Org: "Example Net"},
		geotest.Entry{Prefix: netip.MustParsePrefix("10.0.0.2/32"), Country: "DE"},
	)}
	sink := &recordSink{}
	s, err := New(Options{Group: 7, Sink: sink, Places: places})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(Rules{RulesetID: "rs1", RuleIDs: []string{"r1"}})
	if err := s.Handle(Sample{Prefix: "ef/1/b", Payload: unhex(t, v4SYN)}); err != nil { // 10.0.0.1 → 10.0.0.2
		t.Fatal(err)
	}
	places.db = build(geotest.Entry{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Country: "GB", ASN: 64999})
	if err := s.Handle(Sample{Prefix: "ef/1/b", Payload: unhex(t, v4SYN)}); err != nil {
		t.Fatal(err)
	}
	s2, err := New(Options{Group: 7, Sink: sink}) // no databases
	if err != nil {
		t.Fatal(err)
	}
	s2.SetRules(Rules{RulesetID: "rs1", RuleIDs: []string{"r1"}})
	if err := s2.Handle(Sample{Prefix: "ef/1/b", Payload: unhex(t, v4SYN)}); err != nil {
		t.Fatal(err)
	}
	recs := sink.records()
	for i, tc := range []struct {
		want    map[string]any
		without []string
	}{
		{map[string]any{"SourceCountry": "KP", "SourceASN": float64(64512), "SourceASNName": "Example Net", "DestinationCountry": "DE"},
			[]string{"DestinationASN", "DestinationASNName"}},
		{map[string]any{"SourceCountry": "GB", "SourceASN": float64(64999), "DestinationCountry": "GB", "DestinationASN": float64(64999)},
			[]string{"SourceASNName", "DestinationASNName"}},
		{nil, []string{"SourceCountry", "DestinationCountry", "SourceASN", "DestinationASN", "SourceASNName", "DestinationASNName"}},
	} {
		m := recordMap(t, recs[i])
		for k, want := range tc.want {
			if m[k] != want {
				t.Errorf("record %d: %s = %v, want %v", i, k, m[k], want)
			}
		}
		for _, k := range tc.without {
			if _, ok := m[k]; ok {
				t.Errorf("record %d: %s present: %v", i, k, m[k])
			}
		}
		checkCatalogue(t, recs[i])
	}
}

// fixedPlaces is a Places over one snapshot the test swaps between
// Handle calls (Handle and the swap never run at once).
type fixedPlaces struct{ db *geo.DB }

func (f *fixedPlaces) Lookup(a netip.Addr) geo.Info { return f.db.Lookup(a) }
