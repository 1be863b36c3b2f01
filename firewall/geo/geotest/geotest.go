// Package geotest builds small GeoIP databases in MaxMind's format for
// tests and benchmarks, with github.com/maxmind/mmdbwriter. Each record
// carries a country (country.iso_code and registered_country.iso_code)
// and an AS (autonomous_system_number and _organization), so one file
// serves as both the country and the ASN database.
package geotest

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Entry is one network of a test database. An empty Country or a zero ASN
// leaves that data out of the record.
type Entry struct {
	Prefix  netip.Prefix
	Country string
	ASN     uint32
	Org     string
}

// Build returns the contents of an IPv6 database (IPv4 networks in its
// IPv4 subtree, as GeoLite2 has them) holding entries. Reserved and
// documentation ranges are allowed, so tests can use 192.0.2.0/24 and the
// like.
func Build(entries []Entry) ([]byte, error) {
	t, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "edgegw-test",
		Description:             map[string]string{"en": "edgegw test database"},
		Languages:               []string{"en"},
		IncludeReservedNetworks: true,
		IPVersion:               6,
		RecordSize:              28,
	})
	if err != nil {
		return nil, fmt.Errorf("geotest: %w", err)
	}
	for _, e := range entries {
		rec := mmdbtype.Map{}
		if e.Country != "" {
			c := mmdbtype.Map{"iso_code": mmdbtype.String(e.Country)}
			rec["country"], rec["registered_country"] = c, c
		}
		if e.ASN != 0 {
			rec["autonomous_system_number"] = mmdbtype.Uint32(e.ASN)
			if e.Org != "" {
				rec["autonomous_system_organization"] = mmdbtype.String(e.Org)
			}
		}
		p := e.Prefix.Masked()
		n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := t.Insert(n, rec); err != nil {
			return nil, fmt.Errorf("geotest: insert %s: %w", p, err)
		}
	}
	var buf bytes.Buffer
	if _, err := t.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("geotest: write: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteFile builds a database of entries and puts it at path the way
// database updaters do: written to a temporary file in the same directory,
// then renamed over path.
func WriteFile(path string, entries []Entry) error {
	b, err := Build(entries)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".geotest-*")
	if err != nil {
		return fmt.Errorf("geotest: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("geotest: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("geotest: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("geotest: %w", err)
	}
	return nil
}
