// Package geo reads GeoIP databases in MaxMind's format (GeoLite2 and
// GeoIP2 Country, City and ASN; DB-IP's mmdb files, which use the same
// field names) into immutable snapshots. A snapshot answers two questions:
// which networks belong to a country or an autonomous system (for the
// firewall, which turns them into nftables interval sets, so no packet is
// looked up in userspace), and which country and AS one address belongs to
// (for flow, access and DNS records).
//
// A database is a file the administrator provides and replaces; [Watcher]
// notices a replaced file and loads it again. Database files are untrusted
// input: each is verified whole before it is used, and a file that does
// not verify is refused with the previous snapshot kept.
package geo

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Files names the databases of a snapshot. Either may be empty; both may
// name the same file (a database that carries both kinds of data).
type Files struct {
	// Country is a database whose records have country.iso_code (or
	// registered_country.iso_code): GeoLite2-Country, GeoLite2-City,
	// DB-IP Country/City Lite.
	Country string
	// ASN is a database whose records have autonomous_system_number:
	// GeoLite2-ASN, DB-IP ASN Lite.
	ASN string
}

// Info is what a snapshot knows of one address. The zero Info means
// nothing: the address is in no database, or there is no database.
type Info struct {
	Country string // ISO 3166-1 alpha-2, upper case; "" unknown
	ASN     uint32 // 0 unknown
	ASOrg   string // the AS's organization, if the database has it
}

// DB is an immutable snapshot of the GeoIP databases, safe for concurrent
// use. The nil *DB is an empty snapshot: every lookup finds nothing.
type DB struct {
	files   Files
	country *maxminddb.Reader
	asn     *maxminddb.Reader

	countries map[string][]netip.Prefix
	asns      map[uint32][]netip.Prefix
	networks  int // networks read, both databases
	skipped   int // networks whose record has no usable value
}

// Load reads the databases f names. A file that cannot be read or does not
// verify as a MaxMind DB is an error naming it.
func Load(f Files) (*DB, error) {
	read := func(path string) ([]byte, error) {
		if path == "" {
			return nil, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("geoip database: %w", err)
		}
		return b, nil
	}
	cb, err := read(f.Country)
	if err != nil {
		return nil, err
	}
	ab := cb
	if f.ASN != f.Country {
		if ab, err = read(f.ASN); err != nil {
			return nil, err
		}
	}
	db, err := parse(cb, ab, f)
	if err != nil {
		return nil, err
	}
	return db, nil
}

// Parse reads a snapshot from database contents held in memory: country
// and asn may be nil (no such data) or the same slice. The slices are kept
// by the snapshot and must not be changed.
func Parse(country, asn []byte) (*DB, error) {
	return parse(country, asn, Files{Country: "<country>", ASN: "<asn>"})
}

func parse(country, asn []byte, f Files) (*DB, error) {
	db := &DB{files: f, countries: map[string][]netip.Prefix{}, asns: map[uint32][]netip.Prefix{}}
	if country != nil {
		r, err := open(country, f.Country)
		if err != nil {
			return nil, err
		}
		db.country = r
		if err := db.readCountries(); err != nil {
			return nil, fmt.Errorf("geoip database %s: %w", f.Country, err)
		}
	}
	if asn != nil {
		r := db.country
		if same := len(country) > 0 && len(asn) > 0 && &asn[0] == &country[0]; !same {
			var err error
			if r, err = open(asn, f.ASN); err != nil {
				return nil, err
			}
		}
		db.asn = r
		if err := db.readASNs(); err != nil {
			return nil, fmt.Errorf("geoip database %s: %w", f.ASN, err)
		}
	}
	return db, nil
}

// open opens and verifies one database: Verify walks the whole search
// tree and data section, so a corrupt or truncated file (one being
// written, say) is refused here rather than half read.
func open(b []byte, name string) (*maxminddb.Reader, error) {
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("geoip database %s: %w", name, err)
	}
	if err := r.Verify(); err != nil {
		return nil, fmt.Errorf("geoip database %s: not a valid MaxMind DB: %w", name, err)
	}
	if err := checkPaths(r, b); err != nil {
		return nil, fmt.Errorf("geoip database %s: not a valid MaxMind DB: %w", name, err)
	}
	return r, nil
}

// countryRecord is the part of a country or city record edgegw reads.
type countryRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	// RegisteredCountry is where the network is registered; GeoLite2
	// has only this for some networks (anycast, satellite providers).
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
}

func (r *countryRecord) code() string {
	if validCountry(r.Country.ISOCode) {
		return r.Country.ISOCode
	}
	if validCountry(r.RegisteredCountry.ISOCode) {
		return r.RegisteredCountry.ISOCode
	}
	return ""
}

// asnRecord is the part of an ASN record edgegw reads.
type asnRecord struct {
	Number uint32 `maxminddb:"autonomous_system_number"`
	Org    string `maxminddb:"autonomous_system_organization"`
}

// validCountry accepts two upper-case ASCII letters, the form of ISO
// 3166-1 alpha-2 codes that rules compare against.
func validCountry(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// errNoData is a database whose records carry none of the data asked for.
var errNoData = errors.New("no record has the data asked for")

func (db *DB) readCountries() error {
	codes := map[uintptr]string{} // records are shared: decode each once
	n := 0
	for res := range db.country.Networks() {
		if err := res.Err(); err != nil {
			return err
		}
		db.networks++
		code, ok := codes[res.Offset()]
		if !ok {
			var rec countryRecord
			if err := res.Decode(&rec); err != nil {
				return fmt.Errorf("network %s: %w", res.Prefix(), err)
			}
			code = rec.code()
			codes[res.Offset()] = code
		}
		if code == "" {
			db.skipped++
			continue
		}
		db.countries[code] = append(db.countries[code], res.Prefix())
		n++
	}
	if n == 0 && db.networks > 0 {
		return fmt.Errorf("%w: country.iso_code (is it a country or city database?)", errNoData)
	}
	return nil
}

func (db *DB) readASNs() error {
	nums := map[uintptr]uint32{}
	n, total := 0, 0
	for res := range db.asn.Networks() {
		if err := res.Err(); err != nil {
			return err
		}
		total++
		num, ok := nums[res.Offset()]
		if !ok {
			var rec asnRecord
			if err := res.Decode(&rec); err != nil {
				return fmt.Errorf("network %s: %w", res.Prefix(), err)
			}
			num = rec.Number
			nums[res.Offset()] = num
		}
		if num == 0 {
			db.skipped++
			continue
		}
		db.asns[num] = append(db.asns[num], res.Prefix())
		n++
	}
	if db.asn != db.country {
		db.networks += total
	}
	if n == 0 && total > 0 {
		return fmt.Errorf("%w: autonomous_system_number (is it an ASN database?)", errNoData)
	}
	return nil
}

// Files returns the files the snapshot was read from.
func (db *DB) Files() Files {
	if db == nil {
		return Files{}
	}
	return db.files
}

// HasCountry reports whether the snapshot has a country database.
func (db *DB) HasCountry() bool { return db != nil && db.country != nil }

// HasASN reports whether the snapshot has an ASN database.
func (db *DB) HasASN() bool { return db != nil && db.asn != nil }

// Countries returns the country codes that have networks, sorted.
func (db *DB) Countries() []string {
	if db == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(db.countries))
}

// CountryNetworks returns the networks of country code (upper case).
// The slice is shared and must not be changed.
func (db *DB) CountryNetworks(code string) []netip.Prefix {
	if db == nil {
		return nil
	}
	return db.countries[code]
}

// ASNs returns the AS numbers that have networks, sorted.
func (db *DB) ASNs() []uint32 {
	if db == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(db.asns))
}

// ASNetworks returns the networks of AS number n. The slice is shared and
// must not be changed.
func (db *DB) ASNetworks(n uint32) []netip.Prefix {
	if db == nil {
		return nil
	}
	return db.asns[n]
}

// Networks returns how many networks the databases hold and how many of
// them carried no usable country or AS number (and are in no set).
func (db *DB) Networks() (total, skipped int) {
	if db == nil {
		return 0, 0
	}
	return db.networks, db.skipped
}

// Lookup returns what the snapshot knows of address a: the fields of
// network_analytics_logs, access_requests and gateway_dns records.
func (db *DB) Lookup(a netip.Addr) Info {
	var info Info
	if db == nil || !a.IsValid() {
		return info
	}
	a = a.Unmap()
	if db.country != nil {
		var rec countryRecord
		if res := db.country.Lookup(a); res.Found() && res.Decode(&rec) == nil {
			info.Country = rec.code()
		}
	}
	if db.asn != nil {
		var rec asnRecord
		if res := db.asn.Lookup(a); res.Found() && res.Decode(&rec) == nil {
			info.ASN, info.ASOrg = rec.Number, rec.Org
		}
	}
	return info
}

// checkSample is how many networks Check decodes looking for the data a
// database must have.
const checkSample = 1000

// Check is the configuration check of one database file, cheap enough for
// every `edgegw check` and reload: the file must open as a MaxMind DB and,
// among its first networks, one must carry a country (country is true) or
// an AS number. The full verification happens when the file is loaded.
func Check(path string, country bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("geoip database: %w", err)
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return fmt.Errorf("%s is not a MaxMind DB (mmdb) file: %w", path, err)
	}
	n := 0
	for res := range r.Networks() {
		if res.Err() != nil || n >= checkSample {
			break
		}
		n++
		if country {
			var rec countryRecord
			if res.Decode(&rec) == nil && rec.code() != "" {
				return nil
			}
		} else {
			var rec asnRecord
			if res.Decode(&rec) == nil && rec.Number != 0 {
				return nil
			}
		}
	}
	if country {
		return fmt.Errorf("%s (%s) has no country.iso_code in its first networks: is it a country or city database?", path, r.Metadata.DatabaseType)
	}
	return fmt.Errorf("%s (%s) has no autonomous_system_number in its first networks: is it an ASN database?", path, r.Metadata.DatabaseType)
}
