// Package rfc2136 is a libdns provider that adds and removes records with
// DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945), the dynamic-update
// protocol BIND, Knot, PowerDNS and Windows DNS all speak. certmagic's
// DNS-01 solver drives it to publish the _acme-challenge TXT records, so
// a gateway gets certificates for names the CA cannot reach over HTTP or
// TLS (internal names, wildcards).
//
// Every update is a single message to the zone's primary over TCP; the
// server's answer is checked (rcode and its TSIG signature) so a refused
// or forged answer is an error, never a silent success.
package rfc2136

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// Algorithms are the TSIG algorithms accepted, by the names BIND's
// tsig-keygen and Knot's keymgr use.
var Algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// DefaultTimeout bounds one update exchange.
const DefaultTimeout = 10 * time.Second

// Provider updates one zone on one server. Its fields are set before first
// use and not changed after; it is then safe for concurrent use.
type Provider struct {
	// Server is the primary's host:port.
	Server string
	// Zone is the zone updated, such as "corp.example." (the trailing dot
	// is optional). Records handed for another zone are refused.
	Zone string
	// KeyName, Algorithm (a key of [Algorithms]) and Secret (base64, as
	// in the key files) are the TSIG key the server accepts updates with.
	KeyName, Algorithm, Secret string
	// Timeout bounds each exchange; default [DefaultTimeout].
	Timeout time.Duration
}

// Check reports a Provider that cannot sign or address an update.
func (p *Provider) Check() error {
	if _, _, err := net.SplitHostPort(p.Server); err != nil {
		return fmt.Errorf("rfc2136 server %q: want host:port: %w", p.Server, err)
	}
	if _, ok := dns.IsDomainName(p.Zone); !ok || p.Zone == "" {
		return fmt.Errorf("rfc2136 zone %q is not a domain name", p.Zone)
	}
	if _, ok := dns.IsDomainName(p.KeyName); !ok || p.KeyName == "" {
		return fmt.Errorf("rfc2136 TSIG key name %q is not a domain name", p.KeyName)
	}
	if _, ok := Algorithms[p.Algorithm]; !ok {
		return fmt.Errorf("rfc2136 TSIG algorithm %q is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", p.Algorithm)
	}
	if b, err := base64.StdEncoding.DecodeString(p.Secret); err != nil || len(b) == 0 {
		return fmt.Errorf("rfc2136 TSIG secret is not base64 (as tsig-keygen and keymgr print it)")
	}
	return nil
}

// AppendRecords adds recs to zone (RFC 2136 "add to an RRset"); adding a
// record that exists already is no error, as the protocol defines.
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rrs, err := p.toRRs(zone, recs)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(p.Zone))
	m.Insert(rrs)
	if err := p.exchange(ctx, m); err != nil {
		return nil, fmt.Errorf("add %d record(s) to %s: %w", len(rrs), p.Zone, err)
	}
	return recs, nil
}

// DeleteRecords removes recs from zone (RFC 2136 "delete an RR from an
// RRset"): only the records with the same name, type and data, so
// concurrent challenges for one name do not remove each other's. A record
// with empty data removes the whole RRset of its name and type.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	rrs, err := p.toRRs(zone, recs)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(p.Zone))
	for i, rr := range rrs {
		if recs[i].RR().Data == "" {
			m.RemoveRRset([]dns.RR{rr})
		} else {
			m.Remove([]dns.RR{rr})
		}
	}
	if err := p.exchange(ctx, m); err != nil {
		return nil, fmt.Errorf("delete %d record(s) from %s: %w", len(rrs), p.Zone, err)
	}
	return recs, nil
}

// exchange signs m, sends it over TCP and checks the signed answer.
func (p *Provider) exchange(ctx context.Context, m *dns.Msg) error {
	key := dns.Fqdn(strings.ToLower(p.KeyName))
	alg, ok := Algorithms[p.Algorithm]
	if !ok {
		return fmt.Errorf("TSIG algorithm %q is not supported", p.Algorithm)
	}
	m.SetTsig(key, alg, 300, time.Now().Unix())
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c := &dns.Client{Net: "tcp", Timeout: timeout, TsigSecret: map[string]string{key: p.Secret}}
	in, _, err := c.ExchangeContext(ctx, m, p.Server)
	if in != nil && in.Rcode != dns.RcodeSuccess {
		// A refusal for a bad key comes back unsigned or badly signed
		// (err is then ErrAuth); its rcode and TSIG error say more.
		return &RcodeError{Server: p.Server, Rcode: in.Rcode, TSIG: tsigError(in)}
	}
	if err != nil {
		// miekg/dns checks the answer's TSIG and fails with ErrAuth or
		// ErrTime on a forged or stale one: the update is then not
		// trusted to have happened.
		return fmt.Errorf("DNS UPDATE to %s: %w", p.Server, err)
	}
	return nil
}

// tsigError is the TSIG error of an answer's signature (BADKEY, BADSIG,
// BADTIME), 0 when there is none.
func tsigError(in *dns.Msg) uint16 {
	if t := in.IsTsig(); t != nil {
		return t.Error
	}
	return 0
}

// RcodeError is a server's refusal of an update.
type RcodeError struct {
	Server string
	Rcode  int
	TSIG   uint16 // the TSIG error, such as dns.RcodeBadKey; 0: none
}

func (e *RcodeError) Error() string {
	s := fmt.Sprintf("DNS UPDATE to %s refused: %s", e.Server, dns.RcodeToString[e.Rcode])
	if e.TSIG != 0 {
		s += fmt.Sprintf(" (TSIG %s: check the key name, algorithm and secret)", dns.RcodeToString[int(e.TSIG)])
	} else if e.Rcode == dns.RcodeRefused || e.Rcode == dns.RcodeNotAuth {
		s += " (is this key allowed to update the zone?)"
	}
	return s
}

// ErrOtherZone is returned for a record outside the Provider's zone.
var ErrOtherZone = errors.New("outside the configured zone")

// toRRs turns recs, named relative to zone, into RRs of the Provider's
// zone.
func (p *Provider) toRRs(zone string, recs []libdns.Record) ([]dns.RR, error) {
	own := dns.Fqdn(strings.ToLower(p.Zone))
	out := make([]dns.RR, 0, len(recs))
	for _, rec := range recs {
		r := rec.RR()
		name := dns.Fqdn(strings.ToLower(libdns.AbsoluteName(r.Name, dns.Fqdn(zone))))
		if !dns.IsSubDomain(own, name) {
			return nil, fmt.Errorf("record %s: %w %s", name, ErrOtherZone, own)
		}
		ttl := uint32(r.TTL / time.Second)
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: ttl}
		var rr dns.RR
		switch strings.ToUpper(r.Type) {
		case "TXT":
			hdr.Rrtype = dns.TypeTXT
			rr = &dns.TXT{Hdr: hdr, Txt: splitTXT(r.Data)}
		default:
			var err error
			rr, err = dns.NewRR(fmt.Sprintf("%s %d IN %s %s", name, ttl, r.Type, r.Data))
			if err != nil || rr == nil {
				return nil, fmt.Errorf("record %s %s %q: %w", name, r.Type, r.Data, err)
			}
		}
		out = append(out, rr)
	}
	return out, nil
}

// splitTXT cuts s into the 255-byte character-strings a TXT record holds.
func splitTXT(s string) []string {
	if s == "" {
		return nil
	}
	var parts []string
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}
