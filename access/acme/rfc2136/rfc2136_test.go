package rfc2136_test

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/access/acme/acmetest"
	"github.com/edgegw/edgegw/access/acme/rfc2136"
)

func provider(k *acmetest.Knot) *rfc2136.Provider {
	return &rfc2136.Provider{Server: k.Addr, Zone: k.Zone, KeyName: k.KeyName, Algorithm: k.Algorithm, Secret: k.Secret, Timeout: 5 * time.Second}
}

func txt(name, data string) libdns.Record {
	return libdns.RR{Name: name, Type: "TXT", Data: data, TTL: time.Minute}
}

// TestAppendDeleteAgainstKnot: TXT records added by a signed DNS UPDATE
// appear on a real knotd, two values on one name coexist (two challenges
// for example.test and *.example.test), deleting one leaves the other,
// and a long value (over 255 bytes) survives as one record.
func TestAppendDeleteAgainstKnot(t *testing.T) {
	k := acmetest.StartKnot(t, nil, "example.test")
	p := provider(k)
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const name = "_acme-challenge.app.example.test."
	long := strings.Repeat("x", 300)
	for _, v := range []string{"token-one", "token-two", long} {
		if _, err := p.AppendRecords(ctx, "example.test.", []libdns.Record{txt("_acme-challenge.app", v)}); err != nil {
			t.Fatalf("append %q: %v", v[:min(len(v), 12)], err)
		}
	}
	got, err := k.TXT(name)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"token-one", "token-two", long}; !slices.Equal(got, want) {
		t.Fatalf("TXT after the appends = %q, want %q", got, want)
	}
	if _, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{txt("_acme-challenge.app", "token-one")}); err != nil {
		t.Fatal(err)
	}
	got, _ = k.TXT(name)
	slices.Sort(got)
	if want := []string{"token-two", long}; !slices.Equal(got, want) {
		t.Fatalf("TXT after deleting one = %q, want %q", got, want)
	}
	// Empty data removes the name's whole TXT RRset.
	if _, err := p.DeleteRecords(ctx, "example.test.", []libdns.Record{txt("_acme-challenge.app", "")}); err != nil {
		t.Fatal(err)
	}
	if got, _ = k.TXT(name); len(got) != 0 {
		t.Fatalf("TXT after deleting the RRset = %q, want none", got)
	}
	// A name relative to a zone found below the configured one (a
	// resolver that reports a delegated sub-zone) lands at the same name.
	if _, err := p.AppendRecords(ctx, "app.example.test", []libdns.Record{txt("_acme-challenge", "sub")}); err != nil {
		t.Fatal(err)
	}
	if got, _ = k.TXT(name); !slices.Equal(got, []string{"sub"}) {
		t.Fatalf("TXT = %q, want [sub]", got)
	}
}

// TestRefusals: a wrong secret, an unknown key and a record outside the
// zone are errors that say why, and change nothing on the server.
func TestRefusals(t *testing.T) {
	k := acmetest.StartKnot(t, nil, "example.test")
	ctx := t.Context()
	const name = "_acme-challenge.app.example.test."

	wrongSecret := provider(k)
	wrongSecret.Secret = base64.StdEncoding.EncodeToString([]byte("not the secret knotd has for it"))
	unknownKey := provider(k)
	unknownKey.KeyName = "someone-else"
	for _, tc := range []struct {
		name string
		p    *rfc2136.Provider
		want string
	}{
		{"wrong secret", wrongSecret, "TSIG BADSIG"},
		{"unknown key", unknownKey, "TSIG BADKEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.AppendRecords(ctx, "example.test.", []libdns.Record{txt("_acme-challenge.app", "forged")})
			var rc *rfc2136.RcodeError
			if !errors.As(err, &rc) || rc.Rcode != dns.RcodeNotAuth || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want NOTAUTH with %q", err, tc.want)
			}
		})
	}
	_, err := provider(k).AppendRecords(ctx, "other.test.", []libdns.Record{txt("_acme-challenge", "x")})
	if !errors.Is(err, rfc2136.ErrOtherZone) {
		t.Fatalf("a record outside the zone: err = %v, want ErrOtherZone", err)
	}
	if got, err := k.TXT(name); err != nil || len(got) != 0 {
		t.Fatalf("after the refusals TXT = %q (%v), want none", got, err)
	}
}

func TestCheck(t *testing.T) {
	good := rfc2136.Provider{Server: "192.0.2.53:53", Zone: "corp.example", KeyName: "k", Algorithm: "hmac-sha256", Secret: "c2VjcmV0"}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*rfc2136.Provider)
		want string
	}{
		{"no port", func(p *rfc2136.Provider) { p.Server = "192.0.2.53" }, "want host:port"},
		{"bad zone", func(p *rfc2136.Provider) { p.Zone = "" }, "zone"},
		{"bad algorithm", func(p *rfc2136.Provider) { p.Algorithm = "hmac-md5" }, "not one of"},
		{"bad secret", func(p *rfc2136.Provider) { p.Secret = "%%%" }, "not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good
			tc.edit(&p)
			if err := p.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
