package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/rules"
)

// GeoIP conditions
//
// A condition on ip.src.country, ip.dst.country, ip.src.asnum or
// ip.dst.asnum becomes a lookup of the source or destination address in
// two interval sets (g4_<k>, g6_<k>) that hold the networks of the
// database for which the condition holds: for `ip.src.country in {"KP"
// "IR"}` the networks of KP and IR, for `ip.dst.asnum != 64512` those of
// every other AS the database knows. So the kernel matches in its
// interval sets, and no packet is looked up in userspace. An address the
// database does not hold is in no set: the field is absent and the
// condition false, as package rules defines ("not" of it is true).
// [Table.UpdateGeo] changes the sets in place when the database changes,
// without touching rules or counters; [Table.Apply] fills them from the
// last snapshot.

// GeoIP is `firewall.geoip`: the MaxMind-format databases behind the geo
// fields of rules. Either may be left out; a rule on a field whose
// database is missing is refused.
type GeoIP struct {
	// Country is a country or city database (GeoLite2-Country,
	// GeoLite2-City, DB-IP Country Lite), for ip.src.country and
	// ip.dst.country.
	Country string `yaml:"country" file:"read"`
	// ASN is an ASN database (GeoLite2-ASN, DB-IP ASN Lite), for
	// ip.src.asnum and ip.dst.asnum. It may be the same file as Country.
	ASN string `yaml:"asn" file:"read"`
}

// Files returns the databases as package geo names them; nil g has none.
func (g *GeoIP) Files() geo.Files {
	if g == nil {
		return geo.Files{}
	}
	return geo.Files{Country: g.Country, ASN: g.ASN}
}

// Validate checks that the section names at least one database.
func (g *GeoIP) Validate(report func(field, msg string)) {
	if g.Country == "" && g.ASN == "" {
		report("", "names no database: set country (a GeoLite2-Country or DB-IP country mmdb file) and/or asn")
	}
}

// CheckFiles checks, for the configuration check, that each database
// opens and carries the data it is named for (a missing or unreadable
// file has been reported already).
func (g *GeoIP) CheckFiles(report func(field, msg string)) {
	for _, f := range []struct {
		field, path string
		country     bool
	}{{"country", g.Country, true}, {"asn", g.ASN, false}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			continue // reported by the file check
		}
		if err := geo.Check(f.path, f.country); err != nil {
			report(f.field, err.Error())
		}
	}
}

func geoSetName(k int, v4 bool) string {
	if v4 {
		return fmt.Sprintf("g4_%d", k)
	}
	return fmt.Sprintf("g6_%d", k)
}

// geoRef returns the field reference of a condition.
func geoRef(e rules.Expr) *rules.FieldRef {
	switch e := e.(type) {
	case *rules.BoolField:
		return &e.FieldRef
	case *rules.Compare:
		return &e.FieldRef
	case *rules.InSet:
		return &e.FieldRef
	case *rules.InList:
		return &e.FieldRef
	case *rules.Contains:
		return &e.FieldRef
	}
	return nil
}

// geo compiles a condition on a geo field to a lookup of the address it
// describes in the condition's sets, or refuses it when the database it
// needs is not configured.
func (rc *ruleCompiler) geo(ref *rules.FieldRef, e rules.Expr) ([]alt, error) {
	addr, country, _ := rules.GeoField(ref.Field.Name)
	g := rc.c.geoip
	switch {
	case country && (g == nil || g.Country == ""):
		return nil, &errUnsupported{pos: ref.FieldPos, msg: fmt.Sprintf(
			"%s needs a country database: set firewall.geoip.country to a MaxMind-format file (GeoLite2-Country, GeoLite2-City or DB-IP Country Lite)", ref.Field.Name)}
	case !country && (g == nil || g.ASN == ""):
		return nil, &errUnsupported{pos: ref.FieldPos, msg: fmt.Sprintf(
			"%s needs an ASN database: set firewall.geoip.asn to a MaxMind-format file (GeoLite2-ASN or DB-IP ASN Lite)", ref.Field.Name)}
	}
	k, ok := rc.c.geoPreds[e.String()]
	if !ok {
		k = len(rc.c.geoList)
		rc.c.geoPreds[e.String()] = k
		rc.c.geoList = append(rc.c.geoList, e)
	}
	return []alt{
		{nfproto: nfIPv4, l4proto: -1, ms: []match{{ld: addrLoad(addr, true), set: geoSetName(k, true)}}},
		{nfproto: nfIPv6, l4proto: -1, ms: []match{{ld: addrLoad(addr, false), set: geoSetName(k, false)}}},
	}, nil
}

// geoSets returns the sets of the geo conditions the rules use, empty:
// Table.Apply and Table.UpdateGeo fill them.
func (c *compiler) geoSets() []Set {
	var out []Set
	for k, e := range c.geoList {
		for _, v6 := range []bool{false, true} {
			out = append(out, Set{
				Name: geoSetName(k, !v6), Key: addrKey(v6), Interval: true, V6: v6,
				Geo: &rules.Program{Expr: e, Source: e.String(), Schema: rules.FirewallSchema()},
			})
		}
	}
	return out
}

// geoIntervals returns the contents of geo set s from db: the networks of
// the family of s whose country or AS number satisfies the set's
// condition. Each country or AS is evaluated once.
func geoIntervals(s *Set, db *geo.DB) []interval {
	ref := geoRef(s.Geo.Expr)
	if ref == nil || db == nil {
		return nil
	}
	name := ref.Field.Name
	_, country, _ := rules.GeoField(name)
	rec := rules.NewRecord(rules.FirewallSchema())
	var ps []netip.Prefix
	add := func(nets []netip.Prefix) {
		for _, p := range nets {
			if p.Addr().Is6() == s.V6 {
				ps = append(ps, p)
			}
		}
	}
	if country {
		for _, c := range db.Countries() {
			rec.Reset()
			_ = rec.Set(name, rules.StringValue(c))
			if s.Geo.Eval(rec) {
				add(db.CountryNetworks(c))
			}
		}
	} else {
		for _, n := range db.ASNs() {
			rec.Reset()
			_ = rec.Set(name, rules.IntValue(uint64(n)))
			if s.Geo.Eval(rec) {
				add(db.ASNetworks(n))
			}
		}
	}
	v4s, v6s := prefixIntervals(ps)
	if s.V6 {
		return v6s
	}
	return v4s
}

// UpdateGeo replaces the GeoIP snapshot and updates every geo set of the
// applied table in place, in one batch that deletes and adds only the
// intervals that differ: rules and their counters are untouched, and a
// packet sees either the old sets or the new ones. Apply uses the last
// snapshot; nil empties the sets.
func (t *Table) UpdateGeo(db *geo.DB) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("firewall: table is closed")
	}
	t.geo = db
	if t.applied == nil {
		return nil
	}
	var sets []*Set
	want := map[string][]interval{}
	for i := range t.applied.Sets {
		if s := &t.applied.Sets[i]; s.Geo != nil {
			sets = append(sets, s)
			want[s.Name] = geoIntervals(s, db)
		}
	}
	return t.updateSets(sets, want)
}

// GeoSetSizes returns the number of intervals in each geo set of the
// applied table, by set name: what the kernel holds for the geo fields.
func (t *Table) GeoSetSizes() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int{}
	if t.applied == nil {
		return out
	}
	for _, s := range t.applied.Sets {
		if s.Geo != nil {
			out[s.Name] = len(t.setState[s.Name])
		}
	}
	return out
}
